import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * True when kvctl's command line names `command` (options may come before or after it).
 * Non-strict: other commands' options are unknown to the caller; those that take a
 * value must be in `options` so their value is not mistaken for the command.
 */
export function namesCommand(
  argv: readonly string[],
  command: string,
  options: NonNullable<ParseArgsConfig['options']>,
): boolean {
  const { positionals } = parseArgs({
    args: [...argv],
    options: { ...options, ttl: { type: 'string' } },
    allowPositionals: true,
    strict: false,
  });
  return positionals[0] === command;
}
