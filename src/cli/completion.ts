/**
 * `meshlet completion bash|zsh|fish`: a completion script with every command, each command's
 * flags (read from its usage text, the one place they are documented) and the policy kinds.
 */
import { KIND_ALIASES } from '../policy/parse';
import { commands, flags, UsageError, type Command } from './common';

const SHELLS = ['bash', 'zsh', 'fish'];

/** Every command with its flags, from the usage texts. */
export function commandFlags(): { name: string; summary: string; flags: string[] }[] {
  return commands().map((c) => {
    const usage = c.load().usage;
    const found = new Set<string>([...usage.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b/g)].map((m) => m[1] as string));
    if (c.client) for (const g of ['--server', '--context']) found.add(g);
    found.add('--help');
    return { name: c.name, summary: c.summary, flags: [...found].sort() };
  });
}

function kinds(): string[] {
  return ['all', ...new Set(Object.keys(KIND_ALIASES))];
}

function bash(): string {
  const cmds = commandFlags();
  const cases = cmds.map((c) => `    ${c.name}) flags="${c.flags.join(' ')}" ;;`).join('\n');
  return `# meshlet completion for bash: source <(meshlet completion bash)
_meshlet() {
  local cur prev cmd flags i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  cmd=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      --server|--context) ((i++)) ;;
      -*) ;;
      *) cmd="\${COMP_WORDS[i]}"; break ;;
    esac
  done
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W "${cmds.map((c) => c.name).join(' ')} --server --context --help" -- "$cur"))
    return
  fi
  case "$prev" in
    -f|--filename|--data-dir|--policies|--config|--tls-cert|--tls-key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    -o|--output) COMPREPLY=($(compgen -W "wide name yaml json jsonpath=" -- "$cur")); return ;;
  esac
  case "$cmd" in
${cases}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ "$cmd" == get || "$cmd" == describe || "$cmd" == delete ]]; then
    COMPREPLY=($(compgen -W "${kinds().join(' ')}" -- "$cur"))
  elif [[ "$cmd" == completion ]]; then
    COMPREPLY=($(compgen -W "${SHELLS.join(' ')}" -- "$cur"))
  elif [[ "$cmd" == config ]]; then
    COMPREPLY=($(compgen -W "view get-contexts current-context use-context set-context delete-context" -- "$cur"))
  elif [[ "$cmd" == proxy-config ]]; then
    COMPREPLY=($(compgen -W "routes endpoints policies all" -- "$cur"))
  fi
}
complete -F _meshlet meshlet
`;
}

function zsh(): string {
  // zsh runs bash completion functions through bashcompinit.
  return `#compdef meshlet
# meshlet completion for zsh: source <(meshlet completion zsh)
autoload -U +X bashcompinit && bashcompinit
${bash().split('\n').slice(1).join('\n')}`;
}

function fish(): string {
  const cmds = commandFlags();
  const q = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const lines = ['# meshlet completion for fish: meshlet completion fish | source', 'complete -c meshlet -f'];
  lines.push(`complete -c meshlet -n __fish_use_subcommand -l server -r -d 'the control plane URL'`);
  lines.push(`complete -c meshlet -n __fish_use_subcommand -l context -r -d 'a context of the config file'`);
  for (const c of cmds) {
    lines.push(`complete -c meshlet -n __fish_use_subcommand -a ${c.name} -d ${q(c.summary.slice(0, 80))}`);
    for (const f of c.flags) {
      if (f.startsWith('--')) lines.push(`complete -c meshlet -n '__fish_seen_subcommand_from ${c.name}' -l ${f.slice(2)}`);
      else lines.push(`complete -c meshlet -n '__fish_seen_subcommand_from ${c.name}' -s ${f.slice(1)}`);
    }
  }
  lines.push(`complete -c meshlet -n '__fish_seen_subcommand_from get describe delete' -a ${q(kinds().join(' '))}`);
  lines.push(`complete -c meshlet -n '__fish_seen_subcommand_from completion' -a ${q(SHELLS.join(' '))}`);
  return lines.join('\n') + '\n';
}

export const completion: Command = {
  name: 'completion',
  usage: `meshlet completion bash|zsh|fish

  bash:  source <(meshlet completion bash)        (or write it to /etc/bash_completion.d/meshlet)
  zsh:   source <(meshlet completion zsh)
  fish:  meshlet completion fish | source          (or > ~/.config/fish/completions/meshlet.fish)`,
  async run(argv) {
    const { positionals } = flags(argv, {}, true);
    const [shell, ...rest] = positionals;
    if (!shell || rest.length || !SHELLS.includes(shell)) throw new UsageError(`name one shell: ${SHELLS.join(', ')}`);
    process.stdout.write(shell === 'bash' ? bash() : shell === 'zsh' ? zsh() : fish());
    return 0;
  },
};
