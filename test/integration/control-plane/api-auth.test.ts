/**
 * The REST API's doors (control-plane/api-auth.ts), against a real `meshlet control-plane`:
 * every route in the route table without a credential -> 401; roles per verb -> 403 naming the
 * role; the bootstrap admin token; tokens revoked and expired; the CLI's credential.
 */
import { statSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import t from 'tap';
import { API_ROUTES } from '../../../control-plane/api-auth';
import { cli, sleep, startControlPlane, tmpDir, type ControlPlaneProc } from '../lib/meshlet';

const route = (name: string) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec: { hosts: [`${name}.example`], rules: [{ backends: [{ service: 'web' }] }] } });

/** One request on a connection of its own (the CLI runs below block this process for seconds: no idle keep-alive to race). */
function call(cp: ControlPlaneProc, method: string, p: string, token?: string, body?: unknown): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: any }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const req = http.request(cp.api + p, { method, headers, agent: false }, (res) => {
      // /v1/tap streams: its status is all we need.
      if (p.startsWith('/v1/tap') && res.statusCode === 200) {
        resolve({ status: 200, headers: res.headers, body: undefined });
        req.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function bodyFor(method: string, p: string): unknown {
  if (method === 'POST' && p === '/v1/apply') return { items: [route('r1')] };
  if (method === 'POST' && p === '/v1/tokens') return { role: 'view' };
  if (method === 'PUT' || method === 'POST') return route(p.split('/').pop() === 'routes' ? 'x' : (p.split('/').pop() as string));
  return undefined;
}

function createToken(cp: ControlPlaneProc, role: string, ttl?: string, token = cp.token): { id: string; token: string; code: number | null; stderr: string } {
  const r = cli(['token', 'create', '--role', role, ...(ttl ? ['--ttl', ttl] : []), '-o', 'json'], { server: cp.api, token });
  if (r.code !== 0) return { id: '', token: '', code: r.code, stderr: r.stderr };
  const j = JSON.parse(r.stdout) as { id: string; token: string };
  return { ...j, code: 0, stderr: r.stderr };
}

t.test('the API: 401 without a credential on every route, 403 below the role, tokens revocable and expiring', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());

  // The bootstrap admin token: in the data dir, 0600, its path logged (never the token).
  const file = path.join(dir, 'admin.token');
  t.equal(statSync(file).mode & 0o777, 0o600, 'admin.token is 0600');
  const logged = cp.lines.find((l) => l.file === file);
  t.ok(logged, 'its path is logged');
  t.notOk(JSON.stringify(cp.lines).includes(cp.token), 'the token itself is not logged');

  for (const r of API_ROUTES) {
    const res = await call(cp, r.method, r.path, undefined, bodyFor(r.method, r.path));
    if (r.role === 'open') t.not(res.status, 401, `${r.method} ${r.path} stays open`);
    else {
      t.equal(res.status, 401, `${r.method} ${r.path} without a token -> 401`);
      t.match(res.headers['www-authenticate'] ?? '', /^Bearer/, `${r.method} ${r.path}: WWW-Authenticate: Bearer`);
      t.match(res.body, { code: 'unauthenticated', message: /bearer token/ }, `${r.method} ${r.path}: a clear JSON message`);
    }
  }
  t.equal((await call(cp, 'GET', '/v1/no-such-endpoint')).status, 401, 'a path nobody listed needs a credential too (deny by default)');
  t.equal((await call(cp, 'DELETE', '/v1/whatever/x')).status, 401);
  t.equal((await call(cp, 'GET', '/v1/status', 'mla_00000000.' + 'A'.repeat(43))).status, 401, 'an unknown token -> 401');
  t.equal((await call(cp, 'GET', '/v1/status', 'garbage')).status, 401, 'garbage -> 401');
  t.equal((await call(cp, 'POST', '/inject', cp.token, { kind: 'AdmissionReview' })).status, 404, 'no AdmissionReview on the API port (the webhook has its own TLS listener)');

  // A token that expires in five seconds: long enough to be used once on a loaded machine (the
  // CLI that makes it is a process start), then left to expire while the role matrix below runs.
  const short = createToken(cp, 'view', '5s');
  const shortMadeAt = Date.now();
  t.equal(short.code, 0, short.stderr);
  t.equal((await call(cp, 'GET', '/v1/status', short.token)).status, 200, 'a token with --ttl 5s works at first');

  const view = createToken(cp, 'view');
  const edit = createToken(cp, 'edit');
  t.equal(view.code, 0, view.stderr);
  t.match(view.token, /^mla_[0-9a-f]{8}\./);
  const rank = { view: 0, edit: 1, admin: 2 } as const;
  for (const [role, tok] of [['view', view.token], ['edit', edit.token], ['admin', cp.token]] as const) {
    for (const r of API_ROUTES) {
      if (r.role === 'open') continue;
      const res = await call(cp, r.method, r.path, tok, bodyFor(r.method, r.path));
      if (rank[role] < rank[r.role]) {
        t.equal(res.status, 403, `${role}: ${r.method} ${r.path} -> 403`);
        t.match(res.body, { code: 'forbidden', message: new RegExp(`needs the ${r.role} role`) }, `${role}: the 403 names the role needed`);
      } else t.notOk(res.status === 401 || res.status === 403, `${role}: ${r.method} ${r.path} is allowed (${res.status} ${String(JSON.stringify(res.body)).slice(0, 200)})`);
    }
  }

  // view cannot apply; edit can, but cannot make tokens.
  let r = cli(['apply', '-f', '-'], { server: cp.api, token: view.token, input: JSON.stringify(route('by-view')) });
  t.not(r.code, 0, 'a view token cannot apply');
  t.match(r.stderr, /needs the edit role/);
  r = cli(['apply', '-f', '-'], { server: cp.api, token: edit.token, input: JSON.stringify(route('by-edit')) });
  t.equal(r.code, 0, `an edit token applies: ${r.stderr}`);
  const byEdit = createToken(cp, 'view', undefined, edit.token);
  t.not(byEdit.code, 0, 'an edit token cannot create tokens');
  t.match(byEdit.stderr, /needs the admin role/);

  // Lists show ids and roles, never secrets or hashes.
  r = cli(['token', 'list', '-o', 'json'], { server: cp.api });
  t.equal(r.code, 0, r.stderr);
  t.notOk(r.stdout.includes(view.token.split('.')[1] as string), 'no secret in the list');
  t.notOk(r.stdout.includes('sha256'), 'no hash in the list');
  t.ok((JSON.parse(r.stdout) as { id: string; role?: string }[]).some((x) => x.id === view.id && x.role === 'view'));

  // Revoked -> 401, at once.
  t.equal((await call(cp, 'GET', '/v1/status', view.token)).status, 200);
  r = cli(['token', 'revoke', view.id], { server: cp.api });
  t.equal(r.code, 0, r.stderr);
  const revoked = await call(cp, 'GET', '/v1/status', view.token);
  t.equal(revoked.status, 401, 'a revoked token -> 401');
  t.match(revoked.body.message, /revoked/);

  // Expired -> 401: the 5 s token made above, waited out (the rest of the matrix ran meanwhile).
  await sleep(shortMadeAt + 5100 - Date.now());
  const expired = await call(cp, 'GET', '/v1/status', short.token);
  t.equal(expired.status, 401, 'an expired token -> 401');
  t.match(expired.body.message, /expired/);

  // The CLI: a clear message without a credential; MESHLET_TOKEN works.
  r = cli(['status'], { server: cp.api, token: '' });
  t.equal(r.code, 1);
  t.match(r.stderr, /needs a bearer token/);
  t.match(r.stderr, /MESHLET_TOKEN/);
  r = cli(['status'], { server: cp.api, token: edit.token });
  t.equal(r.code, 0, r.stderr);
});

t.test('the bootstrap token survives a restart; a revoked one is replaced', async (t) => {
  const dir = tmpDir();
  let cp = await startControlPlane(dir);
  const first = cp.token;
  await cp.stop();
  cp = await startControlPlane(dir);
  t.equal(cp.token, first, 'the same admin token after a restart');
  const id = /^mla_([0-9a-f]{8})\./.exec(first)?.[1] as string;
  t.equal(cli(['token', 'revoke', id], { server: cp.api }).code, 0);
  await cp.stop();
  cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  t.not(cp.token, first, 'a new admin token replaces the revoked one');
  t.equal((await call(cp, 'GET', '/v1/status', cp.token)).status, 200);
});

t.test('--no-api-auth: open, and said so', async (t) => {
  const { start } = await import('../lib/meshlet');
  const p = start(['control-plane', '--data-dir', tmpDir(), '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--no-api-auth']);
  t.teardown(() => p.stop());
  const l = await p.waitFor((x) => x.msg === 'control plane started');
  t.ok(p.lines.some((x) => /not authenticated/.test(String(x.msg))), 'a warning is logged');
  t.equal((await fetch(`${String(l.api)}/v1/status`)).status, 200);
});
