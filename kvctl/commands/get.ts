import type { Command } from 'commander';
import { dataTarget, withGatewayClient, type DataTarget } from '../data-target';
import { EXIT_NOT_FOUND, EXIT_OK, type KvctlIo } from '../io';
import { globalValues, kvctlCommand, type CommandSetup } from '../options';
import { GET_USAGE } from '../usage';

/** `kvctl get <key>`: writes the value's bytes to stdout; exit 1 when the key is absent. */

export interface KeyArgs extends DataTarget {
  readonly key: string;
}

/** A command whose one argument is a key: get, delete. */
export function keyCommand(name: string, usage: string, setup: CommandSetup<KeyArgs>): Command {
  return kvctlCommand(name, usage, setup.sink)
    .argument('<key>')
    .action((key: string, _opts: unknown, cmd: Command) =>
      setup.accept({ ...dataTarget(globalValues(cmd), setup.env), key }),
    );
}

export function getCommand(setup: CommandSetup<KeyArgs>): Command {
  return keyCommand('get', GET_USAGE, setup);
}

export function runGet(args: KeyArgs, io: KvctlIo): Promise<number> {
  return withGatewayClient(args, io, async (client) => {
    const entry = await client.getEntry(args.key);
    if (entry === null) {
      io.stderr.write(`kvctl: not_found: key ${JSON.stringify(args.key)} not found\n`);
      return EXIT_NOT_FOUND;
    }
    if (args.json) {
      io.stdout.write(
        `${JSON.stringify({ key: args.key, version: entry.version, ...jsonValue(entry.value) })}\n`,
      );
      return EXIT_OK;
    }
    const value = entry.value;
    io.stdout.write(value);
    // Exact bytes for pipes and files; a newline only so a terminal prompt does not glue onto the value.
    if (io.stdout.isTTY) io.stdout.write('\n');
    return EXIT_OK;
  });
}

/** The value as JSON can carry it: text when it is UTF-8, else base64 (JSON strings are not bytes). */
export function jsonValue(value: Buffer): { value: string } | { valueBase64: string } {
  const text = value.toString('utf8');
  return Buffer.from(text, 'utf8').equals(value)
    ? { value: text }
    : { valueBase64: value.toString('base64') };
}
