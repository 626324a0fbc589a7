import { KeyValueStoreClient, KvClientError, type RebalanceStatus, type ScaleResult } from './index';
import {
  COMMAND_EXIT_FAILURE,
  COMMAND_EXIT_USAGE,
  GLOBAL_OPTIONS,
  caFileOption,
  loadCaOrExit,
  namesCommand,
  parseCommandArgs,
  parseInterval,
  reportFailure,
  type CommandIo,
} from './kvctl-command';
import { formatRebalanceLine, rebalanceRates, type StreamSample } from './status-command';

/**
 * `kvctl scale`: asks the map owner to grow or shrink the cluster. On one
 * machine that is the `npm start` launcher's admin listener (port + 100), the
 * local stand-in for `kubectl scale kvcluster/x`: it starts the new nodes,
 * records the plan in the partition map, and the rebalancer moves the
 * partitions while the cluster keeps serving. `--wait` follows it to the end.
 */

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:3100';

export const SCALE_USAGE = `usage: kvctl scale --nodes N [--admin-url URL] [--ca FILE] [--wait] [--interval 1s]

Grows or shrinks the cluster that npm start runs to N storage nodes. The launcher starts the new nodes,
plans which partitions move, and streams them while the cluster keeps serving; nodes that leave are
drained first and stopped once they hold nothing. A scale while a rebalance is under way re-plans it.

options:
  --nodes N        storage nodes wanted: from the replication factor to 64
  --admin-url URL  the launcher's admin listener (default: $KVSTORE_ADMIN_URL, else ${DEFAULT_ADMIN_URL};
                   npm start -- --port P listens on P+100)
  --ca FILE        PEM CA certificate(s) to trust when the admin URL is https (default: $KVSTORE_CA)
  --wait           follow the rebalance until every partition has moved
  --interval D     with --wait: time between polls, e.g. 500ms or 2s (default 1s)

exit status: 0 planned (with --wait: finished), 2 usage error or a target the launcher refuses (e.g.
             fewer nodes than the replication factor), 3 the launcher could not be reached or failed`;

export const SCALE_EXIT_OK = 0;
export const SCALE_EXIT_USAGE = COMMAND_EXIT_USAGE;
export const SCALE_EXIT_FAILURE = COMMAND_EXIT_FAILURE;

/** With --wait, polls that may fail in a row (a launcher restarting: it adopts the nodes) before giving up. */
const MAX_POLL_FAILURES = 30;

export type ScaleIo = CommandIo;

export class ScaleUsageError extends Error {
  override readonly name = 'ScaleUsageError';
}

export interface ScaleArgs {
  readonly adminUrl: string;
  /** PEM CA file to trust for an https admin URL (--ca, $KVSTORE_CA) */
  readonly caFile?: string;
  /** sent as Bearer: the launcher run with --auth-file needs an admin key (--token, $KVSTORE_TOKEN) */
  readonly token?: string;
  /** undefined only with --help */
  readonly nodes?: number;
  readonly wait: boolean;
  readonly intervalMs: number;
  readonly help: boolean;
}

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  nodes: { type: 'string' },
  'admin-url': { type: 'string' },
  wait: { type: 'boolean' },
  interval: { type: 'string' },
} as const;

/** True when kvctl's command line names the scale command. */
export function isScaleCommand(argv: readonly string[]): boolean {
  return namesCommand(argv, 'scale', OPTIONS);
}

/** Parses `kvctl ... scale ...`; throws ScaleUsageError. Pure. */
export function parseScaleArgs(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ScaleArgs {
  const usage = (message: string): Error => new ScaleUsageError(message);
  const values = parseCommandArgs(argv, 'scale', OPTIONS, usage);
  const help = values.help === true;
  let nodes: number | undefined;
  if (values.nodes === undefined) {
    if (!help) throw usage('--nodes N is required');
  } else if (!/^\d{1,3}$/.test(values.nodes) || Number(values.nodes) < 1 || Number(values.nodes) > 64) {
    throw usage(`--nodes takes a whole number from 1 to 64, got ${JSON.stringify(values.nodes)}`);
  } else {
    nodes = Number(values.nodes);
  }
  if (values.interval !== undefined && !values.wait) throw usage('--interval needs --wait');
  const caFile = caFileOption(values, env);
  const token = values.token ?? (env.KVSTORE_TOKEN || undefined);
  return {
    adminUrl: values['admin-url'] ?? (env.KVSTORE_ADMIN_URL || DEFAULT_ADMIN_URL),
    ...(caFile ? { caFile } : {}),
    ...(token ? { token } : {}),
    ...(nodes !== undefined ? { nodes } : {}),
    wait: values.wait === true,
    intervalMs: values.interval === undefined ? 1000 : parseInterval(values.interval, 50, 3_600_000, usage),
    help,
  };
}

export interface ScaleRunOptions {
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/** Runs `kvctl scale`; returns the exit status, never throws. */
export async function runScale(
  argv: readonly string[],
  io: ScaleIo,
  opts: ScaleRunOptions = {},
): Promise<number> {
  let args: ScaleArgs;
  try {
    args = parseScaleArgs(argv, io.env ?? process.env);
  } catch (err) {
    if (!(err instanceof ScaleUsageError)) throw err;
    io.stderr.write(`kvctl: usage: ${err.message}\nRun 'kvctl scale --help' for usage.\n`);
    return SCALE_EXIT_USAGE;
  }
  if (args.help || args.nodes === undefined) {
    io.stdout.write(`${SCALE_USAGE}\n`);
    return SCALE_EXIT_OK;
  }
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = opts.now ?? Date.now;
  const loaded = loadCaOrExit(args.caFile, 'kvctl scale --help', io.stderr);
  if ('exit' in loaded) return loaded.exit;
  let client: KeyValueStoreClient;
  let planned: ScaleResult;
  try {
    client = new KeyValueStoreClient({ url: args.adminUrl, ca: loaded.ca, token: args.token });
    planned = await client.scale(args.nodes);
  } catch (err) {
    // The launcher refused the target as asked (e.g. below the replication factor): the command line's fault.
    if (err instanceof KvClientError && err.status === 400) {
      io.stderr.write(`kvctl: ${err.code}: ${err.message}\n`);
      return SCALE_EXIT_USAGE;
    }
    return reportFailure(err, io.stderr);
  }
  io.stdout.write(formatPlan(planned, args.nodes));
  if (!args.wait || !planned.active) return SCALE_EXIT_OK;

  const startedAt = now();
  const tty = io.stdout.isTTY === true;
  let prev: StreamSample | undefined;
  let failures = 0;
  let status: RebalanceStatus = planned;
  let total = planned.movesTotal;
  for (;;) {
    await sleep(args.intervalMs);
    try {
      status = await client.rebalanceStatus();
      failures = 0;
    } catch (err) {
      if (++failures >= MAX_POLL_FAILURES) {
        if (tty) io.stdout.write('\n');
        return reportFailure(err, io.stderr);
      }
      continue;
    }
    const at = now();
    total = Math.max(total, status.movesTotal);
    // Once done the map no longer records the plan: show it complete rather than 0/0.
    const shown = status.active ? status : { ...status, movesTotal: total, movesDone: total, movesLeft: 0 };
    const line = formatRebalanceLine(shown, rebalanceRates(shown, at, prev));
    prev = { at, bytesStreamed: status.bytesStreamed };
    // On a terminal the line is redrawn in place; in a log, one line per poll.
    io.stdout.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
    if (!status.active) break;
  }
  if (tty) io.stdout.write('\n');
  io.stdout.write(
    `rebalance finished in ${((now() - startedAt) / 1000).toFixed(1)}s: ${status.targetNodes.length} nodes (epoch ${status.epoch})\n`,
  );
  return SCALE_EXIT_OK;
}

/** What the launcher planned, for people. */
export function formatPlan(r: ScaleResult, nodes: number): string {
  const lines: string[] = [];
  if (!r.active) {
    lines.push(
      r.addedNodes.length > 0 || r.drainingNodes.length > 0
        ? `the cluster has ${nodes} nodes now: no partition had to move`
        : `nothing to do: the cluster already has ${nodes} nodes`,
    );
    return `${lines.join('\n')}\n`;
  }
  lines.push(`scaling to ${nodes} nodes (epoch ${r.epoch}): ${r.movesTotal} partition moves planned`);
  if (r.addedNodes.length > 0) lines.push(`  added:    ${r.addedNodes.join(', ')} (started, ready)`);
  if (r.drainingNodes.length > 0)
    lines.push(`  draining: ${r.drainingNodes.join(', ')} (stopped once they hold nothing)`);
  const into = new Map<string, number>();
  const outOf = new Map<string, number>();
  for (const m of r.moves) {
    into.set(m.to, (into.get(m.to) ?? 0) + 1);
    outOf.set(m.from, (outOf.get(m.from) ?? 0) + 1);
  }
  const ids = [...new Set([...into.keys(), ...outOf.keys()])].sort(byOrdinal);
  if (ids.length > 0) {
    lines.push(
      `  per node: ${ids.map((id) => `${id} +${into.get(id) ?? 0}/-${outOf.get(id) ?? 0}`).join(', ')}`,
    );
  }
  lines.push(`follow it: kvctl status --watch (gateway), or kvctl scale --nodes ${nodes} --wait`);
  return `${lines.join('\n')}\n`;
}

/** n2 before n10. */
function byOrdinal(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}
