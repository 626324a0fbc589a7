import type { Command } from 'commander';
import { UsageError } from '../../common/cli-options';
import { parseDuration } from '../../common/duration';
import type { NodeRepairReport, RepairReport } from '../../common/rest-api';
import { KeyValueStoreClient } from '../../client';
import {
  EXIT_FAILURE,
  EXIT_OK,
  reportFailure,
  sleepOf,
  type Env,
  type KvctlIo,
  type RunOptions,
} from '../io';
import {
  collect,
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
 * `kvctl repair`: starts an anti-entropy pass on every node through the
 * gateway (`POST /v1/admin/repair`) and, with --watch, follows each node's
 * progress (`GET /v1/admin/repair`) until every one has finished.
 */

export const REPAIR_USAGE = `usage: kvctl repair [--url URL] [--token TOKEN] [--ca FILE] [--partition P]... [--watch] [--interval 1s]
                    [-o json|table]

Starts an anti-entropy pass on every node: each node compares its hash trees with the other replicas of
its partitions and exchanges the records that differ (newer versions win). Without --watch, prints what
each node answered; with --watch, prints progress until every node has finished.

options:
  --partition P   only partition P (repeatable, or P,Q,...); default: every partition
  --watch         follow the progress until every node has finished
  --interval D    with --watch: time between polls, e.g. 500ms or 2s (default 1s)
  -o json         print each node's answer as one JSON document; with --watch, JSON lines: each poll's
                  report (GET /v1/admin/repair) on a line of its own, the last one final

exit status: 0 started (with --watch: finished, every partition synced with every replica),
             2 usage error, 3 a node could not be reached or could not sync a partition`;

export interface RepairArgs extends GatewayTarget {
  readonly partitions?: number[];
  readonly watch: boolean;
  readonly intervalMs: number;
  /** -o json: the report as JSON; with --watch, one JSON line per poll */
  readonly json: boolean;
}

interface RepairValues extends GlobalValues {
  partition?: string[];
  watch?: boolean;
  interval?: string;
}

export function repairCommand(setup: CommandSetup<RepairArgs>): Command {
  return kvctlCommand('repair', REPAIR_USAGE, setup.sink)
    .option('--partition <p>', 'only partition P (repeatable, or P,Q,...)', collect)
    .option('--watch', 'follow the progress until every node has finished')
    .option('--interval <duration>', 'with --watch: time between polls')
    .action((opts: RepairValues, cmd: Command) =>
      setup.accept(repairArgs({ ...globalValues(cmd), ...opts }, setup.env)),
    );
}

/** The command line's values to settings; throws UsageError. Pure. */
export function repairArgs(values: RepairValues, env: Env): RepairArgs {
  let partitions: number[] | undefined;
  if (values.partition !== undefined) {
    const set = new Set<number>();
    for (const p of values.partition.flatMap((v) => v.split(','))) {
      if (!/^\d{1,5}$/.test(p.trim())) {
        throw new UsageError(`--partition takes partition numbers, got ${JSON.stringify(p)}`);
      }
      set.add(Number(p));
    }
    partitions = [...set].sort((a, b) => a - b);
  }
  if (values.interval !== undefined && !values.watch) throw new UsageError('--interval needs --watch');
  return {
    ...gatewayTarget(values, env),
    ...(partitions ? { partitions } : {}),
    watch: values.watch === true,
    intervalMs:
      values.interval === undefined
        ? 1000
        : parseDuration(values.interval, { flag: '--interval', minMs: 50, maxMs: 3_600_000 }),
    json: jsonOutput(values),
  };
}

/** Runs `kvctl repair`; returns the exit status, never throws. */
export async function runRepair(args: RepairArgs, io: KvctlIo, opts: RunOptions = {}): Promise<number> {
  const sleep = sleepOf(opts);
  const loaded = loadCaOrExit(args.caFile, 'kvctl repair --help', io.stderr);
  if ('exit' in loaded) return loaded.exit;
  try {
    const client = new KeyValueStoreClient({ url: args.url, token: args.token, ca: loaded.ca });
    const startedAt = Date.now();
    const started = await client.startRepair(args.partitions ? { partitions: args.partitions } : {});
    const accepted = started.nodes.filter((n) => !n.error).length;
    const scope = args.partitions
      ? `partition${args.partitions.length > 1 ? 's' : ''} ${args.partitions.join(', ')}`
      : 'all partitions';
    if (!args.json) {
      io.stdout.write(`repair started on ${accepted} of ${started.nodes.length} nodes (${scope})\n`);
    }
    for (const n of started.nodes)
      if (n.error) io.stderr.write(`kvctl: ${n.id}: ${n.error.code}: ${n.error.message}\n`);
    if (!args.watch) {
      io.stdout.write(args.json ? `${JSON.stringify(started, null, 2)}\n` : formatRepairReport(started));
      return accepted === started.nodes.length ? EXIT_OK : EXIT_FAILURE;
    }
    let report: RepairReport;
    for (;;) {
      await sleep(args.intervalMs);
      report = await client.repairStatus();
      io.stdout.write(
        args.json ? `${JSON.stringify(report)}\n` : `${formatProgressLine(report, Date.now() - startedAt)}\n`,
      );
      if (report.nodes.every((n) => n.error || !n.repair?.running)) break;
    }
    if (!args.json) io.stdout.write(formatRepairReport(report));
    const unreachable = report.nodes.filter((n) => n.error || !n.repair);
    const failed = report.nodes.reduce((sum, n) => sum + (n.repair?.partitionsFailed ?? 0), 0);
    if (unreachable.length > 0 || failed > 0) {
      const why = [
        unreachable.length ? `${unreachable.map((n) => n.id).join(', ')} could not be asked` : '',
        failed
          ? `${failed} partition sync${failed > 1 ? 's' : ''} failed (a replica unreachable? see the node logs)`
          : '',
      ]
        .filter(Boolean)
        .join('; ');
      io.stderr.write(`kvctl: repair incomplete: ${why}\n`);
      return EXIT_FAILURE;
    }
    if (!args.json) io.stdout.write(`repair finished in ${formatSeconds(Date.now() - startedAt)}\n`);
    return EXIT_OK;
  } catch (err) {
    return reportFailure(err, io.stderr);
  }
}

/** One line per poll: `[3.2s] n1 40/64, 120 keys | n2 done | n3 refilling 10/64`. */
export function formatProgressLine(report: RepairReport, elapsedMs: number): string {
  const parts = report.nodes.map((n) => {
    if (n.error) return `${n.id} ${n.error.code}`;
    const r = n.repair;
    if (!r) return `${n.id} ?`;
    const state = r.refilling ? 'refilling ' : '';
    if (!r.running) return `${n.id} ${state}done${r.keysRepaired ? `, ${r.keysRepaired} keys` : ''}`;
    return `${n.id} ${state}${r.partitionsDone}/${r.partitionsTotal}, ${r.keysRepaired} keys`;
  });
  return `[${formatSeconds(elapsedMs)}] ${parts.join(' | ')}`;
}

/** A table of every node's state, for people. */
export function formatRepairReport(report: RepairReport, now = Date.now()): string {
  const rows = [
    ['NODE', 'READY', 'STATE', 'PARTITIONS', 'FAILED', 'KEYS REPAIRED', 'LAST FULL REPAIR'],
    ...report.nodes.map((n) => row(n, now)),
  ];
  const lines = table(rows);
  return `${lines.join('\n')}\n`;
}

function row(n: NodeRepairReport, now: number): string[] {
  const ready = n.ready === undefined ? '-' : n.ready ? 'yes' : 'no';
  if (n.error) return [n.id, ready, `error: ${n.error.code}`, '-', '-', '-', '-'];
  const r = n.repair;
  if (!r) return [n.id, ready, 'unknown', '-', '-', '-', '-'];
  const state = r.refilling ? 'refilling' : r.running ? 'running' : 'idle';
  const last =
    r.lastFullRepairAt > 0
      ? `${new Date(r.lastFullRepairAt).toISOString()} (${formatSeconds(now - r.lastFullRepairAt)} ago)`
      : 'never';
  return [
    n.id,
    ready,
    state,
    `${r.partitionsDone}/${r.partitionsTotal}`,
    String(r.partitionsFailed ?? 0),
    String(r.keysRepaired),
    last,
  ];
}

function formatSeconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}
