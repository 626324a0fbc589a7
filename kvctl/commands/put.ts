import type { Command } from 'commander';
import { UsageError } from '../../common/cli-options';
import { dataTarget, withGatewayClient, type DataTarget } from '../data-target';
import { EXIT_OK, type KvctlIo } from '../io';
import { globalValues, kvctlCommand, type CommandSetup } from '../options';
import { PUT_USAGE } from '../usage';

/** `kvctl put <key> <value> [--ttl SECONDS] [--content-type TYPE]`: stores a value ('-' reads it from stdin as bytes), prints its version. */

export interface PutArgs extends DataTarget {
  readonly key: string;
  readonly value: string;
  readonly ttlSeconds?: number;
  readonly contentType?: string;
}

export function putCommand(setup: CommandSetup<PutArgs>): Command {
  return kvctlCommand('put', PUT_USAGE, setup.sink)
    .argument('<key>')
    .argument('<value>')
    .option('--ttl <seconds>', 'the value expires after SECONDS')
    .option('--content-type <type>', 'kept with the value and given back by GET')
    .action((key: string, value: string, opts: { ttl?: string; contentType?: string }, cmd: Command) => {
      const ttlSeconds = opts.ttl === undefined ? undefined : ttlOption(opts.ttl);
      setup.accept({
        ...dataTarget(globalValues(cmd), setup.env),
        key,
        value,
        ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
        ...(opts.contentType !== undefined ? { contentType: opts.contentType } : {}),
      });
    });
}

function ttlOption(raw: string): number {
  if (!/^\d{1,10}$/.test(raw) || Number(raw) < 1) {
    throw new UsageError(`--ttl must be a whole number of seconds >= 1, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

export function runPut(args: PutArgs, io: KvctlIo): Promise<number> {
  return withGatewayClient(args, io, async (client) => {
    const value = args.value === '-' ? await readAll(io.stdin ?? process.stdin) : args.value;
    const res = await client.putEntry(args.key, value, {
      ...(args.ttlSeconds !== undefined ? { ttlSeconds: args.ttlSeconds } : {}),
      ...(args.contentType !== undefined ? { contentType: args.contentType } : {}),
    });
    io.stdout.write(
      args.json ? `${JSON.stringify({ key: args.key, version: res.version })}\n` : `${res.version}\n`,
    );
    return EXIT_OK;
  });
}

async function readAll(stdin: AsyncIterable<string | Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stdin)
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk));
  return Buffer.concat(chunks);
}
