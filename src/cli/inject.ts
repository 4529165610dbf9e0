import { readFile, rename, writeFile } from 'node:fs/promises';
import { formatErrors } from '../core/result';
import { CliError, flags, readStdin, UsageError, type Command } from './common';

export const inject: Command = {
  name: 'inject',
  usage: `meshlet inject -f FILE|- [-o FILE] [--image IMAGE] [--control-plane HOST:PORT] [--mode native|classic]

Adds the meshlet sidecar to every workload in FILE (Pod, Deployment, StatefulSet, DaemonSet,
ReplicaSet, ReplicationController, Job, CronJob; multi-document YAML and List too) and prints
the result. Comments and everything else are kept; other kinds pass through unchanged; running
it again on its own output changes nothing. Any error (invalid YAML, a kind that carries a pod
the injector does not know, a bad meshlet.dev/* annotation) names the document, and nothing is
written.
  -f, --filename FILE      the file, or - for standard input
  -o, --output FILE        write there (atomically) instead of standard output
  --image IMAGE            the meshlet image (default ghcr.io/meshlet/meshlet:0.1.0)
  --control-plane H:P      the control plane's push address (default meshlet-control-plane.meshlet-system.svc:15010)
  --mode native|classic    native (default): the proxy is an init container with restartPolicy: Always
                           (Kubernetes >= 1.29); classic: the first regular container, for older clusters
  --proxy-cpu Q, --proxy-memory Q, --log-level L   defaults for the proxy (pods override by annotation)
  --ca-hash sha256:HEX     the proxies verify the control plane's push port with this CA hash (\`meshlet ca
                           show\`; the webhook puts in the control plane's own)
  --token-audience A       the audience of the projected ServiceAccount token the proxies present (default
                           meshlet; the control plane's TokenReview requires it)
  -q, --quiet              do not report what was injected or skipped on standard error`,
  async run(argv) {
    const { values } = flags(argv, {
      filename: { type: 'string', short: 'f' },
      output: { type: 'string', short: 'o' },
      image: { type: 'string' },
      'control-plane': { type: 'string' },
      mode: { type: 'string' },
      'proxy-cpu': { type: 'string' },
      'proxy-memory': { type: 'string' },
      'log-level': { type: 'string' },
      'ca-hash': { type: 'string' },
      'token-audience': { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
    });
    if (!values.filename) throw new UsageError('-f FILE is required (use - for standard input)');
    const { DEFAULT_OPTIONS, injectYaml, parseOverrides, ANNOTATIONS } = await import('../inject');
    const mode = values.mode ?? DEFAULT_OPTIONS.mode;
    if (mode !== 'native' && mode !== 'classic') throw new UsageError(`--mode must be native or classic, got ${JSON.stringify(mode)}`);
    // The defaults go through the same checks as the per-pod annotations.
    const defaults = parseOverrides(
      {
        ...(values['proxy-cpu'] !== undefined && { [ANNOTATIONS.proxyCpu]: values['proxy-cpu'] }),
        ...(values['proxy-memory'] !== undefined && { [ANNOTATIONS.proxyMemory]: values['proxy-memory'] }),
        ...(values['log-level'] !== undefined && { [ANNOTATIONS.logLevel]: values['log-level'] }),
      },
      'flags',
    );
    if (!defaults.ok) throw new UsageError(formatErrors(defaults.errors).replace(/flags\["meshlet\.dev\/([a-z-]+)"\]/g, '--$1'));
    const options = {
      ...DEFAULT_OPTIONS,
      mode: mode as 'native' | 'classic',
      image: values.image ?? DEFAULT_OPTIONS.image,
      controlPlane: values['control-plane'] ?? DEFAULT_OPTIONS.controlPlane,
      proxyCpu: defaults.value.proxyCpu ?? DEFAULT_OPTIONS.proxyCpu,
      proxyMemory: defaults.value.proxyMemory ?? DEFAULT_OPTIONS.proxyMemory,
      logLevel: defaults.value.logLevel ?? DEFAULT_OPTIONS.logLevel,
      tokenAudience: values['token-audience'] ?? DEFAULT_OPTIONS.tokenAudience,
      caHash: values['ca-hash']?.trim().toLowerCase(),
    };
    if (options.caHash !== undefined && !/^sha256:[0-9a-f]{64}$/.test(options.caHash)) throw new UsageError(`--ca-hash: expected sha256: and 64 hex digits (\`meshlet ca show\`), got ${JSON.stringify(values['ca-hash'])}`);
    if (!/^[A-Za-z0-9._:/-]{1,253}$/.test(options.tokenAudience)) throw new UsageError(`--token-audience: expected an audience such as meshlet, got ${JSON.stringify(options.tokenAudience)}`);
    if (!/^[^\s:]+:\d{1,5}$/.test(options.controlPlane)) throw new UsageError(`--control-plane: expected HOST:PORT, got ${JSON.stringify(options.controlPlane)}`);
    if (!options.image.trim() || /\s/.test(options.image)) throw new UsageError(`--image: expected an image reference, got ${JSON.stringify(options.image)}`);
    let text: string;
    try {
      text = values.filename === '-' ? await readStdin() : await readFile(values.filename, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${values.filename}: ${(e as Error).message}`);
    }
    const r = injectYaml(text, options);
    if (!r.ok) throw new CliError(`cannot inject ${values.filename === '-' ? 'standard input' : values.filename}, nothing written:\n${formatErrors(r.errors)}`);
    if (values.output) {
      const tmp = `${values.output}.meshlet-${process.pid}.tmp`;
      await writeFile(tmp, r.value.text);
      await rename(tmp, values.output);
    } else {
      process.stdout.write(r.value.text);
    }
    if (!values.quiet) for (const rep of r.value.reports) process.stderr.write(`${rep.where}: ${rep.action} (${rep.detail})\n`);
    return 0;
  },
};
