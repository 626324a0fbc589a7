import fs from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../../common/cli-options';
import { parseDuration } from '../../common/duration';
import { KeyValueStoreClient, KvClientError, type Consistency } from '../../client';
import {
  checkHistory,
  countViolations,
  HistoryInputError,
  VIOLATION_KINDS,
  type Violation,
} from '../../verify/history-checker';
import {
  readFinal,
  runId,
  runWorkload,
  VerifyError,
  type LatencySummary,
  type WorkloadStats,
} from '../../verify/workload';
import { EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, type Env, type KvctlIo } from '../io';
import {
  consistencyOption,
  gatewayTarget,
  globalValues,
  jsonOutput,
  kvctlCommand,
  loadCaOrExit,
  type CommandSetup,
  type GatewayTarget,
  type GlobalValues,
} from '../options';

/**
 * `kvctl verify`: runs concurrent writers and readers against any running
 * cluster, reads every key once more at the end, and checks the history
 * (verify/history-checker.ts). Exit 0 only when nothing was violated.
 */

export const VERIFY_USAGE = `usage: kvctl verify [--url URL] [--duration 60s | --ops N] [--clients N] [--keys K]
                    [--timeout 5s] [--consistency one|quorum|all] [--token TOKEN] [--ca FILE] [--history FILE]
                    [-o json|table]

Runs N concurrent clients, each a loop of puts (40%), deletes (10%) and gets (50%) of random keys among K
fresh keys (prefix verify/<run id>/, left in the store afterwards), every value unique; then reads every key
at the same consistency and checks what every request saw against kvstore's promise: with W + R > RF a read
returns the latest acknowledged write or a newer one, a deleted key stays deleted, no value appears that was
never written, and no request goes unanswered past its timeout.

options:
  --duration D     how long to run: 90s, 2m, 500ms, 1h (default 60s)
  --ops N          stop after N requests (with --duration, whichever comes first)
  --clients N      concurrent clients (default 4)
  --keys K         keys in the key space (default 16; fewer keys, more contention)
  --timeout D      per request deadline (default 5s)
  --consistency L  level of every request (default quorum)
  --history FILE   also write the history (every request, the final reads) as JSON
  -o json          print the report as one JSON document: stats, final reads, every violation

Versions from several gateways are not assumed to follow real time (README), so only what versions prove is
reported.

exit status: 0 no violations, 1 violations found, 2 usage error, 3 the cluster could not be reached or read`;

/** exit 1: violations found */
export const VERIFY_EXIT_VIOLATIONS = EXIT_NOT_FOUND;

export interface VerifyArgs extends GatewayTarget {
  readonly consistency: Consistency;
  readonly durationMs?: number;
  readonly maxOps?: number;
  readonly clients: number;
  readonly keys: number;
  readonly timeoutMs: number;
  readonly historyFile?: string;
  /** -o json: the report as one JSON document (the progress lines go to stderr) */
  readonly json: boolean;
}

interface VerifyValues extends GlobalValues {
  duration?: string;
  ops?: string;
  clients?: string;
  keys?: string;
  timeout?: string;
  history?: string;
}

export function verifyCommand(setup: CommandSetup<VerifyArgs>): Command {
  return kvctlCommand('verify', VERIFY_USAGE, setup.sink)
    .option('--duration <duration>', 'how long to run')
    .option('--ops <n>', 'stop after N requests')
    .option('--clients <n>', 'concurrent clients')
    .option('--keys <k>', 'keys in the key space')
    .option('--timeout <duration>', 'per request deadline')
    .option('--history <file>', 'also write the history as JSON')
    .action((opts: VerifyValues, cmd: Command) =>
      setup.accept(verifyArgs({ ...globalValues(cmd), ...opts }, setup.env)),
    );
}

function positiveInt(text: string, flag: string, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new UsageError(`${flag} takes a whole number from 1 to ${max}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** Pure: the command line's values to settings, or UsageError. */
export function verifyArgs(values: VerifyValues, env: Env): VerifyArgs {
  const consistency = consistencyOption(values.consistency) ?? 'quorum';
  const maxOps = values.ops === undefined ? undefined : positiveInt(values.ops, '--ops', 1e9);
  const durationMs =
    values.duration !== undefined
      ? parseDuration(values.duration, { flag: '--duration' })
      : maxOps === undefined
        ? 60_000
        : undefined;
  return {
    ...gatewayTarget(values, env),
    consistency,
    durationMs,
    maxOps,
    clients: values.clients === undefined ? 4 : positiveInt(values.clients, '--clients', 1000),
    keys: values.keys === undefined ? 16 : positiveInt(values.keys, '--keys', 1_000_000),
    timeoutMs:
      values.timeout === undefined
        ? 5000
        : parseDuration(values.timeout, { flag: '--timeout', maxMs: 3_600_000 }),
    historyFile: values.history,
    json: jsonOutput(values),
  };
}

/** Runs `kvctl verify`; returns the exit status, never throws. */
export async function runVerify(args: VerifyArgs, io: KvctlIo): Promise<number> {
  const loaded = loadCaOrExit(args.caFile, 'kvctl verify --help', io.stderr);
  if ('exit' in loaded) return loaded.exit;
  try {
    return await verify(args, io, loaded.ca);
  } catch (err) {
    if (err instanceof KvClientError || err instanceof VerifyError) {
      io.stderr.write(`kvctl: ${err.code}: ${err.message}\n`);
      // A client refusal before anything was sent (a malformed --url) is a usage error.
      return err instanceof KvClientError && err.code === 'bad_request' && err.status === undefined
        ? EXIT_USAGE
        : EXIT_FAILURE;
    }
    io.stderr.write(`kvctl: internal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return EXIT_FAILURE;
  }
}

async function verify(args: VerifyArgs, io: KvctlIo, ca: Buffer | undefined): Promise<number> {
  const kv = new KeyValueStoreClient({ url: args.url, token: args.token, timeoutMs: args.timeoutMs, ca });
  if (!(await kv.ready())) {
    throw new VerifyError('not_ready', `the gateway at ${kv.url} is not ready (GET /readyz)`);
  }
  const prefix = `verify/${runId()}/`;
  const limit = [
    args.durationMs !== undefined ? `${args.durationMs / 1000} s` : '',
    args.maxOps !== undefined ? `${args.maxOps} requests` : '',
  ]
    .filter(Boolean)
    .join(' or ');
  // With -o json stdout is the one JSON document: what is said along the way goes to stderr.
  (args.json ? io.stderr : io.stdout).write(
    `verify: ${kv.url}, ${args.clients} clients, ${args.keys} keys under ${prefix}, ${args.consistency}, ${limit}\n`,
  );

  const started = Date.now();
  const progress = setInterval(() => {
    io.stderr.write(`verify: ${Math.round((Date.now() - started) / 1000)} s\n`);
  }, 10_000);
  let result;
  try {
    result = await runWorkload({
      url: args.url,
      token: args.token,
      ca,
      clients: args.clients,
      keys: args.keys,
      durationMs: args.durationMs,
      maxOps: args.maxOps,
      timeoutMs: args.timeoutMs,
      consistency: args.consistency,
      keyPrefix: prefix,
    });
  } finally {
    clearInterval(progress);
  }

  const touched = [...new Set(result.recorder.operations().map((op) => op.key))];
  const final = await readFinal(kv, touched, { consistency: args.consistency, source: 'gateway' });
  const history = result.recorder.history(final);
  if (args.historyFile) fs.writeFileSync(args.historyFile, `${JSON.stringify(history)}\n`);

  let violations: readonly Violation[];
  try {
    violations = checkHistory(history, { timeoutMs: args.timeoutMs }).violations;
  } catch (err) {
    // The history is ours: a malformed one is a bug in the workload, reported as such.
    if (err instanceof HistoryInputError)
      throw new Error(`the recorded history is malformed: ${err.message}`);
    throw err;
  }
  if (args.json) {
    const report = {
      url: kv.url,
      keyPrefix: prefix,
      clients: args.clients,
      keys: args.keys,
      consistency: args.consistency,
      stats: result.stats,
      finalReads: final.length,
      violations,
      ...(args.historyFile ? { historyFile: args.historyFile } : {}),
    };
    io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    io.stdout.write(formatReport(result.stats, final.length, args.consistency, violations));
    if (args.historyFile) io.stdout.write(`history      ${args.historyFile}\n`);
  }
  return violations.length === 0 ? EXIT_OK : VERIFY_EXIT_VIOLATIONS;
}

function ms(n: number): string {
  return n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0);
}

function latencyLine(l: LatencySummary): string {
  return l.count === 0 ? '-' : `p50 ${ms(l.p50)}  p99 ${ms(l.p99)}  max ${ms(l.max)}`;
}

/** The human report: operations, outcomes, errors, latencies, violations (each one). Pure. */
export function formatReport(
  stats: WorkloadStats,
  finalReads: number,
  consistency: Consistency,
  violations: readonly Violation[],
): string {
  const secs = stats.durationMs / 1000;
  const lines = [
    `operations   ${stats.operations} in ${secs.toFixed(1)} s (${secs > 0 ? (stats.operations / secs).toFixed(0) : '-'}/s)`,
  ];
  for (const op of ['put', 'delete', 'get'] as const) {
    const o = stats.byOp[op];
    lines.push(`  ${op.padEnd(10)} ${o.ok} ok, ${o.failed} failed, ${o.timeout} timed out`);
  }
  const errors = Object.entries(stats.errors).sort((a, b) => b[1] - a[1]);
  lines.push(`errors       ${errors.length ? errors.map(([code, n]) => `${code} ${n}`).join(', ') : 'none'}`);
  lines.push(`latency ms   ${latencyLine(stats.latency.all)}`);
  for (const op of ['put', 'delete', 'get'] as const)
    lines.push(`  ${op.padEnd(10)} ${latencyLine(stats.latency[op])}`);
  lines.push(`final reads  ${finalReads} keys at ${consistency}`);
  const counts = countViolations(violations);
  const nonZero = VIOLATION_KINDS.filter((k) => counts[k] > 0).map((k) => `${k} ${counts[k]}`);
  lines.push(`violations   ${violations.length}${nonZero.length ? ` (${nonZero.join(', ')})` : ''}`);
  for (const v of violations) lines.push(`  ${v.kind}  ${v.key}: ${v.message}`);
  return `${lines.join('\n')}\n`;
}
