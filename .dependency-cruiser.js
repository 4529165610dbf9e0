/**
 * Dependency rules (`npm run deps`, part of `npm test`). The house's boundaries (DESIGN.md):
 * src/ is the library and never reaches into the processes that assemble it; the sidecar, the
 * gateway and the control plane never import each other; src/policy is a leaf of the model; no
 * import cycles.
 */

module.exports = {
  forbidden: [
    {
      name: 'src-not-to-processes',
      comment:
        'src/ is the library every process shares; it never imports sidecar/, gateway/ or control-plane/. Except src/cli: ' +
        'the `meshlet` program is the entry point that starts those processes (`meshlet sidecar`, `meshlet gateway`, `meshlet up`).',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^(sidecar|gateway|control-plane)/' },
    },
    {
      name: 'gateway-not-to-other-processes',
      comment: 'The gateway is a thin assembly of src/, like the sidecar; what it shares with the sidecar or the control plane lives in src/.',
      severity: 'error',
      from: { path: '^gateway/' },
      to: { path: '^(sidecar|control-plane)/' },
    },
    {
      name: 'processes-not-to-gateway',
      comment: 'The sidecar and the control plane never import the gateway.',
      severity: 'error',
      from: { path: '^(sidecar|control-plane)/' },
      to: { path: '^gateway/' },
    },
    {
      name: 'sidecar-not-to-control-plane',
      comment: 'The sidecar and the control plane are separate processes; what they share lives in src/.',
      severity: 'error',
      from: { path: '^sidecar/' },
      to: { path: '^control-plane/' },
    },
    {
      name: 'control-plane-not-to-sidecar',
      comment: 'The sidecar and the control plane are separate processes; what they share lives in src/.',
      severity: 'error',
      from: { path: '^control-plane/' },
      to: { path: '^sidecar/' },
    },
    {
      name: 'policy-is-a-leaf',
      comment:
        'src/policy (the model: schema, parser, types) loads no runtime module. Type-only imports are erased and allowed ' +
        '(the compiled snapshot names the Picker and transcoder types it holds).',
      severity: 'error',
      from: { path: '^src/policy/', pathNot: '^src/policy/parse[.]ts$' },
      to: { path: '^src/(http|lb|resilience|grpc|observability)/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'policy-is-a-leaf-proto-check',
      comment:
        'parse.ts may reach src/grpc only for the lazy proto check of a GrpcTranscoding (compileTranscoder, ' +
        'loaded when such a policy exists); nothing else from http, lb, resilience, grpc or observability.',
      severity: 'error',
      from: { path: '^src/policy/parse[.]ts$' },
      to: { path: '^src/(http|lb|resilience|grpc|observability)/', pathNot: '^src/grpc/transcode/compile[.]ts$', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-circular',
      comment: 'No import cycles.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist|test|bench)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    moduleSystems: ['cjs', 'es6'],
  },
};
