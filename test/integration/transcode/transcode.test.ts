/**
 * HTTP/JSON -> gRPC transcoding end to end: plain HTTP/1.1 clients -> sidecar A's outbound
 * listener (GrpcTranscoding, protos embedded from `file:` by `--config`) -> h2c gRPC -> sidecar
 * B's inbound listener -> a real @grpc/grpc-js server implementing test/fixtures/transcode/library.proto.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { closedPort, HOST, request, route, service, startSidecar, type Res } from '../sidecar/helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'transcode');
const PKG = 'meshlet.test.library.v1';

type Call = { path: string; request: Record<string, unknown>; metadata: Record<string, unknown> };

async function startLibrary(t: Test, calls: Call[]): Promise<number> {
  const def = protoLoader.loadSync(path.join(FIXTURES, 'library.proto'), {
    includeDirs: [FIXTURES, path.join(ROOT, 'src', 'proto'), path.join(ROOT, 'node_modules', 'protobufjs')],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { meshlet: { test: { library: { v1: { Library: grpc.ServiceClientConstructor } } } } };
  const server = new grpc.Server();
  const record = (name: string, call: { request?: unknown; metadata: grpc.Metadata }) =>
    calls.push({ path: `/${PKG}.Library/${name}`, request: call.request as Record<string, unknown>, metadata: call.metadata.getMap() });
  const book = (name: string) => ({ name, title: `Title of ${name}`, isbn: '9780000000001', genre: 'FICTION', published: { seconds: '1706702400', nanos: 500_000_000 }, tags: ['a', 'b'], labels: { k: 'v' }, page_count: '18446744073709551615' });
  server.addService(pkg.meshlet.test.library.v1.Library.service, {
    GetBook(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('GetBook', call);
      const name = String(call.request.name ?? '');
      if (name.endsWith('/missing')) return cb({ code: grpc.status.NOT_FOUND, details: `book ${name} not found` });
      if (name.endsWith('/slow')) return cb({ code: grpc.status.DEADLINE_EXCEEDED, details: 'too slow' });
      const md = new grpc.Metadata();
      md.set('x-library-version', '7');
      cb(null, book(name || `id:${call.request.book_id}`), md);
    },
    CreateBook(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('CreateBook', call);
      cb(null, { ...call.request.book, name: `${call.request.parent}/books/new` });
    },
    UpdateBook(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('UpdateBook', call);
      cb(null, call.request.book);
    },
    ListBooks(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('ListBooks', call);
      cb(null, { books: [book(`${call.request.parent}/books/1`)], next_page_token: 'next' });
    },
    DeleteBook(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('DeleteBook', call);
      cb(null, {});
    },
    SearchBooks(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('SearchBooks', call);
      cb(null, { books: [], next_page_token: String(call.request.query) });
    },
    WatchBooks(call: grpc.ServerWritableStream<any, any>) {
      record('WatchBooks', call);
      const n = Number(call.request.page_size ?? 3);
      for (let i = 0; i < n; i++) call.write({ name: `${call.request.parent}/books/${i}` });
      if (call.request.desc) call.emit('error', { code: grpc.status.INTERNAL, details: 'broke mid-stream' });
      else call.end();
    },
    Echo(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('Echo', call);
      cb(null, call.request);
    },
    Upload(_call: grpc.ServerReadableStream<any, any>, cb: grpc.sendUnaryData<any>) {
      cb(null, {});
    },
    GetShelf(call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) {
      record('GetShelf', call);
      cb(null, { shelf: { id: call.request.id, theme: 'sea' }, etag: 'e1' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${HOST}:0`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  t.teardown(() => new Promise<void>((r) => server.tryShutdown(() => r())));
  return port;
}

t.test('HTTP/JSON -> gRPC through two sidecars', async (t) => {
  const calls: Call[] = [];
  const appPort = await startLibrary(t, calls);
  // B: the gRPC service's own sidecar; its inbound listener speaks h2c to the app.
  const b = await startSidecar(t, [service('unused', [{ port: 1 }])], { service: 'library', appPort, args: ['--app-protocol', 'http2'] });
  const a = await startSidecar(t, [
    service('library', [{ port: b.inbound }], 'http2'),
    route('library', ['library'], [{ name: 'api', backends: [{ service: 'library' }], requestHeaders: { set: { 'x-via-route': 'library' } } }]),
    {
      apiVersion: 'meshlet.dev/v1',
      kind: 'GrpcTranscoding',
      metadata: { name: 'library' },
      spec: {
        service: 'library',
        protos: [{ file: path.join(FIXTURES, 'library.proto') }, { file: path.join(FIXTURES, 'shelf.proto') }],
        services: [`${PKG}.Library`],
      },
    },
  ]);
  const call = (method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Res> => {
    const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const framing = text === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) };
    return request({ port: a.outbound, method, path: p, headers: { host: 'library', ...framing, ...headers }, body: text });
  };
  const last = () => calls[calls.length - 1] as Call;

  t.test('GET with a multi-segment path variable; int64 and uint64 as strings, enums by name, Timestamp as RFC 3339', async (t) => {
    const r = await call('GET', '/v1/shelves/s1/books/b%20one');
    t.equal(r.status, 200, r.text);
    t.match(r.headers['content-type'], /^application\/json/);
    t.equal(r.headers['x-library-version'], '7', 'response metadata becomes a header');
    t.same(r.json(), {
      name: 'shelves/s1/books/b one',
      title: 'Title of shelves/s1/books/b one',
      isbn: '9780000000001',
      genre: 'FICTION',
      published: '2024-01-31T12:00:00.500Z',
      tags: ['a', 'b'],
      labels: { k: 'v' },
      pageCount: '18446744073709551615',
    });
    t.equal(last().path, `/${PKG}.Library/GetBook`);
    t.equal(last().metadata['x-via-route'], 'library', 'request headers (after route edits) travel as metadata');
  });

  t.test('additional_bindings: a single-segment variable into an int64 field, and "**"', async (t) => {
    const r = await call('GET', '/v1/books/42');
    t.equal(r.status, 200, r.text);
    t.equal(r.json().name, 'id:42');
    t.equal(last().request.book_id, '42');
    const r2 = await call('GET', '/v1/archive/x/y/z');
    t.equal(r2.status, 200, r2.text);
    t.equal(r2.json().name, 'x/y/z');
  });

  t.test('POST with a named body field; the rest from the path', async (t) => {
    const r = await call('POST', '/v1/shelves/s9/books', { title: 'New', isbn: 12, genre: 'SCIENCE', writer: 'Ann', readTime: '90s', rating: 4, extra: { a: [1, 'x', null], b: { c: true } }, cover: 'AQID' });
    t.equal(r.status, 200, r.text);
    t.same(r.json(), { name: 'shelves/s9/books/new', title: 'New', isbn: '12', genre: 'SCIENCE', writer: 'Ann', readTime: '90s', rating: 4, extra: { a: [1, 'x', null], b: { c: true } }, cover: 'AQID' });
    t.equal(last().request.parent, 'shelves/s9');
  });

  t.test('PATCH with a nested path field (book.name), body field, FieldMask from the query', async (t) => {
    const r = await call('PATCH', '/v1/shelves/s1/books/b2?updateMask=title,readTime', { title: 'Renamed', author_name: 'Original name accepted' });
    t.equal(r.status, 200, r.text);
    t.same(r.json(), { name: 'shelves/s1/books/b2', title: 'Renamed', writer: 'Original name accepted' });
    t.same(last().request.update_mask, { paths: ['title', 'read_time'] });
  });

  t.test('GET with query parameters: scalars, repeated, enum, nested message field, wrapper, camelCase or original names', async (t) => {
    const r = await call('GET', '/v1/shelves/s1/books?pageSize=5&tags=x&tags=y&genre=SCIENCE&page.token=tok&in_print=true&minIsbn=9007199254740993');
    t.equal(r.status, 200, r.text);
    t.equal(r.json().nextPageToken, 'next');
    t.same(last().request, { parent: 'shelves/s1', page_size: 5, tags: ['x', 'y'], genre: 'SCIENCE', page: { token: 'tok' }, in_print: { value: true }, min_isbn: '9007199254740993' });
  });

  t.test('DELETE answering google.protobuf.Empty', async (t) => {
    const r = await call('DELETE', '/v1/shelves/s1/books/b2');
    t.equal(r.status, 200, r.text);
    t.same(r.json(), {});
  });

  t.test('body "*" and a custom verb', async (t) => {
    const r = await call('POST', '/v1/books:search', { query: 'whales', genres: ['FICTION', 2], since: '2020-01-01T00:00:00+01:00' });
    t.equal(r.status, 200, r.text);
    t.same(r.json(), { nextPageToken: 'whales' }, 'an empty repeated field is omitted, as proto3 JSON does');
    t.equal((last().request.since as { seconds: string }).seconds, String(Date.UTC(2019, 11, 31, 23) / 1000), 'the offset is applied');
    t.same(last().request.genres, ['FICTION', 'SCIENCE']);
  });

  t.test('an unannotated method at POST /pkg.Service/Method', async (t) => {
    const r = await call('POST', `/${PKG}.Library/Echo`, { name: 'e', ebookUrl: 'http://x', weight: 1.5, inPrint: true, anything: { deep: [1] }, list: [true, 'x'], subtitle: 'sub' });
    t.equal(r.status, 200, r.text);
    t.same(r.json(), { name: 'e', ebookUrl: 'http://x', weight: 1.5, inPrint: true, anything: { deep: [1] }, list: [true, 'x'], subtitle: 'sub' });
  });

  t.test('response_body and a message from an imported proto', async (t) => {
    const r = await call('GET', '/v1/shelves/7');
    t.equal(r.status, 200, r.text);
    t.same(r.json(), { id: '7', theme: 'sea' });
  });

  t.test('server streaming: a JSON array, or NDJSON on request', async (t) => {
    const r = await call('GET', '/v1/shelves/s1/books:watch?pageSize=3');
    t.equal(r.status, 200, r.text);
    t.match(r.headers['content-type'], /^application\/json/);
    t.same(r.json(), [{ name: 'shelves/s1/books/0' }, { name: 'shelves/s1/books/1' }, { name: 'shelves/s1/books/2' }]);
    const n = await call('GET', '/v1/shelves/s1/books:watch?pageSize=2', undefined, { accept: 'application/x-ndjson' });
    t.equal(n.status, 200);
    t.match(n.headers['content-type'], /^application\/x-ndjson/);
    t.same(n.text.trim().split('\n').map((l) => JSON.parse(l)), [{ name: 'shelves/s1/books/0' }, { name: 'shelves/s1/books/1' }]);
    const e = await call('GET', '/v1/shelves/s1/books:watch?pageSize=1&desc=true', undefined, { accept: 'application/x-ndjson' });
    const lines = e.text.trim().split('\n').map((l) => JSON.parse(l));
    t.same(lines, [{ name: 'shelves/s1/books/0' }, { error: { code: 13, status: 'INTERNAL', message: 'broke mid-stream' } }], 'a stream that fails after it started ends with an error line');
    const empty = await call('GET', '/v1/shelves/s1/books:watch?pageSize=0');
    t.same(empty.json(), []);
  });

  t.test('gRPC statuses become HTTP statuses with a JSON body', async (t) => {
    const r = await call('GET', '/v1/shelves/s1/books/missing');
    t.equal(r.status, 404);
    t.same(r.json(), { code: 5, status: 'NOT_FOUND', message: 'book shelves/s1/books/missing not found', details: [] });
    t.notOk(r.headers['x-meshlet-flags'], 'the app said so, not the mesh');
    const s = await call('GET', '/v1/shelves/s1/books/slow');
    t.equal(s.status, 504);
    t.equal(s.json().status, 'DEADLINE_EXCEEDED');
  });

  t.test('bad input: 400 with a clear message, and the upstream is never called', async (t) => {
    const before = calls.length;
    const cases: [string, string, string | object, RegExp][] = [
      ['POST', '/v1/shelves/s1/books', '{"title": ', /malformed JSON body/],
      ['POST', '/v1/shelves/s1/books', { title: 'x', colour: 'red' }, /colour: unknown field/],
      ['POST', '/v1/shelves/s1/books', { isbn: 'abc' }, /isbn: expected an integer/],
      ['POST', '/v1/shelves/s1/books', { genre: 'POETRY' }, /genre: unknown value "POETRY" for enum/],
      ['POST', '/v1/shelves/s1/books', { published: 'yesterday' }, /published: expected an RFC 3339 timestamp/],
      ['POST', '/v1/shelves/s1/books', { ebookUrl: 'u', paperPages: 3 }, /only one of oneof format/],
      ['POST', '/v1/shelves/s1/books', { isbn: 12345678901234567890 }, /send 64-bit integers as strings/],
      ['POST', '/v1/books:search', [1, 2], /the body must be a JSON object/],
      ['GET', '/v1/shelves/s1/books?pageSize=ten', '', /page_size|pageSize/],
      ['GET', '/v1/shelves/s1/books?nope=1', '', /nope: unknown query parameter/],
      ['GET', '/v1/shelves/s1/books/b1', { title: 'x' }, /takes no request body/],
    ];
    for (const [m, p, body, re] of cases) {
      const r = await call(m, p, body === '' ? undefined : body);
      t.equal(r.status, 400, `${m} ${p} ${JSON.stringify(body)}`);
      t.equal(r.json().code, 3);
      t.match(r.json().message, re);
      t.equal(r.headers['x-meshlet-flags'], 'DPE');
    }
    t.equal(calls.length, before, 'no call reached the gRPC server');
  });

  t.test('no binding: 404 (or 405 for a known path), client streaming not exposed', async (t) => {
    const r = await call('GET', '/v2/nothing');
    t.equal(r.status, 404);
    t.match(r.json().message, /no gRPC method is bound to GET \/v2\/nothing/);
    const m = await call('PUT', '/v1/shelves/s1/books/b1', {});
    t.equal(m.status, 405);
    t.match(String(m.headers.allow), /GET/);
    const u = await call('POST', `/${PKG}.Library/Upload`, {});
    t.equal(u.status, 404);
  });

  t.test('gRPC clients still pass through untouched', async (t) => {
    const def = protoLoader.loadSync(path.join(FIXTURES, 'library.proto'), { includeDirs: [FIXTURES, path.join(ROOT, 'src', 'proto'), path.join(ROOT, 'node_modules', 'protobufjs')], keepCase: true, longs: String, enums: String });
    const pkg = grpc.loadPackageDefinition(def) as any;
    // Through sidecar A's outbound listener, addressed by the service name as the authority.
    const client = new pkg.meshlet.test.library.v1.Library(`${HOST}:${a.outbound}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'library' });
    t.teardown(() => client.close());
    const got = await new Promise<any>((resolve, reject) => client.GetBook({ name: 'shelves/g/books/1' }, (e: Error | null, v: unknown) => (e ? reject(e) : resolve(v))));
    t.equal(got.name, 'shelves/g/books/1');
  });
});

t.test('mesh-made errors are JSON too, with their response flag', async (t) => {
  const port = await closedPort();
  const a = await startSidecar(t, [
    service('library', [{ port }], 'http2'),
    {
      apiVersion: 'meshlet.dev/v1',
      kind: 'GrpcTranscoding',
      metadata: { name: 'library' },
      spec: { service: 'library', protos: [{ file: path.join(FIXTURES, 'library.proto') }, { file: path.join(FIXTURES, 'shelf.proto') }], services: [`${PKG}.Library`], maxRequestBytes: 64 },
    },
  ]);
  const r = await request({ port: a.outbound, path: '/v1/shelves/s1/books/b1', headers: { host: 'library' } });
  t.equal(r.status, 503);
  t.equal(r.headers['x-meshlet-flags'], 'UF', 'upstream connect failure');
  t.match(r.json(), { code: 14, status: 'UNAVAILABLE', message: /upstream connect failure/ });
  const big = JSON.stringify({ title: 'x'.repeat(100) });
  const b = await request({ port: a.outbound, method: 'POST', path: '/v1/shelves/s1/books', headers: { host: 'library', 'content-type': 'application/json', 'content-length': String(big.length) }, body: big });
  t.equal(b.status, 413);
  t.match(b.json(), { code: 3, message: /request body larger than 64 bytes/ });
});
