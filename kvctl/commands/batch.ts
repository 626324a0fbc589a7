import fs from 'node:fs';
import type { Command } from 'commander';
import type { BatchOperation, BatchResult, KeyValueStoreClient } from '../../client';
import { UsageError } from '../../common/cli-options';
import { dataTarget, withGatewayClient, type DataTarget } from '../data-target';
import { EXIT_FAILURE, EXIT_OK, printUsageError, type KvctlIo } from '../io';
import { globalValues, kvctlCommand, type CommandSetup } from '../options';
import { BATCH_USAGE } from '../usage';

/**
 * `kvctl batch [FILE]`: operations as JSON lines from FILE or stdin ('-' or nothing), e.g.
 *   {"op":"put","key":"a","value":"text","ttl":60,"contentType":"text/plain"}
 *   {"op":"put","key":"b","valueBase64":"AAEC"}
 *   {"op":"get","key":"a"}
 *   {"op":"delete","key":"b"}
 * sent 1000 to a request (POST /v1/batch); prints one result a line, in order.
 */

export interface BatchArgs extends DataTarget {
  /** undefined or '-': stdin */
  readonly file?: string;
}

/** The gateway's limit of operations per request: longer inputs go in several. */
const PER_REQUEST = 1000;

export function batchCommand(setup: CommandSetup<BatchArgs>): Command {
  return kvctlCommand('batch', BATCH_USAGE, setup.sink)
    .argument('[file]')
    .action((file: string | undefined, _opts: unknown, cmd: Command) =>
      setup.accept({ ...dataTarget(globalValues(cmd), setup.env), ...(file === undefined ? {} : { file }) }),
    );
}

/** One input line as an operation; a UsageError naming the line when it is not one. */
export function parseBatchLine(text: string, line: number): BatchOperation {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`line ${line}: not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    throw new UsageError(`line ${line}: not a JSON object`);
  const r = o as Record<string, unknown>;
  if (typeof r.key !== 'string') throw new UsageError(`line ${line}: key must be a string`);
  const allowed: Record<string, readonly string[]> = {
    get: ['op', 'key'],
    delete: ['op', 'key'],
    put: ['op', 'key', 'value', 'valueBase64', 'ttl', 'contentType'],
  };
  const fields = typeof r.op === 'string' ? allowed[r.op] : undefined;
  if (!fields) throw new UsageError(`line ${line}: op must be "get", "put" or "delete"`);
  const unknown = Object.keys(r).find((k) => !fields.includes(k));
  if (unknown !== undefined) throw new UsageError(`line ${line}: unknown field ${JSON.stringify(unknown)}`);
  if (r.op !== 'put') return { op: r.op as 'get' | 'delete', key: r.key };
  if ((r.value === undefined) === (r.valueBase64 === undefined))
    throw new UsageError(`line ${line}: a put needs value (text) or valueBase64, not both`);
  if (r.value !== undefined && typeof r.value !== 'string')
    throw new UsageError(`line ${line}: value must be a string`);
  if (r.valueBase64 !== undefined && typeof r.valueBase64 !== 'string')
    throw new UsageError(`line ${line}: valueBase64 must be a string`);
  if (r.ttl !== undefined && (typeof r.ttl !== 'number' || !Number.isInteger(r.ttl) || r.ttl < 1))
    throw new UsageError(`line ${line}: ttl must be a whole number of seconds >= 1`);
  if (r.contentType !== undefined && typeof r.contentType !== 'string')
    throw new UsageError(`line ${line}: contentType must be a string`);
  return {
    op: 'put',
    key: r.key,
    value: typeof r.value === 'string' ? r.value : Buffer.from(r.valueBase64 as string, 'base64'),
    ...(r.ttl === undefined ? {} : { ttlSeconds: r.ttl as number }),
    ...(r.contentType === undefined ? {} : { contentType: r.contentType as string }),
  };
}

export async function runBatch(args: BatchArgs, io: KvctlIo): Promise<number> {
  // The input is read and checked whole before anything is sent: a bad line changes nothing.
  let operations: BatchOperation[];
  try {
    const text =
      args.file === undefined || args.file === '-'
        ? (await readAll(io.stdin ?? process.stdin)).toString('utf8')
        : readFile(args.file);
    operations = text
      .split('\n')
      .map((l, i) => [l.trim(), i + 1] as const)
      .filter(([l]) => l !== '')
      .map(([l, n]) => parseBatchLine(l, n));
    if (operations.length === 0) throw new UsageError('no operations in the input');
  } catch (err) {
    if (err instanceof UsageError) return printUsageError(err, 'kvctl batch --help', io.stderr);
    throw err;
  }
  return withGatewayClient(args, io, async (client) => {
    const failed = await sendAll(client, operations, (r, i) =>
      io.stdout.write(`${format(r, i, args.json)}\n`),
    );
    return failed > 0 ? EXIT_FAILURE : EXIT_OK;
  });
}

async function sendAll(
  client: KeyValueStoreClient,
  operations: readonly BatchOperation[],
  print: (r: BatchResult, index: number) => void,
): Promise<number> {
  let failed = 0;
  for (let from = 0; from < operations.length; from += PER_REQUEST) {
    const results = await client.batch(operations.slice(from, from + PER_REQUEST));
    for (const [i, r] of results.entries()) {
      // A get of an absent key is an answer, not a failure.
      if (r.status >= 400 && !(r.status === 404 && operations[from + i]?.op === 'get')) failed++;
      print(r, from + i);
    }
  }
  return failed;
}

function format(r: BatchResult, index: number, json: boolean | undefined): string {
  if (json) {
    const { value, ...rest } = r;
    return JSON.stringify({
      index,
      ...rest,
      ...(value === undefined ? {} : { valueBase64: value.toString('base64') }),
    });
  }
  const what = r.error
    ? `${r.error.code}: ${r.error.message}`
    : r.value !== undefined
      ? JSON.stringify(r.value.toString('utf8'))
      : (r.version ?? '');
  return `${index}\t${r.status}\t${r.key ?? ''}\t${what}`;
}

function readFile(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

async function readAll(stdin: AsyncIterable<string | Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stdin)
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk));
  return Buffer.concat(chunks);
}
