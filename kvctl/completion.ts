import type { Command } from 'commander';
import { CONSISTENCY_LEVELS } from '../client';
import { ROLES } from '../common/api-keys';
import { OUTPUT_FORMATS } from './options';

/**
 * Shell completion scripts generated from kvctl's commander tree: commands, subcommands and options
 * come from the program itself, so the scripts cannot drift from what kvctl accepts.
 */

export const SHELLS = ['bash', 'zsh'] as const;
export type Shell = (typeof SHELLS)[number];

/** What completes after a command path (`''` for kvctl itself, `auth create-key`). */
interface CompletionNode {
  readonly path: string;
  /** subcommands, or the choices of the command's first argument */
  readonly words: readonly string[];
  /** every option, the global ones included */
  readonly options: readonly string[];
  /** the options that take a value: the word after one is not a command */
  readonly takesValue: readonly string[];
}

/** Options whose values are a fixed set: completed too. */
const OPTION_VALUES: Readonly<Record<string, readonly string[]>> = {
  '--consistency': CONSISTENCY_LEVELS,
  '--output': OUTPUT_FORMATS,
  '-o': OUTPUT_FORMATS,
  '--role': ROLES,
};

function flagsOf(cmd: Command): { all: string[]; takesValue: string[] } {
  const all: string[] = [];
  const takesValue: string[] = [];
  for (const o of cmd.options) {
    const names = [o.short, o.long].filter((n): n is string => n !== undefined);
    all.push(...names);
    if (o.required || o.optional) takesValue.push(...names);
  }
  return { all, takesValue };
}

/** Every command path of the program with what completes after it. */
export function completionNodes(program: Command): CompletionNode[] {
  const global = flagsOf(program);
  const help = ['-h', '--help'];
  const nodes: CompletionNode[] = [];
  const visit = (cmd: Command, path: string): void => {
    const own = path === '' ? { all: [], takesValue: [] } : flagsOf(cmd);
    const subs = cmd.commands.map((c) => c.name());
    const choices = cmd.registeredArguments[0]?.argChoices ?? [];
    nodes.push({
      path,
      // commander's `help [command]` is not in program.commands: added here, completing command names.
      words: path === '' ? [...subs, 'help'] : subs.length > 0 ? subs : choices,
      options: [...new Set([...own.all, ...global.all, ...help])],
      takesValue: [...new Set([...own.takesValue, ...global.takesValue])],
    });
    for (const sub of cmd.commands) visit(sub, path === '' ? sub.name() : `${path} ${sub.name()}`);
  };
  visit(program, '');
  nodes.push({ path: 'help', words: program.commands.map((c) => c.name()), options: [], takesValue: [] });
  return nodes;
}

/** Shell words are kvctl's own names: letters, digits and '-'; anything else would need quoting. */
function words(list: readonly string[]): string {
  for (const w of list) {
    if (!/^[A-Za-z0-9-]+$/.test(w)) throw new Error(`kvctl completion: cannot quote ${JSON.stringify(w)}`);
  }
  return list.join(' ');
}

/** The `case` arms shared by both scripts (bash and zsh read the same syntax here); they set subs, opts and takes. */
function specCases(program: Command, indent: string): string {
  const arms = completionNodes(program).map(
    (n) =>
      `${indent}'${n.path}') subs='${words(n.words)}'; opts='${words(n.options)}'; takes=' ${words(n.takesValue)} ' ;;`,
  );
  return arms.join('\n');
}

function valueCases(indent: string): string {
  return Object.entries(OPTION_VALUES)
    .map(([opt, vals]) => `${indent}${opt}) values='${words(vals)}' ;;`)
    .join('\n');
}

/**
 * The walk both scripts do: from the words before the cursor, the command path (options and the
 * values of those that take one skipped, positional arguments ignored), then the candidates.
 * `$1` is how the shell indexes its words; the rest is POSIX enough for bash and zsh alike.
 */
function body(program: Command): string {
  return `_kvctl_spec() {
  case "$1" in
${specCases(program, '    ')}
    *) subs=''; opts=''; takes=' ' ;;
  esac
}

_kvctl_option_values() {
  values=''
  case "$1" in
${valueCases('    ')}
  esac
}`;
}

export function completionScript(shell: Shell, program: Command, version: string): string {
  const header = `# ${shell} completion for kvctl ${version}, generated from its commands by \`kvctl completion ${shell}\`.`;
  if (shell === 'bash') {
    return `${header}
# Load it with:  source <(kvctl completion bash)   (or save it under bash-completion's completions/kvctl)
${body(program)}

_kvctl() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" cmdpath="" next w i subs opts takes values
  (( COMP_CWORD > 0 )) && prev="\${COMP_WORDS[COMP_CWORD-1]}"
  _kvctl_spec ''
  for (( i = 1; i < COMP_CWORD; i++ )); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == "--" ]] && { COMPREPLY=(); return 0; }
    if [[ "$w" == -* ]]; then
      [[ "$w" != *=* && "$takes" == *" $w "* ]] && (( i++ ))
      continue
    fi
    next="\${cmdpath:+$cmdpath }$w"
    case " $subs " in *" $w "*) cmdpath="$next"; _kvctl_spec "$cmdpath" ;; esac
  done
  if [[ "$takes" == *" $prev "* ]]; then
    _kvctl_option_values "$prev"
    if [[ -n "$values" ]]; then COMPREPLY=($(compgen -W "$values" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  fi
  return 0
}
complete -o default -F _kvctl kvctl
`;
  }
  return `#compdef kvctl
${header}
# Load it with:  source <(kvctl completion zsh)   after compinit (or save it as _kvctl on $fpath)
${body(program)}

_kvctl() {
  # words and CURRENT are zsh's: the command line and the index of the word being completed.
  local cur="\${words[CURRENT]}" prev="" cmdpath="" next w i subs opts takes values
  (( CURRENT > 1 )) && prev="\${words[CURRENT-1]}"
  _kvctl_spec ''
  for (( i = 2; i < CURRENT; i++ )); do
    w="\${words[i]}"
    [[ "$w" == "--" ]] && return 0
    if [[ "$w" == -* ]]; then
      [[ "$w" != *=* && "$takes" == *" $w "* ]] && (( i++ ))
      continue
    fi
    next="\${cmdpath:+$cmdpath }$w"
    case " $subs " in *" $w "*) cmdpath="$next"; _kvctl_spec "$cmdpath" ;; esac
  done
  if [[ "$takes" == *" $prev "* ]]; then
    _kvctl_option_values "$prev"
    if [[ -n "$values" ]]; then compadd -- \${=values}; else _files; fi
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    compadd -- \${=opts}
  else
    compadd -- \${=subs}
  fi
}

if [[ "\${funcstack[1]}" == "_kvctl" ]]; then
  _kvctl "$@"
else
  compdef _kvctl kvctl
fi
`;
}
