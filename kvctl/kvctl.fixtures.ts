import type { Env } from './io';
import { parseKvctlArgs, type CommandArgs, type Invocation } from './main';

/** Test helpers: a command line to the command it names, or to its parsed arguments. */

export function commandOf(argv: readonly string[], env: Env = {}): Invocation['command'] {
  return parseKvctlArgs(argv, env).command;
}

/** The arguments `argv` parses to, which must be a `command` command line. */
export function argsOf<C extends keyof CommandArgs>(
  command: C,
  argv: readonly string[],
  env: Env = {},
): CommandArgs[C] {
  const inv: Invocation = parseKvctlArgs(argv, env);
  if (inv.command !== command || !('args' in inv)) {
    throw new Error(`${JSON.stringify(argv)} is a ${inv.command} command line, not ${command}`);
  }
  // The check above makes inv the member for C; TypeScript does not narrow a union by a generic.
  return inv.args as CommandArgs[C];
}
