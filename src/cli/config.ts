/**
 * The CLI's config file: named contexts (a control plane's address and, once the API has
 * authentication, a token), like kubectl's kubeconfig. `$MESHLET_CONFIG`, else
 * `$XDG_CONFIG_HOME/meshlet/config.yaml`, else `~/.config/meshlet/config.yaml`:
 *
 *   current-context: staging
 *   contexts:
 *     - {name: local, server: http://127.0.0.1:15080}
 *     - {name: staging, server: https://meshlet.staging.example:15080, token: ...}
 *
 * `meshlet config ...` reads and writes it; a missing file is an empty config.
 */
import { CliError, flags, nearest, table, UsageError, type Command } from './common';
import { stringify } from 'yaml';
import { configPath, loadConfig, saveConfig, type Context } from './config-file';

const SUB = ['view', 'get-contexts', 'current-context', 'use-context', 'set-context', 'delete-context'];

export const config: Command = {
  name: 'config',
  usage: `meshlet config view|get-contexts|current-context|use-context NAME|set-context NAME --server URL [--token T] [--certificate-authority FILE]|delete-context NAME

Named contexts in the config file ($MESHLET_CONFIG, else ~/.config/meshlet/config.yaml).
Client commands take the control plane from --server, else --context NAME, else $MESHLET_SERVER,
else the current context, else http://127.0.0.1:15080; $MESHLET_TOKEN (else the context's token)
is sent as a bearer token.
  --server URL    (set-context) the control plane's REST API
  --token T       (set-context) a bearer token for the API
  --certificate-authority FILE  (set-context) PEM roots that verify an https server (a control
                  plane using the mesh CA writes them to DATA_DIR/api-ca.pem)`,
  async run(argv) {
    const { values, positionals } = flags(argv, { server: { type: 'string' }, token: { type: 'string' }, 'certificate-authority': { type: 'string' } }, true);
    const [sub, name, ...rest] = positionals;
    if (!sub) throw new UsageError(`a sub-command is required: ${SUB.join(', ')}`);
    if (!SUB.includes(sub)) {
      const near = nearest(sub, SUB);
      throw new UsageError(`unknown sub-command ${JSON.stringify(sub)}${near ? `; did you mean \`${near}\`?` : ''}`);
    }
    if (rest.length) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
    if ((values.server !== undefined || values.token !== undefined || values['certificate-authority'] !== undefined) && sub !== 'set-context') throw new UsageError('--server, --token and --certificate-authority go with set-context');
    const file = configPath();
    const cfg = loadConfig(file);
    const needName = (): string => {
      if (!name) throw new UsageError(`${sub} needs a context NAME`);
      return name;
    };
    switch (sub) {
      case 'view': {
        const shown = { ...cfg, contexts: cfg.contexts.map((c) => (c.token ? { ...c, token: 'REDACTED' } : c)) };
        process.stdout.write(`# ${file}\n` + stringify({ ...(shown.currentContext ? { 'current-context': shown.currentContext } : {}), contexts: shown.contexts }));
        return 0;
      }
      case 'get-contexts': {
        if (cfg.contexts.length === 0) {
          process.stdout.write(`no contexts in ${file}; add one with \`meshlet config set-context NAME --server URL\`\n`);
          return 0;
        }
        const rows = [['CURRENT', 'NAME', 'SERVER']];
        for (const c of cfg.contexts) rows.push([c.name === cfg.currentContext ? '*' : '', c.name, c.server]);
        process.stdout.write(table(rows) + '\n');
        return 0;
      }
      case 'current-context':
        if (!cfg.currentContext) throw new CliError(`no current context in ${file}`);
        process.stdout.write(cfg.currentContext + '\n');
        return 0;
      case 'use-context': {
        const n = needName();
        if (!cfg.contexts.some((c) => c.name === n)) {
          const near = nearest(n, cfg.contexts.map((c) => c.name));
          throw new CliError(`no context ${JSON.stringify(n)} in ${file}${near ? `; did you mean ${JSON.stringify(near)}?` : ''}`);
        }
        saveConfig({ ...cfg, currentContext: n }, file);
        process.stdout.write(`switched to context ${JSON.stringify(n)}\n`);
        return 0;
      }
      case 'set-context': {
        const n = needName();
        const old = cfg.contexts.find((c) => c.name === n);
        const server = values.server ?? old?.server;
        if (!server) throw new UsageError('set-context of a new context needs --server URL');
        try {
          new URL(/^https?:\/\//.test(server) ? server : `http://${server}`);
        } catch {
          throw new UsageError(`--server: not a URL: ${JSON.stringify(server)}`);
        }
        const caFile = values['certificate-authority'] === undefined ? old?.certificateAuthority : require('node:path').resolve(values['certificate-authority']);
        const ctx: Context = { name: n, server, ...((values.token ?? old?.token) ? { token: (values.token ?? old?.token) as string } : {}), ...(caFile ? { certificateAuthority: caFile as string } : {}) };
        const contexts = old ? cfg.contexts.map((c) => (c.name === n ? ctx : c)) : [...cfg.contexts, ctx];
        saveConfig({ currentContext: cfg.currentContext ?? n, contexts }, file);
        process.stdout.write(`context ${JSON.stringify(n)} ${old ? 'modified' : 'created'}${cfg.currentContext ? '' : ' and made current'}\n`);
        return 0;
      }
      case 'delete-context': {
        const n = needName();
        if (!cfg.contexts.some((c) => c.name === n)) throw new CliError(`no context ${JSON.stringify(n)} in ${file}`);
        saveConfig({ currentContext: cfg.currentContext === n ? undefined : cfg.currentContext, contexts: cfg.contexts.filter((c) => c.name !== n) }, file);
        process.stdout.write(`context ${JSON.stringify(n)} deleted\n`);
        return 0;
      }
    }
    return 0;
  },
};
