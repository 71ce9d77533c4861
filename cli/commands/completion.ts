import { CliError, GLOBAL_OPTIONS, type Command } from '../command.js';

/** Names and flags of every command, as the completion scripts need them. */
function words(commands: readonly Command[]): { name: string; flags: string[] }[] {
  return commands.flatMap((c) =>
    [c.name, ...(c.aliases ?? [])].map((name) => ({
      name,
      flags: Object.keys({ ...GLOBAL_OPTIONS, ...c.options })
        .map((f) => `--${f}`)
        .concat('--help')
        .sort(),
    })),
  );
}

/** Subcommands of commands that take one (first positional). */
const SUBCOMMANDS: Record<string, string[]> = {
  rollout: ['create', 'status', 'list', 'pause', 'resume', 'approve', 'cancel'],
  tokens: ['list', 'create', 'revoke'],
  scripts: ['list', 'show', 'versions', 'diff'],
  completion: ['bash', 'zsh'],
};

function bash(commands: readonly Command[]): string {
  const ws = words(commands);
  const cases = ws.map((w) => `    ${w.name}) opts="${w.flags.join(' ')}"; subs="${(SUBCOMMANDS[w.name] ?? []).join(' ')}" ;;`).join('\n');
  return `# muster bash completion: eval "$(muster completion bash)" (e.g. in ~/.bashrc)
_muster() {
  local cur prev cmd opts subs
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${ws.map((w) => w.name).join(' ')} help" -- "$cur") )
    return
  fi
  cmd="\${COMP_WORDS[1]}"
  case "$cmd" in
${cases}
    *) opts=""; subs="" ;;
  esac
  case "$prev" in
    --output|-o) COMPREPLY=( $(compgen -W "table json" -- "$cur") ); return ;;
    --color) COMPREPLY=( $(compgen -W "auto always never" -- "$cur") ); return ;;
    --interpreter) COMPREPLY=( $(compgen -W "bash sh python3 node shebang" -- "$cur") ); return ;;
    --status) COMPREPLY=( $(compgen -W "online offline running succeeded failed cancelled" -- "$cur") ); return ;;
    --script-file|-f|--key|--out) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
  elif [ "$COMP_CWORD" -eq 2 ] && [ -n "$subs" ]; then
    COMPREPLY=( $(compgen -W "$subs" -- "$cur") )
  else
    COMPREPLY=( $(compgen -f -- "$cur") )
  fi
}
complete -F _muster muster
`;
}

function zsh(commands: readonly Command[]): string {
  const ws = words(commands);
  const summary = new Map(commands.flatMap((c) => [c.name, ...(c.aliases ?? [])].map((n) => [n, c.summary] as const)));
  const esc = (s: string): string => s.replace(/'/g, "'\\''").replace(/:/g, '\\:');
  const cases = ws.map((w) => `    ${w.name}) opts=(${w.flags.join(' ')}); subs=(${(SUBCOMMANDS[w.name] ?? []).join(' ')}) ;;`).join('\n');
  return `#compdef muster
# muster zsh completion: muster completion zsh > "\${fpath[1]}/_muster" (or eval "$(muster completion zsh)" after compinit)
_muster() {
  local -a cmds opts subs
  cmds=(
${ws.map((w) => `    '${esc(w.name)}:${esc(summary.get(w.name) ?? '')}'`).join('\n')}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' cmds
    return
  fi
  case "\${words[2]}" in
${cases}
    *) opts=(); subs=() ;;
  esac
  case "\${words[CURRENT-1]}" in
    --output|-o) compadd table json; return ;;
    --color) compadd auto always never; return ;;
    --interpreter) compadd bash sh python3 node shebang; return ;;
    --script-file|-f|--key|--out) _files; return ;;
  esac
  if [[ "\${words[CURRENT]}" == -* ]]; then
    compadd -- $opts
  elif (( CURRENT == 3 )) && (( \${#subs} )); then
    compadd -- $subs
  else
    _files
  fi
}
# Autoloaded from fpath the file is the function's first call; eval'ed it registers the function.
if [ "$funcstack[1]" = "_muster" ]; then _muster "$@"; else compdef _muster muster; fi
`;
}

/** `muster completion bash|zsh`: prints the shell completion script (commands, subcommands, flags). */
export function completion(all: () => readonly Command[]): Command {
  return {
    name: 'completion',
    summary: 'print the shell completion script (bash or zsh)',
    usage: 'muster completion bash|zsh     e.g. eval "$(muster completion bash)" in ~/.bashrc',
    options: {},
    run: async ({ positionals, out }) => {
      const shell = positionals[0];
      if (shell === 'bash') out(bash(all()));
      else if (shell === 'zsh') out(zsh(all()));
      else throw new CliError('give the shell: bash or zsh');
    },
  };
}
