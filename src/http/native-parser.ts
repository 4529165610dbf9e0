/**
 * Node's native HTTP/1.1 parser (llhttp), the binding node:http itself is built on, typed for
 * what the sidecar's own HTTP/1.1 server and client call. `_http_common` has exported it since
 * Node 0.x; the callbacks are indexed slots (kOnHeadersComplete, ...), as in node:http.
 */
export interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  free(): void;
  remove(): void;
  [k: number]: unknown;
}

interface ParserModule {
  HTTPParser: {
    new (): NativeParser;
    REQUEST: number;
    RESPONSE: number;
    kOnHeaders: number;
    kOnHeadersComplete: number;
    kOnBody: number;
    kOnMessageComplete: number;
    kLenientNone: number;
  };
  /** Method names by llhttp's method index. */
  methods: string[];
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const mod = require('_http_common') as ParserModule;

export const HTTPParser = mod.HTTPParser;
export const METHODS: readonly string[] = mod.methods;
