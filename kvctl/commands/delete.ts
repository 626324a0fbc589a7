import type { Command } from 'commander';
import { withGatewayClient } from '../data-target';
import { EXIT_OK, type KvctlIo } from '../io';
import type { CommandSetup } from '../options';
import { DELETE_USAGE } from '../usage';
import { keyCommand, type KeyArgs } from './get';

/** `kvctl delete <key>`: deletes a key (absent is fine), prints the tombstone's version. */

export function deleteCommand(setup: CommandSetup<KeyArgs>): Command {
  return keyCommand('delete', DELETE_USAGE, setup);
}

export function runDelete(args: KeyArgs, io: KvctlIo): Promise<number> {
  return withGatewayClient(args, io, async (client) => {
    const res = await client.deleteEntry(args.key);
    io.stdout.write(
      args.json ? `${JSON.stringify({ key: args.key, version: res.version })}\n` : `${res.version}\n`,
    );
    return EXIT_OK;
  });
}
