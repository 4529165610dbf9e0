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
  close(): void;
  /** The message being parsed has its complete head (false between a message's start and its head's end). */
  headersCompleted(): boolean;
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

/**
 * Releases a parser whose connection is gone. The native parser holds a strong handle to its JS
 * object (and so to every callback and connection it reaches) until `close()` deletes it; `free()`
 * alone is for parsers kept in a pool. As in node:http (`freeParser`), callbacks are dropped at
 * once and `close()` runs once the stack has unwound (the parser may be mid-`execute`).
 */
export function releaseParser(parser: NativeParser): void {
  for (const k of [HTTPParser.kOnHeaders, HTTPParser.kOnHeadersComplete, HTTPParser.kOnBody, HTTPParser.kOnMessageComplete]) parser[k] = null;
  try {
    parser.remove();
  } catch {
    // not in a connections list
  }
  setImmediate(closeParser, parser);
}

function closeParser(parser: NativeParser): void {
  try {
    parser.close();
  } catch {
    // closed already
  }
}

/**
 * Whether the parser hands body chunks over as copies (Node 20's llhttp binding does:
 * `Buffer::Copy` in `on_body`) rather than views of the buffer being parsed. Probed once: a chunk
 * may be kept (a request body queued in a Readable) after the bytes it came from are overwritten
 * by the next read into a shared read buffer, so a view has to be copied first.
 */
export const BODY_IS_COPY: boolean = (() => {
  try {
    const p = new HTTPParser();
    p.initialize(HTTPParser.REQUEST, {}, 1024, HTTPParser.kLenientNone);
    let chunk: Buffer | undefined;
    p[HTTPParser.kOnHeadersComplete] = () => 0;
    p[HTTPParser.kOnBody] = (c: Buffer) => {
      chunk = c;
    };
    const input = Buffer.from('POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n\r\nx', 'latin1');
    p.execute(input);
    p.close();
    return chunk !== undefined && chunk.buffer !== input.buffer && chunk[0] === 0x78;
  } catch {
    return false;
  }
})();
