import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { cli, ROOT, tmpDir } from '../lib/meshlet';

const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'inject', 'mixed.yaml');

t.test('meshlet inject -f FILE and -f -: prints the injected YAML, reports on stderr, idempotent', async (t) => {
  const r = cli(['inject', '-f', FIXTURE, '--image', 'registry.local/meshlet:dev', '--proxy-cpu', '50m']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, 'document 3, Deployment/catalog: injected (native sidecar)\n');
  const docs = parseAllDocuments(r.stdout).map((d) => d.toJS());
  const pod = docs[2].spec.template;
  t.same(pod.spec.initContainers.map((c: { image: string }) => c.image), ['registry.local/meshlet:dev', 'registry.local/meshlet:dev']);
  t.equal(pod.spec.initContainers[1].resources.requests.cpu, '50m');
  t.match(r.stdout, /^# The shop: a namespace, a service and its deployment\.$/m, 'comments kept');
  t.match(r.stdout, /name: catalog # the catalog service/);
  const again = cli(['inject', '-f', '-', '--image', 'registry.local/meshlet:dev', '--proxy-cpu', '50m', '-q'], { input: r.stdout });
  t.equal(again.code, 0);
  t.equal(again.stdout, r.stdout, 'injecting the output again changes nothing');
  t.equal(again.stderr, '', '-q: no report');
});

t.test('-o writes the file; an error writes nothing and names the document', async (t) => {
  const dir = tmpDir();
  const out = path.join(dir, 'out.yaml');
  const ok = cli(['inject', '-f', FIXTURE, '-o', out, '--mode', 'classic']);
  t.equal(ok.code, 0, ok.stderr);
  t.equal(ok.stdout, '');
  t.match(readFileSync(out, 'utf8'), /- name: meshlet-proxy/);
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, readFileSync(FIXTURE, 'utf8').replace('"5432"', '"5432,http"'));
  const out2 = path.join(dir, 'out2.yaml');
  const r = cli(['inject', '-f', bad, '-o', out2]);
  t.equal(r.code, 1);
  t.match(r.stderr, /cannot inject .*bad\.yaml, nothing written:\ndocument 3, Deployment\/catalog: spec\.template\.metadata\.annotations\["meshlet\.dev\/exclude-outbound-ports"\]: expected comma-separated ports \(1-65535\), got "http"/);
  t.notOk(existsSync(out2), 'no output file');
  const bad2 = cli(['inject', '-f', '-'], { input: 'kind: [\n' });
  t.equal(bad2.code, 1);
  t.equal(bad2.stdout, '', 'nothing on stdout');
  t.match(bad2.stderr, /cannot inject standard input, nothing written:\ndocument 1: invalid YAML \(line/);
});

t.test('usage errors', async (t) => {
  for (const [args, re] of [
    [['inject'], /-f FILE is required/],
    [['inject', '-f', FIXTURE, '--mode', 'old'], /--mode must be native or classic/],
    [['inject', '-f', FIXTURE, '--proxy-memory', 'much'], /--proxy-memory: expected a Kubernetes quantity/],
    [['inject', '-f', FIXTURE, '--control-plane', 'nope'], /--control-plane: expected HOST:PORT/],
  ] as [string[], RegExp][]) {
    const r = cli(args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, re);
  }
  const missing = cli(['inject', '-f', '/nonexistent/x.yaml']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /cannot read \/nonexistent\/x\.yaml/);
});
