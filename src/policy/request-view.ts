/** What routing (and a picker) sees of a request; no imports, so both sides of the model can name it. */
/** The parts of a request that routing looks at, built once per request by the listener. */
export interface RequestView {
  /** Upper-case method. */
  method: string;
  /** The path without the query string, e.g. `/api/items`. */
  path: string;
  /** The raw query string without `?`, or '' when there is none. */
  query: string;
  /** Host or :authority as the client sent it, lower-cased, possibly with a port. */
  authority: string;
  /** A request header by lower-case name; repeated headers joined with ', '. */
  header(name: string): string | undefined;
}
