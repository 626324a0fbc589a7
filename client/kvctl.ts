#!/usr/bin/env node
import { parseArgs } from 'node:util';
import {
  CONSISTENCY_LEVELS,
  KeyValueStoreClient,
  KvClientError,
  isConsistency,
  type ClusterInfo,
  type Consistency,
} from './index';
import { caFileOption, DEFAULT_GATEWAY_URL, loadCaOrExit } from './kvctl-command';
import { isAuthCommand, runAuth } from './auth-command';
import { isRepairCommand, runRepair } from './repair-command';
import { isScaleCommand, runScale } from './scale-command';
import { isStatusCommand, runStatus } from './status-command';
import { isVerifyCommand, runVerify } from './verify-command';

export const DEFAULT_URL = DEFAULT_GATEWAY_URL;

export const USAGE = `usage: kvctl [--url URL] [--consistency one|quorum|all] [--token TOKEN] [--ca FILE] <command> [args]

commands:
  put <key> <value> [--ttl SECONDS]  store a value ('-' reads it from stdin as bytes); prints the version
  get <key>                          write the value's bytes to stdout; exit 1 when the key is absent
  delete <key>                       delete a key (absent is fine); prints the version
  cluster [--json]                   show the partition map: nodes, replicas, moves in progress
  status [--watch] [--json]          nodes with state, keys, bytes; under-replicated partitions; moves
                                     (kvctl status --help); exit 1 when the cluster is degraded
  verify [--duration 60s] [--clients N] [--keys K]  run writers and readers, check no acknowledged write is lost
                                     (kvctl verify --help); exit 1 when it finds violations
  repair [--partition P] [--watch]   start anti-entropy on every node; --watch follows it to the end
                                     (kvctl repair --help)
  scale --nodes N [--wait]           grow or shrink the npm start cluster to N nodes, moving partitions live
                                     (kvctl scale --help; talks to the launcher, --admin-url, default :3100)
  auth create-key --id ID --role R [--prefix P]  make an API key: prints its token once and the
                                     entry for the gateway's key file (kvctl auth --help)
  help                               show this help

options:
  --url URL            gateway URL (default: $KVSTORE_URL, else ${DEFAULT_URL})
  --consistency LEVEL  one, quorum or all (default: the gateway's, quorum)
  --token TOKEN        bearer token (default: $KVSTORE_TOKEN)
  --ca FILE            PEM CA certificate(s) to trust for an https URL, instead of the system's
                       (default: $KVSTORE_CA); every command
  --ttl SECONDS        put: the value expires after SECONDS
  --json               cluster: print the JSON instead of a summary
  -h, --help           show this help

A key or value that starts with '-' goes after '--', e.g.  kvctl put -- -key -value

exit status: 0 ok, 1 key not found (get), 2 usage error, 3 server or network error`;

/** Where kvctl reads and writes; process streams when run as a command, buffers in tests. */
export interface KvctlIo {
  stdout: { write(chunk: string | Uint8Array): unknown; isTTY?: boolean };
  stderr: { write(chunk: string): unknown };
  stdin: AsyncIterable<string | Uint8Array>;
  /** Defaults to process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

export const EXIT_OK = 0;
export const EXIT_NOT_FOUND = 1;
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 3;

/** A command line that cannot be run: exit status 2, nothing sent. */
export class KvctlUsageError extends Error {
  override readonly name = 'KvctlUsageError';
}

type Command =
  | { name: 'help' }
  | { name: 'put'; key: string; value: string; ttlSeconds?: number }
  | { name: 'get'; key: string }
  | { name: 'delete'; key: string }
  | { name: 'cluster'; json: boolean };

export interface ParsedArgs {
  url: string;
  consistency?: Consistency;
  token?: string;
  /** PEM CA file to trust for an https URL (--ca, $KVSTORE_CA) */
  caFile?: string;
  command: Command;
}

/** Parses the command line; throws KvctlUsageError with a one-line message. Pure: no I/O. */
export function parseKvctlArgs(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ParsedArgs {
  let values: {
    url?: string;
    consistency?: string;
    token?: string;
    ca?: string;
    ttl?: string;
    json?: boolean;
    help?: boolean;
  };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      options: {
        url: { type: 'string' },
        consistency: { type: 'string' },
        token: { type: 'string' },
        ca: { type: 'string' },
        ttl: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new KvctlUsageError(parseArgsMessage(err));
  }

  const url = values.url ?? (env.KVSTORE_URL || DEFAULT_URL);
  if (values.consistency !== undefined && !isConsistency(values.consistency)) {
    throw new KvctlUsageError(
      `--consistency must be one of ${CONSISTENCY_LEVELS.join(', ')}, got ${JSON.stringify(values.consistency)}`,
    );
  }
  const consistency = values.consistency;
  const token = values.token ?? (env.KVSTORE_TOKEN || undefined);
  const caFile = caFileOption(values, env);
  const base = { url, consistency, token, ...(caFile ? { caFile } : {}) };

  const [name, ...args] = positionals;
  if (values.help || name === 'help') return { ...base, command: { name: 'help' } };
  if (name === undefined) throw new KvctlUsageError('missing command');

  const onlyFor = (flag: string, set: boolean, cmd: string): void => {
    if (set && name !== cmd) throw new KvctlUsageError(`--${flag} applies only to ${cmd}`);
  };
  onlyFor('ttl', values.ttl !== undefined, 'put');
  onlyFor('json', values.json === true, 'cluster');

  const arity = (n: number, what: string): void => {
    if (args.length < n) throw new KvctlUsageError(`${name}: missing ${what}`);
    if (args.length > n) {
      const got = `${args.length} argument${args.length === 1 ? '' : 's'}`;
      const hint = name === 'put' ? ' (quote a value that has spaces)' : '';
      throw new KvctlUsageError(`${name} takes ${what}, got ${got}${hint}`);
    }
  };

  switch (name) {
    case 'put': {
      arity(2, '<key> <value>');
      const command: Command = { name, key: args[0], value: args[1] };
      if (values.ttl !== undefined) {
        if (!/^\d{1,10}$/.test(values.ttl) || Number(values.ttl) < 1) {
          throw new KvctlUsageError(
            `--ttl must be a whole number of seconds >= 1, got ${JSON.stringify(values.ttl)}`,
          );
        }
        command.ttlSeconds = Number(values.ttl);
      }
      return { ...base, command };
    }
    case 'get':
    case 'delete':
      arity(1, '<key>');
      return { ...base, command: { name, key: args[0] } };
    case 'cluster':
      arity(0, 'no arguments');
      return { ...base, command: { name, json: values.json === true } };
    default:
      throw new KvctlUsageError(`unknown command ${JSON.stringify(name)}`);
  }
}

/** parseArgs's messages, minus the error-class prefix some Node versions put in them, in kvctl's words. */
function parseArgsMessage(err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err);
  const message = raw.replace(/^\w*Error \[ERR_[A-Z_]+\]: /, '');
  const unknown = /^Unknown option '([^']+)'/.exec(message);
  if (unknown) return `unknown option ${unknown[1]} (a key or value that starts with '-' goes after '--')`;
  return message;
}

/** Runs one kvctl invocation and returns its exit status; never throws, never exits the process. */
export async function runKvctl(argv: readonly string[], io: KvctlIo): Promise<number> {
  if (isVerifyCommand(argv)) return runVerify(argv, io);
  if (isRepairCommand(argv)) return runRepair(argv, io);
  if (isStatusCommand(argv)) return runStatus(argv, io);
  if (isScaleCommand(argv)) return runScale(argv, io);
  if (isAuthCommand(argv)) return runAuth(argv, io);
  const fail = (code: string, message: string, status: number): number => {
    io.stderr.write(`kvctl: ${code}: ${message}\n`);
    return status;
  };

  let parsed: ParsedArgs;
  try {
    parsed = parseKvctlArgs(argv, io.env ?? process.env);
  } catch (err) {
    if (!(err instanceof KvctlUsageError)) throw err;
    io.stderr.write(`kvctl: usage: ${err.message}\nRun 'kvctl --help' for usage.\n`);
    return EXIT_USAGE;
  }
  const { command } = parsed;
  if (command.name === 'help') {
    io.stdout.write(`${USAGE}\n`);
    return EXIT_OK;
  }

  const loaded = loadCaOrExit(parsed.caFile, 'kvctl --help', io.stderr);
  if ('exit' in loaded) return loaded.exit;
  try {
    const client = new KeyValueStoreClient({
      url: parsed.url,
      consistency: parsed.consistency,
      token: parsed.token,
      ca: loaded.ca,
    });
    switch (command.name) {
      case 'put': {
        const value = command.value === '-' ? await readAll(io.stdin) : command.value;
        const res = await client.putEntry(command.key, value, { ttlSeconds: command.ttlSeconds });
        io.stdout.write(`${res.version}\n`);
        return EXIT_OK;
      }
      case 'get': {
        const value = await client.getBytes(command.key);
        if (value === null)
          return fail('not_found', `key ${JSON.stringify(command.key)} not found`, EXIT_NOT_FOUND);
        io.stdout.write(value);
        // Exact bytes for pipes and files; a newline only so a terminal prompt does not glue onto the value.
        if (io.stdout.isTTY) io.stdout.write('\n');
        return EXIT_OK;
      }
      case 'delete': {
        const res = await client.deleteEntry(command.key);
        io.stdout.write(`${res.version}\n`);
        return EXIT_OK;
      }
      case 'cluster': {
        const info = await client.cluster();
        io.stdout.write(command.json ? `${JSON.stringify(info, null, 2)}\n` : formatCluster(info));
        return EXIT_OK;
      }
    }
  } catch (err) {
    if (err instanceof KvClientError) {
      // Refused by the client before anything was sent (bad key, bad url): the command line is at fault.
      const local = err.status === undefined && err.code === 'bad_request';
      return fail(err.code, err.message, local ? EXIT_USAGE : EXIT_FAILURE);
    }
    return fail('internal', err instanceof Error ? err.message : String(err), EXIT_FAILURE);
  }
}

async function readAll(stdin: AsyncIterable<string | Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stdin)
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** Moves listed in the summary; the rest are counted (all of them are in --json). */
const MAX_MOVES_SHOWN = 20;

/** A readable summary of GET /v1/cluster, for people; scripts use --json. */
export function formatCluster(info: ClusterInfo): string {
  const down = info.nodes.filter((n) => n.status === 'down').length;
  const underReplicated = info.partitions.filter((owners) => owners.length < info.replicationFactor).length;
  const lines = [
    `cluster      ${info.cluster}`,
    `epoch        ${info.epoch}`,
    `replication  ${info.replicationFactor} replicas per partition`,
    `partitions   ${info.partitionCount}${underReplicated ? ` (${underReplicated} with fewer than ${info.replicationFactor} replicas)` : ''}`,
    `nodes        ${info.nodes.length}${down ? ` (${down} down)` : ''}`,
    '',
    ...table([
      ['NODE', 'ADDRESS', 'ZONE', 'STATUS', 'REPLICAS'],
      ...info.nodes.map((n) => [n.id, n.address, n.zone ?? '-', n.status, String(n.partitions)]),
    ]),
    '',
  ];
  if (info.moves.length === 0) {
    lines.push('moves in progress: none');
  } else {
    lines.push(`moves in progress: ${info.moves.length}`);
    const shown = info.moves.slice(0, MAX_MOVES_SHOWN);
    lines.push(
      ...table([['PARTITION', 'FROM', 'TO'], ...shown.map((m) => [String(m.partition), m.from, m.to])]).map(
        (l) => `  ${l}`,
      ),
    );
    if (info.moves.length > shown.length) {
      lines.push(`  ... and ${info.moves.length - shown.length} more (--json lists all)`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
}

if (require.main === module) {
  // `kvctl get k | head -c 10` closes the pipe early; that is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT_OK);
    throw err;
  });
  runKvctl(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
  }).then(
    (code) => {
      // exitCode, not exit(): lets a large value finish flushing to a pipe.
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(
        `kvctl: internal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exitCode = EXIT_FAILURE;
    },
  );
}
