import { parseArgs } from 'node:util';
import {
  KeyValueStoreClient,
  KvClientError,
  type ClusterInfo,
  type NodeRepairReport,
  type RepairReport,
} from './client';
import { namesCommand } from './kvctl-command';

/**
 * `kvctl status`: one screen that says whether the cluster is healthy, from the
 * gateway alone: the map (`GET /v1/cluster`: nodes, replicas, moves) joined with
 * each node's own answer (`GET /v1/admin/repair`: ready, keys, bytes, hints,
 * repair progress). `--watch` redraws it until interrupted.
 */

export const STATUS_USAGE = `usage: kvctl status [--url URL] [--token TOKEN] [--watch] [--interval 2s] [--json]

Shows the cluster as the gateway sees it: every node with its state, keys, bytes, hints and repair
progress; partitions whose replicas are not all up (under-replicated) and those left with fewer than a
quorum; moves in progress.

options:
  --watch         redraw every --interval until interrupted (Ctrl-C)
  --interval D    with --watch: time between refreshes, e.g. 500ms or 5s (default 2s)
  --json          print the joined data as JSON instead of the view (with --watch: one line per refresh)

exit status: 0 healthy, 1 degraded (a node down or not ready, or a partition under-replicated),
             2 usage error, 3 the gateway could not be reached`;

export const STATUS_EXIT_OK = 0;
export const STATUS_EXIT_DEGRADED = 1;
export const STATUS_EXIT_USAGE = 2;
export const STATUS_EXIT_FAILURE = 3;

const DEFAULT_URL = 'http://127.0.0.1:3000';
/** Partition numbers listed per group; the rest are counted (all of them are in --json). */
const MAX_PARTITIONS_SHOWN = 16;
const MAX_MOVES_SHOWN = 20;
const BAR_WIDTH = 20;

export interface StatusIo {
  stdout: { write(chunk: string): unknown; isTTY?: boolean };
  stderr: { write(chunk: string): unknown };
  env?: Readonly<Record<string, string | undefined>>;
}

export class StatusUsageError extends Error {
  override readonly name = 'StatusUsageError';
}

export interface StatusArgs {
  readonly url: string;
  readonly token?: string;
  readonly watch: boolean;
  readonly intervalMs: number;
  readonly json: boolean;
  readonly help: boolean;
}

const OPTIONS = {
  url: { type: 'string' },
  token: { type: 'string' },
  // kvctl's global option; accepted for symmetry, status reads no keys.
  consistency: { type: 'string' },
  watch: { type: 'boolean' },
  interval: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** True when kvctl's command line names the status command. */
export function isStatusCommand(argv: readonly string[]): boolean {
  return namesCommand(argv, 'status', OPTIONS);
}

/** Parses `kvctl ... status ...`; throws StatusUsageError. Pure. */
export function parseStatusArgs(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): StatusArgs {
  let values: {
    url?: string;
    token?: string;
    consistency?: string;
    watch?: boolean;
    interval?: string;
    json?: boolean;
    help?: boolean;
  };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      options: OPTIONS,
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new StatusUsageError((err instanceof Error ? err.message : String(err)).replace(/^.*?: /, ''));
  }
  if (positionals[0] !== 'status') throw new StatusUsageError('not a status command line');
  if (positionals.length > 1) throw new StatusUsageError(`status takes no arguments, got ${positionals[1]}`);
  if (values.interval !== undefined && !values.watch) throw new StatusUsageError('--interval needs --watch');
  return {
    url: values.url ?? (env.KVSTORE_URL || DEFAULT_URL),
    token: values.token ?? (env.KVSTORE_TOKEN || undefined),
    watch: values.watch === true,
    intervalMs: values.interval === undefined ? 2000 : parseInterval(values.interval),
    json: values.json === true,
    help: values.help === true,
  };
}

function parseInterval(text: string): number {
  const m = /^(\d+)(ms|s)?$/.exec(text.trim());
  const ms = m ? Number(m[1]) * (m[2] === 'ms' ? 1 : 1000) : NaN;
  if (!(ms >= 100 && ms <= 3_600_000)) {
    throw new StatusUsageError(`--interval takes a duration from 100ms to 1h, e.g. 500ms or 5s; got ${text}`);
  }
  return ms;
}

/** A node as status shows it: the map's view joined with the node's own answer. */
export type NodeState = 'up' | 'not ready' | 'refilling' | 'down' | 'unreachable';

export interface NodeStatusRow {
  readonly id: string;
  readonly address: string;
  readonly zone?: string;
  readonly state: NodeState;
  /** partition replicas the map gives this node */
  readonly replicas: number;
  readonly keys?: number;
  readonly bytes?: number;
  readonly hints?: number;
  readonly repair?: NodeRepairReport['repair'];
  readonly error?: { readonly code: string; readonly message: string };
}

export interface ClusterStatus {
  readonly cluster: string;
  readonly epoch: number;
  readonly partitionCount: number;
  readonly replicationFactor: number;
  readonly nodes: readonly NodeStatusRow[];
  /** partitions with a replica that is not up (or fewer replicas than the replication factor) */
  readonly underReplicated: readonly number[];
  /** partitions with fewer replicas up than a quorum: quorum reads and writes of their keys fail */
  readonly belowQuorum: readonly number[];
  readonly moves: ClusterInfo['moves'];
}

/** Joins the two gateway answers. Pure, so the view is testable without a cluster. */
export function clusterStatus(info: ClusterInfo, report: RepairReport): ClusterStatus {
  const reports = new Map(report.nodes.map((n) => [n.id, n]));
  const nodes = info.nodes.map((n): NodeStatusRow => {
    const r = reports.get(n.id);
    const state: NodeState =
      !r || r.error
        ? n.status === 'down'
          ? 'down'
          : 'unreachable'
        : r.repair?.refilling
          ? 'refilling'
          : r.ready === false
            ? 'not ready'
            : 'up';
    return {
      id: n.id,
      address: n.address,
      ...(n.zone !== undefined ? { zone: n.zone } : {}),
      state,
      replicas: n.partitions,
      ...(r?.keys !== undefined ? { keys: r.keys } : {}),
      ...(r?.bytes !== undefined ? { bytes: r.bytes } : {}),
      ...(r?.hints !== undefined ? { hints: r.hints } : {}),
      ...(r?.repair ? { repair: r.repair } : {}),
      ...(r?.error ? { error: r.error } : {}),
    };
  });
  const serving = new Set(nodes.filter((n) => n.state === 'up').map((n) => n.id));
  const quorum = Math.floor(info.replicationFactor / 2) + 1;
  const underReplicated: number[] = [];
  const belowQuorum: number[] = [];
  info.partitions.forEach((owners, p) => {
    const up = owners.filter((id) => serving.has(id)).length;
    if (up < info.replicationFactor || up < owners.length) underReplicated.push(p);
    if (up < quorum) belowQuorum.push(p);
  });
  return {
    cluster: info.cluster,
    epoch: info.epoch,
    partitionCount: info.partitionCount,
    replicationFactor: info.replicationFactor,
    nodes,
    underReplicated,
    belowQuorum,
    moves: info.moves,
  };
}

export function isHealthy(s: ClusterStatus): boolean {
  return s.underReplicated.length === 0 && s.nodes.every((n) => n.state === 'up');
}

/** The terminal view. `now` is injected so tests get stable "ago" texts. */
export function formatStatus(s: ClusterStatus, now = Date.now()): string {
  const notUp = s.nodes.filter((n) => n.state !== 'up').length;
  const health = isHealthy(s)
    ? 'healthy'
    : s.belowQuorum.length > 0
      ? 'UNAVAILABLE (below quorum)'
      : 'DEGRADED';
  const sum = (f: (n: NodeStatusRow) => number | undefined): number =>
    s.nodes.reduce((acc, n) => acc + (f(n) ?? 0), 0);
  const lines = [
    `cluster ${s.cluster}   epoch ${s.epoch}   ${health}`,
    `${s.nodes.length} nodes${notUp ? ` (${notUp} not up)` : ''}, ${s.partitionCount} partitions x ${s.replicationFactor} replicas, ` +
      `${sum((n) => n.keys)} records, ${formatBytes(sum((n) => n.bytes))} on disk (all replicas)`,
    '',
    ...table([
      ['NODE', 'ADDRESS', 'STATE', 'REPLICAS', 'KEYS', 'BYTES', 'HINTS', 'REPAIR', 'LAST FULL REPAIR'],
      ...s.nodes.map((n) => [
        n.id,
        n.address,
        n.state,
        String(n.replicas),
        n.keys === undefined ? '-' : String(n.keys),
        n.bytes === undefined ? '-' : formatBytes(n.bytes),
        n.hints === undefined ? '-' : String(n.hints),
        repairCell(n),
        lastRepairCell(n, now),
      ]),
    ]),
  ];
  for (const n of s.nodes) {
    if (n.error) lines.push(`  ${n.id}: ${n.error.code}: ${n.error.message}`);
  }
  lines.push('');
  if (s.underReplicated.length === 0) {
    lines.push('partitions: all replicas up');
  } else {
    lines.push(
      `partitions under-replicated: ${s.underReplicated.length} of ${s.partitionCount} ${partitionList(s.underReplicated)}`,
    );
    if (s.belowQuorum.length > 0) {
      lines.push(
        `  below quorum (quorum reads and writes fail): ${s.belowQuorum.length} ${partitionList(s.belowQuorum)}`,
      );
    }
  }
  if (s.moves.length === 0) {
    lines.push('moves in progress: none');
  } else {
    lines.push(`moves in progress: ${s.moves.length}`);
    const shown = s.moves.slice(0, MAX_MOVES_SHOWN);
    lines.push(
      ...table([['PARTITION', 'FROM', 'TO'], ...shown.map((m) => [String(m.partition), m.from, m.to])]).map(
        (l) => `  ${l}`,
      ),
    );
    if (s.moves.length > shown.length)
      lines.push(`  ... and ${s.moves.length - shown.length} more (--json lists all)`);
  }
  return `${lines.join('\n')}\n`;
}

function repairCell(n: NodeStatusRow): string {
  const r = n.repair;
  if (!r) return '-';
  if (!r.running) return r.partitionsFailed ? `idle (${r.partitionsFailed} failed)` : 'idle';
  const total = Math.max(1, r.partitionsTotal);
  return `${progressBar(r.partitionsDone / total)} ${r.partitionsDone}/${r.partitionsTotal}`;
}

function lastRepairCell(n: NodeStatusRow, now: number): string {
  const at = n.repair?.lastFullRepairAt;
  if (at === undefined) return '-';
  return at > 0 ? `${formatAge(now - at)} ago` : 'never';
}

/** `[########------------]`: a fixed-width bar, ASCII so it survives any terminal and log file. */
export function progressBar(fraction: number, width = BAR_WIDTH): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(f * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

function partitionList(ps: readonly number[]): string {
  const shown = ps.slice(0, MAX_PARTITIONS_SHOWN).join(', ');
  return `(${shown}${ps.length > MAX_PARTITIONS_SHOWN ? `, ... ${ps.length - MAX_PARTITIONS_SHOWN} more` : ''})`;
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

/** ANSI: cursor home and clear screen, so --watch redraws in place on a terminal. */
const CLEAR = '\x1b[H\x1b[2J';

export interface StatusRunOptions {
  sleep?: (ms: number) => Promise<void>;
  /** stops --watch (tests; the command itself runs until Ctrl-C) */
  signal?: AbortSignal;
  now?: () => number;
}

/** Runs `kvctl status`; returns the exit status, never throws. */
export async function runStatus(
  argv: readonly string[],
  io: StatusIo,
  opts: StatusRunOptions = {},
): Promise<number> {
  let args: StatusArgs;
  try {
    args = parseStatusArgs(argv, io.env ?? process.env);
  } catch (err) {
    if (!(err instanceof StatusUsageError)) throw err;
    io.stderr.write(`kvctl: usage: ${err.message}\nRun 'kvctl status --help' for usage.\n`);
    return STATUS_EXIT_USAGE;
  }
  if (args.help) {
    io.stdout.write(`${STATUS_USAGE}\n`);
    return STATUS_EXIT_OK;
  }
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = opts.now ?? Date.now;
  const client = new KeyValueStoreClient({ url: args.url, token: args.token });
  let code: number = STATUS_EXIT_OK;
  for (;;) {
    try {
      const [info, report] = await Promise.all([client.cluster(), client.repairStatus()]);
      const status = clusterStatus(info, report);
      code = isHealthy(status) ? STATUS_EXIT_OK : STATUS_EXIT_DEGRADED;
      if (args.json) {
        io.stdout.write(`${JSON.stringify(status, null, args.watch ? undefined : 2)}\n`);
      } else {
        const clear = args.watch && io.stdout.isTTY ? CLEAR : '';
        const stamp = args.watch
          ? `${new Date(now()).toISOString()}  every ${args.intervalMs / 1000}s\n`
          : '';
        io.stdout.write(`${clear}${stamp}${formatStatus(status, now())}`);
      }
    } catch (err) {
      const message =
        err instanceof KvClientError
          ? `${err.code}: ${err.message}`
          : `internal: ${err instanceof Error ? err.message : String(err)}`;
      io.stderr.write(`kvctl: ${message}\n`);
      code = STATUS_EXIT_FAILURE;
      // Without --watch that ends it; with --watch a gateway restart should not end the view.
    }
    if (!args.watch || opts.signal?.aborted) return code;
    await sleep(args.intervalMs);
    if (opts.signal?.aborted) return code;
  }
}
