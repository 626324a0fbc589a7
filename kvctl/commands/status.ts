import type { PartitionMap } from '../../common/partition-map';
import { rebalanceProgress, type RebalanceProgress } from '../../common/rebalance-progress';
import type { ClusterInfo, NodeRepairReport, RepairReport } from '../../common/rest-api';
import { KeyValueStoreClient, KvClientError } from '../../client';
import type { Command } from 'commander';
import { UsageError } from '../../common/cli-options';
import { formatDuration, parseDuration } from '../../common/duration';
import {
  EXIT_FAILURE,
  EXIT_NOT_FOUND,
  EXIT_OK,
  palette,
  reportFailure,
  sleepOf,
  terminalEscapes,
  type Env,
  type KvctlIo,
  type Palette,
  type RunOptions,
} from '../io';
import {
  gatewayTarget,
  globalValues,
  jsonOutput,
  kvctlCommand,
  loadCaOrExit,
  type CommandSetup,
  type GatewayTarget,
  type GlobalValues,
} from '../options';
import { table } from '../table';

/**
 * `kvctl status`: one screen that says whether the cluster is healthy, from the
 * gateway alone: the map (`GET /v1/cluster`: nodes, replicas, moves, the
 * rebalance plan) joined with each node's own answer (`GET /v1/admin/repair`:
 * ready, keys, bytes, hints, repair progress, incoming moves). `--watch`
 * redraws it until interrupted.
 */

export const STATUS_USAGE = `usage: kvctl status [--url URL] [--token TOKEN] [--ca FILE] [--watch] [--interval 2s] [-o json|table]

Shows the cluster as the gateway sees it: every node with its state, keys, bytes, hints and repair
progress; partitions whose replicas are not all up (under-replicated) and those left with fewer than a
quorum; a rebalance under way: partitions moved, keys and bytes streamed, rate, time left, draining
nodes and each move's state.

options:
  --watch         redraw every --interval until interrupted (Ctrl-C)
  --interval D    with --watch: time between refreshes, e.g. 500ms or 5s (default 2s)
  -o json         print the joined data as one JSON document instead of the view (also --json);
                  with --watch, JSON lines: one document per refresh

exit status: 0 healthy, 1 degraded (a node down or not ready, or a partition under-replicated),
             2 usage error, 3 the gateway could not be reached`;

/** exit 1: the cluster is degraded */
export const STATUS_EXIT_DEGRADED = EXIT_NOT_FOUND;

/** Partition numbers listed per group; the rest are counted (all of them are in --json). */
const MAX_PARTITIONS_SHOWN = 16;
const MAX_MOVES_SHOWN = 20;
const BAR_WIDTH = 20;

export interface StatusArgs extends GatewayTarget {
  readonly watch: boolean;
  readonly intervalMs: number;
  readonly json: boolean;
}

interface StatusValues extends GlobalValues {
  watch?: boolean;
  interval?: string;
  json?: boolean;
}

export function statusCommand(setup: CommandSetup<StatusArgs>): Command {
  return kvctlCommand('status', STATUS_USAGE, setup.sink)
    .option('--watch', 'redraw every --interval until interrupted')
    .option('--interval <duration>', 'with --watch: time between refreshes')
    .option('--json', 'print the joined data as JSON (as -o json)')
    .action((opts: StatusValues, cmd: Command) =>
      setup.accept(statusArgs({ ...globalValues(cmd), ...opts }, setup.env)),
    );
}

/** The command line's values to settings; throws UsageError. Pure. */
export function statusArgs(values: StatusValues, env: Env): StatusArgs {
  if (values.interval !== undefined && !values.watch) throw new UsageError('--interval needs --watch');
  return {
    ...gatewayTarget(values, env),
    watch: values.watch === true,
    intervalMs:
      values.interval === undefined
        ? 2000
        : parseDuration(values.interval, { flag: '--interval', minMs: 100, maxMs: 3_600_000 }),
    json: jsonOutput(values),
  };
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
  /** being emptied by a rebalance, to leave the cluster when it holds nothing */
  readonly draining?: boolean;
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
  /** where a rebalance stands (`active` false when none is under way) */
  readonly rebalance: RebalanceProgress;
}

/** Joins the two gateway answers. Pure, so the view is testable without a cluster. */
export function clusterStatus(info: ClusterInfo, report: RepairReport): ClusterStatus {
  const reports = new Map(report.nodes.map((n) => [n.id, n]));
  // The same computation as the map owner's (common/rebalance-progress.ts), from what the gateway relays.
  const map: PartitionMap = {
    cluster: info.cluster,
    epoch: info.epoch,
    partitionCount: info.partitionCount,
    replicationFactor: info.replicationFactor,
    nodes: info.nodes.map((n) => ({ id: n.id, address: n.address })),
    partitions: info.partitions,
    moves: info.moves,
    ...(info.rebalance ? { rebalance: info.rebalance } : {}),
  };
  const rebalance = rebalanceProgress(
    map,
    new Map(
      report.nodes
        .filter((n) => !n.error)
        .map((n) => [
          n.id,
          { incoming: n.incoming, streamedKeys: n.streamedKeys, streamedBytes: n.streamedBytes },
        ]),
    ),
  );
  const draining = new Set(rebalance.drainingNodes);
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
      ...(draining.has(n.id) ? { draining: true } : {}),
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
    rebalance,
  };
}

export function isHealthy(s: ClusterStatus): boolean {
  return s.underReplicated.length === 0 && s.nodes.every((n) => n.state === 'up');
}

/** The previous refresh of a --watch, for the streaming rate between two refreshes. */
export interface StreamSample {
  /** ms since the Unix epoch */
  readonly at: number;
  readonly bytesStreamed: number;
}

export interface RebalanceRates {
  /** bytes streamed per second: between two refreshes, else since the rebalance started */
  readonly bytesPerSecond?: number;
  /** time left at the pace of the moves done so far; absent until one is done */
  readonly etaMs?: number;
}

/**
 * Rate and time left. The streaming rate is the difference between two refreshes when
 * there is a previous one (counters are per node run: a node restart makes the difference
 * negative, so then it falls back), else the total over the time since the plan was made.
 * Time left extrapolates the moves done so far: moves of one plan are alike in size.
 */
export function rebalanceRates(r: RebalanceProgress, now: number, prev?: StreamSample): RebalanceRates {
  let bytesPerSecond: number | undefined;
  if (prev && now > prev.at && r.bytesStreamed >= prev.bytesStreamed) {
    bytesPerSecond = ((r.bytesStreamed - prev.bytesStreamed) * 1000) / (now - prev.at);
  } else if (r.startedAt !== undefined && now > r.startedAt) {
    bytesPerSecond = (r.bytesStreamed * 1000) / (now - r.startedAt);
  }
  const etaMs =
    r.active && r.startedAt !== undefined && r.movesDone > 0 && now > r.startedAt
      ? (r.movesLeft * (now - r.startedAt)) / r.movesDone
      : undefined;
  return {
    ...(bytesPerSecond !== undefined ? { bytesPerSecond } : {}),
    ...(etaMs !== undefined ? { etaMs } : {}),
  };
}

/** One line: `[#####---------------] 10/40 partitions moved, 1200 keys, 3.0 MiB streamed, 1.0 MiB/s, about 30s left`. */
export function formatRebalanceLine(r: RebalanceProgress, rates: RebalanceRates): string {
  const fraction = r.movesTotal > 0 ? r.movesDone / r.movesTotal : r.active ? 0 : 1;
  return [
    `${progressBar(fraction)} ${r.movesDone}/${r.movesTotal} partitions moved`,
    `${r.keysStreamed} keys, ${formatBytes(r.bytesStreamed)} streamed`,
    rates.bytesPerSecond === undefined ? '' : `${formatBytes(Math.round(rates.bytesPerSecond))}/s`,
    !r.active
      ? 'done'
      : rates.etaMs === undefined
        ? 'time left: estimating'
        : `about ${formatAge(rates.etaMs)} left`,
  ]
    .filter(Boolean)
    .join(', ');
}

/** The rebalance section of the view: progress, draining nodes, the first moves with their state. */
export function formatRebalance(r: RebalanceProgress, rates: RebalanceRates, now: number): string[] {
  if (!r.active) return ['rebalance: none'];
  const targets =
    r.targetNodes.length > MAX_PARTITIONS_SHOWN
      ? `${r.targetNodes.slice(0, MAX_PARTITIONS_SHOWN).join(', ')}, ...`
      : r.targetNodes.join(', ');
  const lines = [
    r.startedAt !== undefined
      ? `rebalance to ${r.targetNodes.length} nodes (${targets}), started ${formatAge(now - r.startedAt)} ago`
      : // moves someone wrote into the map without a plan: no target, no start time
        `moves in progress: ${r.movesLeft} (no rebalance plan recorded in the map)`,
    `  ${formatRebalanceLine(r, rates)}`,
    `  in flight: ${r.movesLeft} moves, ${r.keysInFlight} keys, ${formatBytes(r.bytesInFlight)} copied so far`,
    `  draining: ${r.drainingNodes.length > 0 ? r.drainingNodes.join(', ') : 'none'}`,
  ];
  if (r.moves.length > 0) {
    const shown = r.moves.slice(0, MAX_MOVES_SHOWN);
    lines.push(
      ...table([
        ['PARTITION', 'FROM', 'TO', 'STATE', 'KEYS', 'BYTES'],
        ...shown.map((m) => [
          String(m.partition),
          m.from,
          m.to,
          m.error ? `${m.state} (${m.error})` : m.state,
          String(m.keys),
          formatBytes(m.bytes),
        ]),
      ]).map((l) => `  ${l}`),
    );
    if (r.moves.length > shown.length)
      lines.push(`  ... and ${r.moves.length - shown.length} more (--json lists all)`);
  }
  return lines;
}

/**
 * The terminal view. `now` is injected so tests get stable "ago" texts; `prev`, the previous
 * refresh of a --watch, gives the streaming rate between the two.
 */
export function formatStatus(
  s: ClusterStatus,
  now = Date.now(),
  prev?: StreamSample,
  colours: Palette = { good: (t) => t, bad: (t) => t },
): string {
  const notUp = s.nodes.filter((n) => n.state !== 'up').length;
  const health = isHealthy(s)
    ? colours.good('healthy')
    : colours.bad(s.belowQuorum.length > 0 ? 'UNAVAILABLE (below quorum)' : 'DEGRADED');
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
        n.draining ? `${n.state}, draining` : n.state,
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
  if (s.rebalance.active) {
    lines.push(...formatRebalance(s.rebalance, rebalanceRates(s.rebalance, now, prev), now));
  } else {
    lines.push('moves in progress: none');
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

/** `45s`, `12m`, `3h`, `2d`: coarse, for ages and time left. */
export function formatAge(ms: number): string {
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

/** ANSI: cursor home and clear screen, so --watch redraws in place on a terminal. */
const CLEAR = '\x1b[H\x1b[2J';

/** Runs `kvctl status`; returns the exit status, never throws. */
export async function runStatus(args: StatusArgs, io: KvctlIo, opts: RunOptions = {}): Promise<number> {
  const sleep = sleepOf(opts);
  const now = opts.now ?? Date.now;
  const loaded = loadCaOrExit(args.caFile, 'kvctl status --help', io.stderr);
  if ('exit' in loaded) return loaded.exit;
  let client: KeyValueStoreClient;
  try {
    client = new KeyValueStoreClient({ url: args.url, token: args.token, ca: loaded.ca });
  } catch (err) {
    return reportFailure(err, io.stderr);
  }
  let code: number = EXIT_OK;
  let prev: StreamSample | undefined;
  for (;;) {
    try {
      const [info, report] = await Promise.all([client.cluster(), client.repairStatus()]);
      const status = clusterStatus(info, report);
      const at = now();
      code = isHealthy(status) ? EXIT_OK : STATUS_EXIT_DEGRADED;
      if (args.json) {
        const rates = rebalanceRates(status.rebalance, at, prev);
        const out = { ...status, rebalance: { ...status.rebalance, ...rates } };
        io.stdout.write(`${JSON.stringify(out, null, args.watch ? undefined : 2)}\n`);
      } else {
        const clear = args.watch && terminalEscapes(io) ? CLEAR : '';
        const stamp = args.watch
          ? `${new Date(at).toISOString()}  every ${formatDuration(args.intervalMs)}\n`
          : '';
        io.stdout.write(`${clear}${stamp}${formatStatus(status, at, prev, palette(io))}`);
      }
      prev = { at, bytesStreamed: status.rebalance.bytesStreamed };
    } catch (err) {
      const message =
        err instanceof KvClientError
          ? `${err.code}: ${err.message}`
          : `internal: ${err instanceof Error ? err.message : String(err)}`;
      io.stderr.write(`kvctl: ${message}\n`);
      code = EXIT_FAILURE;
      // Without --watch that ends it; with --watch a gateway restart should not end the view.
    }
    if (!args.watch || opts.signal?.aborted) return code;
    await sleep(args.intervalMs);
    if (opts.signal?.aborted) return code;
  }
}
