/**
 * The dashboard in a real browser (Debian's headless Chromium driven by playwright-core) against
 * the local mesh `npm start` runs (`meshlet up --ephemeral-ports`) with traffic flowing:
 * - the graph shows frontend -> catalog with non-zero rates, and pricing with its endpoint;
 * - a service page's charts have data points;
 * - the tap shows the requests the test sends, with status and flags;
 * - an endpoint that stops answering (its sidecar SIGSTOPped) shows ejected by its callers'
 *   outlier detection; killing catalog-v2's sidecar shows its endpoint disconnected (then gone);
 * - the edge gateway is a node of kind gateway;
 * - a policy applied from the CLI moves every sidecar to the new version on the rollout page,
 *   and a sidecar that cannot compile it shows NACKed with its field-path errors;
 * - keyboard: the graph's nodes are reachable with Tab and open their service page.
 * Screenshots (light and dark) go to test-artifacts/dashboard/ (not committed).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import t from 'tap';
import { FakeSidecar } from '../integration/lib/fake-sidecar';
import { cli, eventually, MAIN, ROOT, sleep, tmpDir } from '../integration/lib/meshlet';

const SHOTS = path.join(ROOT, 'test-artifacts', 'dashboard');
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];

interface Mesh {
  api: string;
  token: string;
  push: string;
  frontend: number;
  out: () => string;
  stop(): Promise<void>;
  upPid: number;
}

async function up(dataDir: string): Promise<Mesh> {
  // `up` writes its context (server, admin token) to the CLI's config file: a test one.
  const child = spawn(process.execPath, [MAIN, 'up', '--ephemeral-ports', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MESHLET_CONFIG: path.join(dataDir, 'config.yaml') } });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await eventually('meshlet up', async () => {
    if (child.exitCode !== null) throw new Error(`meshlet up exited:\n${out}`);
    return out.includes('Ctrl-C stops everything') ? true : undefined;
  }, 60_000);
  // The dashboard's address carries the admin token in its fragment (the page keeps it in sessionStorage).
  const dash = /Dashboard: (http:\/\/127\.0\.0\.1:\d+)\/ui\/#token=(\S+)/.exec(out);
  const api = dash?.[1];
  const token = dash?.[2] as string;
  const push = /push (127\.0\.0\.1:\d+)/.exec(out)?.[1];
  const frontend = Number(/curl -s http:\/\/127\.0\.0\.1:(\d+)\//.exec(out)?.[1]);
  if (!api || !push || !frontend) throw new Error(`cannot read the addresses from:\n${out}`);
  return {
    api,
    token,
    push,
    frontend,
    out: () => out,
    upPid: child.pid as number,
    stop: async () => {
      child.kill('SIGINT');
      const k = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(k);
    },
  };
}

/** The pid of the sidecar `up` started for `id` (from /proc: a child of `up` with `--id ID`). */
function sidecarPid(upPid: number, id: string): number {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== upPid) continue;
      const args = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (args[args.indexOf('--id') + 1] === id) return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no sidecar ${id} under pid ${upPid}`);
}

async function request(port: number, headers: Record<string, string> = {}): Promise<number> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/`, { headers });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

t.test('the dashboard in Chromium, against `meshlet up` with traffic', async (t) => {
  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  const dir = tmpDir('meshlet-dash-ui-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const mesh = await up(path.join(dir, '.meshlet'));
  t.teardown(() => mesh.stop());

  // Traffic: a request every 100 ms through the frontend, until the end.
  let traffic = true;
  const sent: number[] = [];
  const loop = (async () => {
    while (traffic) {
      sent.push(await request(mesh.frontend));
      await sleep(100);
    }
  })();
  t.teardown(async () => {
    traffic = false;
    await loop;
  });

  const browser: Browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1400, height: 950 }, colorScheme: 'light' });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  const offsite: string[] = [];
  page.on('request', (r) => !r.url().startsWith(mesh.api) && offsite.push(r.url()));

  // ---- the graph
  await page.goto(`${mesh.api}/ui/#token=${mesh.token}`);
  await page.getByRole('heading', { name: 'Service graph' }).waitFor();
  const feToCatalog = page.locator('table.edges tr[data-edge="frontend->catalog"]');
  await feToCatalog.waitFor({ timeout: 20_000 });
  await eventually('a non-zero rate frontend -> catalog', async () => {
    const rps = Number(await feToCatalog.locator('td').nth(2).textContent());
    return rps > 0 ? rps : undefined;
  });
  t.ok(Number(await feToCatalog.locator('td').nth(2).textContent()) > 0, 'frontend -> catalog: req/s above zero');
  t.match(await feToCatalog.locator('td').nth(3).textContent(), /^100(\.0)?%$/, 'all succeeded');
  // The test calls the frontend through the edge gateway (the URL `meshlet up` prints): the
  // frontend counts the gateway as its caller, not "outside the mesh".
  await eventually('an edge gateway -> frontend', async () => ((await page.locator('table.edges tr[data-edge="gateway->frontend"]').count()) === 1 ? true : undefined));
  t.equal(await page.locator('table.edges tr[data-edge="gateway->frontend"] td').first().textContent(), 'gateway', 'the test calls the frontend through the gateway');
  t.equal(await page.locator('table.edges tr[data-edge="unknown->frontend"]').count(), 0, 'and the gateway is not counted as a caller outside the mesh');
  t.equal(await page.locator('svg.graph g.edge[data-edge="frontend->catalog"]').count(), 1, 'the edge is drawn');
  t.match(await page.locator('svg.graph g.edge[data-edge="frontend->catalog"] text').textContent(), /^[\d.]+ rps · 100(\.0)?% · p99 [\d.]+ ms$/);
  for (const s of ['frontend', 'catalog', 'pricing']) t.equal(await page.locator(`svg.graph a.node[data-node="${s}"]`).count(), 1, `${s} is a node`);
  t.match(await page.locator('table.nodes tr[data-node="catalog"]').textContent(), /catalog-v1-0 ready.*catalog-v2-0 ready|catalog-v2-0 ready.*catalog-v1-0 ready/);
  t.match(await page.locator('table.nodes tr[data-node="pricing"]').textContent(), /pricing-0 ready.*1\/1/, 'pricing: its endpoint and its sidecar on the current policy');
  const gw = page.locator('table.nodes tr[data-node="gateway"]');
  t.equal(await gw.locator('td').nth(1).textContent(), 'gateway', 'the edge gateway is a node of its own kind');
  t.match(await page.locator('svg.graph a.node[data-node="gateway"]').textContent(), /edge gateway · 1 ready/);
  await shot(page, '1-graph-light');
  // catalog calls pricing through HTTP/JSON transcoded to gRPC: counted like every other call.
  await eventually('an edge catalog -> pricing', async () => ((await page.locator('table.edges tr[data-edge="catalog->pricing"]').count()) === 1 ? true : undefined));
  t.equal(await page.locator('table.edges tr[data-edge="catalog->pricing"]').count(), 1, 'an edge catalog -> pricing (transcoded gRPC)');

  // Keyboard: Tab reaches a node and Enter opens its page.
  await page.locator('svg.graph a.node[data-node="catalog"]').focus();
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Service catalog' }).waitFor();
  t.equal(await page.evaluate('document.activeElement && document.activeElement.tagName'), 'H1', 'focus moves to the new page heading');

  // ---- service page: charts with data points
  await eventually('charts with at least 2 points', async () => {
    const n = Number(await page.locator('figure.chart').first().getAttribute('data-points'));
    return n >= 2 ? n : undefined;
  }, 20_000);
  const charts = page.locator('figure.chart');
  t.ok((await charts.count()) >= 6, 'inbound and per-route/caller charts');
  t.equal(await page.locator('figure.chart canvas').count(), await charts.count(), 'every chart drew (uPlot canvas)');
  t.match(await page.locator('figure.chart .chart-plot').first().getAttribute('aria-label'), /catalog inbound: requests: \d+ points over time; latest req\/s [\d.]+/);
  t.match(await page.locator('table.responses').first().textContent(), /200-answered by the app/);
  t.match(await page.locator('table.routes').textContent(), /catalog\/split/, 'per route');
  await shot(page, '2-service-catalog');

  // ---- an endpoint that stops answering: its callers' outlier detection ejects it
  const outlier = `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata:
  name: catalog
spec:
  service: catalog
  loadBalancer: {type: round-robin}
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
  outlierDetection: {consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 60s}
`;
  const od = cli(['apply', '-f', '-'], { server: mesh.api, token: mesh.token, input: outlier });
  t.equal(od.code, 0, od.stderr);
  await eventually('frontend-0 runs the outlier policy', async () => {
    const r = (await (await fetch(`${mesh.api}/v1/rollout`, { headers: { authorization: `Bearer ${mesh.token}` } })).json()) as {
      resources: { kind: string; name: string; resourceVersion: string | null }[];
      sidecars: { id: string; state: string }[];
    };
    const v2 = r.resources.find((x) => x.kind === 'DestinationPolicy' && x.name === 'catalog')?.resourceVersion !== '1';
    return v2 && r.sidecars.find((x) => x.id === 'frontend-0')?.state === 'acked' ? true : undefined;
  });
  // SIGSTOP: catalog-v2's sidecar keeps its connections and its push stream but answers nothing,
  // so frontend's tries to it time out (1.5 s per try; retried on v1) until v2 is ejected.
  const v2pid = sidecarPid(mesh.upPid, 'catalog-v2-0');
  process.kill(v2pid, 'SIGSTOP');
  let stopped = true;
  t.teardown(() => void (stopped && process.kill(v2pid, 'SIGCONT')));
  await page.goto(`${mesh.api}/ui/#/`);
  const v2ep = page.locator('table.nodes tr[data-node="catalog"] li[data-endpoint="catalog-v2-0"]');
  await eventually('catalog-v2-0 ejected on the graph', async () => {
    await Promise.all(Array.from({ length: 10 }, () => request(mesh.frontend)));
    return (await v2ep.getAttribute('data-state')) === 'ejected' ? true : undefined;
  }, 40_000);
  t.equal(await v2ep.getAttribute('data-state'), 'ejected', 'catalog-v2-0 shows ejected');
  t.equal(await page.locator('svg.graph a.node[data-node="catalog"] circle.dot.ejected').count(), 1, 'and its dot on the node');
  await shot(page, '4a-graph-endpoint-ejected');
  process.kill(v2pid, 'SIGCONT');
  stopped = false;

  // ---- tap: pick catalog, start, send canary requests (always catalog v2: its only endpoint is
  // ejected, so the subset balances over it anyway, below the panic threshold)
  await page.goto(`${mesh.api}/ui/#/tap/catalog`);
  await page.getByLabel('Service').selectOption('catalog');
  await page.getByLabel('Show headers').fill('x-canary');
  await page.getByRole('button', { name: 'Start' }).click();
  await page.getByRole('status').filter({ hasText: /watching [1-9] sidecar/ }).waitFor();
  await sleep(300);
  for (let i = 0; i < 3; i++) t.equal(await request(mesh.frontend, { 'x-canary': 'true' }), 200);
  const canary = page.locator('table.tap tbody tr').filter({ hasText: 'catalog/canary' });
  await canary.first().waitFor();
  // Read the row in one go: new rows keep arriving at the top.
  const cells = await canary.first().evaluate((tr) => Array.from((tr as unknown as { cells: ArrayLike<{ textContent: string | null }> }).cells, (c) => c.textContent ?? ''));
  t.match(cells.slice(1, 10), ['out', 'frontend → catalog', 'GET', '/items', '200', '-', /^[\d.]+ ms$/, /^127\.0\.0\.1:\d+$/, 'catalog/canary'], 'direction, caller, method, path, status, flags, latency, upstream, route');
  t.equal(cells[11], 'true', 'the header asked for: x-canary');
  t.match(await canary.first().locator('code.trace').textContent(), /^[0-9a-f]{32}$/, 'a trace id');

  // ---- kill catalog-v2's sidecar: canary requests now fail, with a response flag
  process.kill(sidecarPid(mesh.upPid, 'catalog-v2-0'), 'SIGKILL');
  await eventually('a canary request failing with a flag', async () => {
    await request(mesh.frontend, { 'x-canary': 'true' });
    return (await page.locator('table.tap tbody tr.bad').count()) > 0 ? true : undefined;
  });
  const failed = page.locator('table.tap tbody tr.bad').first();
  t.match(await failed.locator('td').nth(2).textContent(), 'frontend → catalog');
  t.match(await failed.locator('td').nth(5).textContent(), /^50[234]$/, 'a 5xx');
  t.match(await failed.locator('td').nth(6).textContent(), /^(UF|UH|URX|UR|NR)$/, 'with the mesh response flag');
  await shot(page, '3-tap');
  await page.getByRole('button', { name: 'Stop' }).click();

  // ---- the graph: catalog-v2-0 disconnected (in its grace period) or gone
  await page.goto(`${mesh.api}/ui/#/`);
  const v2 = page.locator('table.nodes tr[data-node="catalog"] li[data-endpoint="catalog-v2-0"]');
  await eventually('catalog-v2-0 no longer ready', async () => {
    if ((await v2.count()) === 0) return 'gone';
    const s = await v2.getAttribute('data-state');
    return s && s !== 'ready' ? s : undefined;
  });
  const state = (await v2.count()) ? await v2.getAttribute('data-state') : 'gone';
  t.match(state, /^(disconnected|ejected|gone)$/, `catalog-v2-0 shows ${state}`);
  await shot(page, '4-graph-endpoint-killed');

  // ---- rollout: apply from the CLI; every sidecar moves; a sidecar that cannot compile NACKs
  // `meshlet up`'s push port is TLS and registration strict: the fake sidecar trusts the mesh CA
  // and presents a join token for its service, as a real one does.
  const legacyToken = cli(['token', 'create', '--service', 'legacy', '--ttl', '1h', '-o', 'json'], { server: mesh.api, token: mesh.token });
  t.equal(legacyToken.code, 0, legacyToken.stderr);
  const nacker = new FakeSidecar(mesh.push, { id: 'legacy-0', service: 'legacy' }, { ca: readFileSync(path.join(dir, '.meshlet', 'ca.pem')), joinToken: (JSON.parse(legacyToken.stdout) as { token: string }).token });
  t.teardown(() => nacker.close());
  let nacking = true;
  void (async () => {
    while (nacking) {
      const m = await nacker.next(5_000).catch(() => undefined);
      if (m && nacking) nacker.nack(m, 'Route/catalog: spec.rules[1].retries.perTryTimeout: this sidecar cannot compile it\nRoute/catalog: spec.rules[1].timeout: unsupported');
    }
  })();
  t.teardown(() => void (nacking = false));
  await page.goto(`${mesh.api}/ui/#/rollout`);
  // The NACKing sidecar's endpoint changes the snapshot too: take the version after it joined.
  await page.locator('table.sidecars tr[data-sidecar="legacy-0"][data-state="nacked"]').waitFor();
  const before = await page.locator('.lede code').textContent();
  const policy = `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata:
  name: pricing
spec:
  service: pricing
  loadBalancer:
    type: round-robin
`;
  // The resource version is the store's revision at the write: it moves, to whatever number.
  const pricingSummary = page.locator('details[data-resource="DestinationPolicy/pricing"] summary');
  const pricingBefore = await pricingSummary.textContent();
  t.match(pricingBefore, /DestinationPolicy\/pricing version \d+/);
  const applied = cli(['apply', '-f', '-'], { server: mesh.api, token: mesh.token, input: policy });
  t.equal(applied.code, 0, applied.stderr);
  // The page shows the new resource version and, in the same answer, a snapshot every sidecar ACKed.
  const version = await eventually('every sidecar on the version carrying the change', async () => {
    const v = await page.locator('.lede code').textContent();
    if (!v || v === before) return undefined;
    if ((await pricingSummary.textContent()) === pricingBefore) return undefined;
    for (const id of ['frontend-0', 'catalog-v1-0', 'pricing-0']) {
      const row = page.locator(`table.sidecars tr[data-sidecar="${id}"]`);
      if ((await row.getAttribute('data-state')) !== 'acked' || (await row.locator('code').textContent()) !== v) return undefined;
    }
    return (await page.locator('.lede code').textContent()) === v ? v : undefined;
  });
  t.not(version, before, 'a new version in force');
  t.pass(`frontend-0, catalog-v1-0 and pricing-0 run ${version}`);
  const nackRow = page.locator('table.sidecars tr[data-sidecar="legacy-0"]');
  await eventually('legacy-0 NACKed', async () => ((await nackRow.getAttribute('data-state')) === 'nacked' ? true : undefined));
  t.match(await nackRow.locator('ul.errors').textContent(), /Route\/catalog.*spec\.rules\[1\]\.retries\.perTryTimeout: this sidecar cannot compile it.*spec\.rules\[1\]\.timeout: unsupported/);
  t.match(await page.locator('.lede').textContent(), /1 NACKed/);
  await page.locator('details[data-resource="DestinationPolicy/pricing"] summary').click();
  t.match(await page.locator('details[data-resource="DestinationPolicy/pricing"] pre').textContent(), /type: round-robin/, 'the YAML of each resource');
  await shot(page, '5-rollout-nack');

  // ---- dark mode
  const dark = await browser.newPage({ viewport: { width: 1400, height: 950 }, colorScheme: 'dark' });
  t.teardown(() => dark.close());
  await dark.goto(`${mesh.api}/ui/#token=${mesh.token}`);
  await dark.locator('table.edges tr[data-edge="frontend->catalog"]').waitFor({ timeout: 20_000 });
  const bg = await dark.evaluate('getComputedStyle(document.body).backgroundColor');
  t.equal(bg, 'rgb(16, 20, 26)', 'dark background under prefers-color-scheme: dark');
  await shot(dark, '6-graph-dark');
  await dark.goto(`${mesh.api}/ui/#/service/frontend`);
  await dark.locator('figure.chart canvas').first().waitFor();
  await shot(dark, '7-service-frontend-dark');

  t.same(errors, [], 'no script errors');
  t.same(offsite, [], 'nothing requested from anywhere but the control plane');
  t.ok(sent.filter((s) => s === 200).length > 20, `traffic flowed (${sent.length} requests)`);
});
