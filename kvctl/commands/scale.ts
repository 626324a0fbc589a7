import type { Command } from 'commander';
import { UsageError } from '../../common/cli-options';
import { parseDuration } from '../../common/duration';
import type { RebalanceStatus, ScaleResult } from '../../common/rest-api';
import { KeyValueStoreClient, KvClientError } from '../../client';
import {
  EXIT_FAILURE,
  EXIT_OK,
  EXIT_USAGE,
  reportFailure,
  sleepOf,
  terminalEscapes,
  type Env,
  type KvctlIo,
  type RunOptions,
} from '../io';
import {
  caFileOption,
  gatewayTarget,
  globalValues,
  jsonOutput,
  kvctlCommand,
  loadCaOrExit,
  tokenOption,
  type CommandSetup,
  type GlobalValues,
} from '../options';
import { formatRebalanceLine, rebalanceRates, type StreamSample } from './status';

/**
 * `kvctl scale`: asks the map owner to grow or shrink the cluster. On one
 * machine that is the `npm start` launcher's admin listener (port + 100), the
 * local stand-in for `kubectl scale kvcluster/x`: it starts the new nodes,
 * records the plan in the partition map, and the rebalancer moves the
 * partitions while the cluster keeps serving. `--wait` follows it to the end.
 */

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:3100';

export const SCALE_USAGE = `usage: kvctl scale --nodes N [--admin-url URL | --url URL] [--ca FILE] [--wait] [--interval 1s] [-o json|table]

Grows or shrinks the cluster that npm start runs to N storage nodes. The launcher starts the new nodes,
plans which partitions move, and streams them while the cluster keeps serving; nodes that leave are
drained first and stopped once they hold nothing. A scale while a rebalance is under way re-plans it.

options:
  --nodes N        storage nodes wanted: from the replication factor to 64
  --admin-url URL  the launcher's admin listener; without it, the gateway's --url with port + 100
                   (npm start -- --port P listens on P+100), else $KVSTORE_ADMIN_URL, else $KVSTORE_URL
                   with port + 100, else ${DEFAULT_ADMIN_URL}
  --ca FILE        PEM CA certificate(s) to trust when the admin URL is https (default: $KVSTORE_CA)
  --wait           follow the rebalance until every partition has moved
  --interval D     with --wait: time between polls, e.g. 500ms or 2s (default 1s)
  -o json          print the plan as one JSON document; with --wait, JSON lines: the plan, then each
                   poll's rebalance status (GET /v1/admin/rebalance), the last one with "active": false

exit status: 0 planned (with --wait: finished), 2 usage error or a target the launcher refuses (e.g.
             fewer nodes than the replication factor), 3 the launcher could not be reached or failed,
             or what answers is not the launcher`;

/** With --wait, polls that may fail in a row (a launcher restarting: it adopts the nodes) before giving up. */
const MAX_POLL_FAILURES = 30;

export interface ScaleArgs {
  readonly adminUrl: string;
  /** PEM CA file to trust for an https admin URL (--ca, $KVSTORE_CA) */
  readonly caFile?: string;
  /** sent as Bearer: the launcher run with --auth-file needs an admin key (--token, $KVSTORE_TOKEN) */
  readonly token?: string;
  readonly nodes: number;
  readonly wait: boolean;
  readonly intervalMs: number;
  /** -o json: the plan as JSON; with --wait, one JSON line per poll after it */
  readonly json: boolean;
}

interface ScaleValues extends GlobalValues {
  nodes?: string;
  adminUrl?: string;
  wait?: boolean;
  interval?: string;
}

export function scaleCommand(setup: CommandSetup<ScaleArgs>): Command {
  return kvctlCommand('scale', SCALE_USAGE, setup.sink)
    .option('--nodes <n>', 'storage nodes wanted')
    .option('--admin-url <url>', "the launcher's admin listener")
    .option('--wait', 'follow the rebalance until every partition has moved')
    .option('--interval <duration>', 'with --wait: time between polls')
    .action((opts: ScaleValues, cmd: Command) =>
      setup.accept(scaleArgs({ ...globalValues(cmd), ...opts }, setup.env)),
    );
}

/** The command line's values to settings; throws UsageError. Pure. */
export function scaleArgs(values: ScaleValues, env: Env): ScaleArgs {
  if (values.nodes === undefined) throw new UsageError('--nodes N is required');
  if (!/^\d{1,3}$/.test(values.nodes) || Number(values.nodes) < 1 || Number(values.nodes) > 64) {
    throw new UsageError(`--nodes takes a whole number from 1 to 64, got ${JSON.stringify(values.nodes)}`);
  }
  if (values.interval !== undefined && !values.wait) throw new UsageError('--interval needs --wait');
  const caFile = caFileOption(values, env);
  const token = tokenOption(values, env);
  return {
    adminUrl: adminUrlOf(values, env),
    ...(caFile ? { caFile } : {}),
    ...(token ? { token } : {}),
    nodes: Number(values.nodes),
    wait: values.wait === true,
    intervalMs:
      values.interval === undefined
        ? 1000
        : parseDuration(values.interval, { flag: '--interval', minMs: 50, maxMs: 3_600_000 }),
    json: jsonOutput(values),
  };
}

/**
 * Where the launcher listens: --admin-url, else the gateway's --url with port + 100 (npm start puts it
 * there), else $KVSTORE_ADMIN_URL, else $KVSTORE_URL with port + 100, else the default: flags before the
 * environment, the admin URL before the gateway's. The client checks that a launcher answers there.
 */
export function adminUrlOf(values: { adminUrl?: string; url?: string }, env: Env): string {
  if (values.adminUrl !== undefined) return values.adminUrl;
  if (values.url !== undefined) return launcherBesideGateway(values.url);
  if (env.KVSTORE_ADMIN_URL) return env.KVSTORE_ADMIN_URL;
  return launcherBesideGateway(gatewayTarget({}, env).url);
}

/** `http://h:3000/x` → `http://h:3100`; a URL that does not parse is left for the client to refuse. */
export function launcherBesideGateway(gatewayUrl: string): string {
  let u: URL;
  try {
    u = new URL(gatewayUrl);
  } catch {
    return gatewayUrl;
  }
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80)) + 100;
  // URL.host would carry the old port; hostname keeps an IPv6 address's brackets.
  return `${u.protocol}//${u.hostname}:${port}`;
}

/** Runs `kvctl scale`; returns the exit status, never throws. */
export async function runScale(args: ScaleArgs, io: KvctlIo, opts: RunOptions = {}): Promise<number> {
  const sleep = sleepOf(opts);
  const now = opts.now ?? Date.now;
  const loaded = loadCaOrExit(args.caFile, 'kvctl scale --help', io.stderr);
  if ('exit' in loaded) return loaded.exit;
  let client: KeyValueStoreClient;
  let planned: ScaleResult;
  try {
    client = new KeyValueStoreClient({ url: args.adminUrl, ca: loaded.ca, token: args.token });
    planned = await client.scale(args.nodes);
  } catch (err) {
    if (err instanceof KvClientError && err.code === 'not_kvstore') {
      io.stderr.write(
        `kvctl: ${err.code}: ${err.message} (scale talks to the npm start launcher: --admin-url, or --url's port + 100)\n`,
      );
      return EXIT_FAILURE;
    }
    // The launcher refused the target as asked (e.g. below the replication factor): the command line's fault.
    if (err instanceof KvClientError && err.status === 400) {
      io.stderr.write(`kvctl: ${err.code}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    return reportFailure(err, io.stderr);
  }
  io.stdout.write(
    args.json
      ? `${JSON.stringify(planned, null, args.wait ? undefined : 2)}\n`
      : formatPlan(planned, args.nodes),
  );
  if (!args.wait || !planned.active) return EXIT_OK;

  const startedAt = now();
  // In place on a terminal (and never as JSON); one line per poll otherwise.
  const redraw = !args.json && terminalEscapes(io);
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
        if (redraw) io.stdout.write('\n');
        return reportFailure(err, io.stderr);
      }
      continue;
    }
    const at = now();
    total = Math.max(total, status.movesTotal);
    if (args.json) {
      io.stdout.write(`${JSON.stringify(status)}\n`);
      if (!status.active) return EXIT_OK;
      continue;
    }
    // Once done the map no longer records the plan: show it complete rather than 0/0.
    const shown = status.active ? status : { ...status, movesTotal: total, movesDone: total, movesLeft: 0 };
    const line = formatRebalanceLine(shown, rebalanceRates(shown, at, prev));
    prev = { at, bytesStreamed: status.bytesStreamed };
    io.stdout.write(redraw ? `\r\x1b[2K${line}` : `${line}\n`);
    if (!status.active) break;
  }
  if (redraw) io.stdout.write('\n');
  io.stdout.write(
    `rebalance finished in ${((now() - startedAt) / 1000).toFixed(1)}s: ${status.targetNodes.length} nodes (epoch ${status.epoch})\n`,
  );
  return EXIT_OK;
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
