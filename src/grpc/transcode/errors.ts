/** The transcoder's request error, in its own file so that the request path can test for it without loading protobufjs. */

/** A request that does not fit the method's JSON mapping: a 400 naming the field. */
export class JsonMappingError extends Error {
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(path ? `${path}: ${reason}` : reason);
    this.name = 'JsonMappingError';
  }
}
