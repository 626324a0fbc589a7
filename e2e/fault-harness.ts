import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { KeyValueStoreClient } from '../client';
import type { FinalRead, HistoryOp } from '../verify/history';
import { checkHistory, countViolations, VIOLATION_KINDS, type Violation } from '../verify/history-checker';
import { HistoryRecorder, readFinal, runWorkload, summarize, type RequestSettings } from '../verify/workload';
import { partitionOf } from '../common/hash';
import { formatVersion, HybridLogicalClock } from '../common/hlc';
import { decodeRecord } from '../common/record';
import { RpcClient } from '../common/rpc-client';
import { startTestCluster, type TestCluster } from './cluster-harness';

/**
 * One fault case of the fault suite (issue 3): a 3-node, RF=3 cluster under a
 * recorded workload, a fault injected and healed mid-load, a wait until every
 * node holds the same record for every key, then the proof:
 * - each node alone (the other two stopped) is read at `one` for every key;
 * - the whole history, with those reads as final reads, goes through the
 *   checker (verify/history-checker.ts): no acknowledged write lost, no deleted
 *   key back, no phantom value, no request hung past its deadline.
 *
 * Besides the random workload over `hot/` keys, two sets of keys make the
 * self-healing visible, because nobody reads them before the end (a read would
 * repair them and hide a missing hint or repair):
 * - `gone/*`: written at `all` before the fault, deleted at quorum during it,
 *   so the faulty node may miss the delete: they must read absent everywhere;
 * - `cold/*`: written at quorum during the fault only;
 * - `settled/*`: written at `all` before the fault and never again, so a node
 *   that lost its disk gets them back only by refilling from its peers.
 */

/** Timing of a case, in ms from the start of the load. */
export const LOAD_MS = 10_000;
export const INJECT_AT_MS = 2_000;
export const HEAL_AT_MS = 6_000;
/** how long to wait for every node to hold the same records once the load stopped */
export const CONVERGE_BOUND_MS = Number(process.env.KVSTORE_FAULT_CONVERGE_MS ?? 60_000);
const REQUEST: RequestSettings = { consistency: 'quorum', timeoutMs: 5_000 };
const GONE_KEYS = 8;
const COLD_KEYS = 16;
const SETTLED_KEYS = 16;
const NODE_MAIN = path.resolve(__dirname, '..', 'dist', 'node', 'main.js');

export interface FaultScenario {
  /** for the summary, e.g. "SIGKILL a node" */
  readonly name: string;
  /** injects the fault; resolves to what was done */
  inject(tc: TestCluster): Promise<string>;
  /** heals it; resolves to what was done. Called whenever inject was attempted. */
  heal(tc: TestCluster): Promise<string>;
}

export interface FaultStep {
  /** ms since the load started */
  readonly at: number;
  readonly what: string;
}

export interface CaseReport {
  readonly name: string;
  readonly operations: number;
  readonly outcomes: Record<HistoryOp['outcome'], number>;
  readonly faults: readonly FaultStep[];
  readonly violations: readonly Violation[];
  /** ms from the end of the load (every write answered) until every node held the same records; undefined: never */
  readonly convergedAfterMs: number | undefined;
  /** ms from the heal until every node held the same records for the keys nobody touches after the fault */
  readonly quietConvergedAfterHealMs: number | undefined;
  /** keys whose records still differed between nodes at the bound, with each node's record */
  readonly divergent: readonly string[];
  /** harness writes that never got acknowledged (the case could not set itself up) */
  readonly setupProblems: readonly string[];
  readonly finalReads: readonly FinalRead[];
  readonly goneKeys: readonly string[];
  readonly dataDir: string;
}

/** Node flags for the case: repair passes every 2 s, when the node supports anti-entropy, so cases converge fast. */
function nodeArgs(): string[] {
  const help = execFileSync(process.execPath, [NODE_MAIN, '--help'], { encoding: 'utf8' });
  return help.includes('--anti-entropy-interval-ms') ? ['--anti-entropy-interval-ms', '2000'] : [];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runFaultCase(scenario: FaultScenario): Promise<CaseReport> {
  const caseStart = Date.now();
  const tc = await startTestCluster({ nodeArgs: nodeArgs() });
  let keep = false;
  try {
    const report = await runCase(tc, scenario);
    keep =
      report.violations.length > 0 ||
      report.convergedAfterMs === undefined ||
      report.setupProblems.length > 0;
    console.log(formatSummary(report, Date.now() - caseStart, keep));
    return report;
  } catch (err) {
    keep = true;
    throw err;
  } finally {
    // A failed case keeps its data directory: the node and gateway logs are in it.
    await tc.stop(!keep);
  }
}

async function runCase(tc: TestCluster, scenario: FaultScenario): Promise<CaseReport> {
  const recorder = new HistoryRecorder();
  const kv = new KeyValueStoreClient({ url: tc.url, timeoutMs: REQUEST.timeoutMs });
  const setupProblems: string[] = [];
  const goneKeys = Array.from({ length: GONE_KEYS }, (_, i) => `gone/${i}`);
  const coldKeys = Array.from({ length: COLD_KEYS }, (_, i) => `cold/${i}`);
  const settledKeys = Array.from({ length: SETTLED_KEYS }, (_, i) => `settled/${i}`);

  for (const key of [...goneKeys, ...settledKeys]) {
    const op = await recorder.put(kv, 'setup', key, `${key}-before`, { ...REQUEST, consistency: 'all' });
    if (op.outcome !== 'ok') setupProblems.push(`put ${key} at all before the fault: ${op.error}`);
  }

  const loadStart = Date.now();
  const faults: FaultStep[] = [];
  const step = (what: string): void => {
    faults.push({ at: Date.now() - loadStart, what });
  };
  // Stops the load and the harness's own writes when the fault timeline fails, so nothing outlives the case.
  const abort = new AbortController();
  const workload = runWorkload({
    signal: abort.signal,
    url: tc.url,
    recorder,
    clients: 4,
    keys: 12,
    keyPrefix: 'hot/',
    durationMs: LOAD_MS,
    consistency: REQUEST.consistency,
    timeoutMs: REQUEST.timeoutMs,
  });

  /** Writes while the fault lasts, each retried until acknowledged (a dead gateway makes them wait). */
  const duringFault = async (): Promise<void> => {
    const deadline = loadStart + LOAD_MS + 30_000;
    const untilAcked = async (what: string, attempt: (n: number) => Promise<HistoryOp>): Promise<void> => {
      for (let n = 1; Date.now() < deadline && !abort.signal.aborted; n++) {
        const op = await attempt(n);
        if (op.outcome === 'ok') return;
        await sleep(100);
      }
      setupProblems.push(`${what} was never acknowledged`);
    };
    await Promise.all([
      ...goneKeys.map((key) =>
        untilAcked(`delete ${key}`, () => recorder.delete(kv, 'faulted', key, REQUEST)),
      ),
      ...coldKeys.map((key) =>
        untilAcked(`put ${key}`, (n) => recorder.put(kv, 'faulted', key, `${key}-${n}`, REQUEST)),
      ),
    ]);
  };

  const quietKeys = [...goneKeys, ...coldKeys, ...settledKeys];
  let quiet: Convergence = { afterMs: undefined, divergent: [] };
  const timeline = async (): Promise<void> => {
    await sleep(INJECT_AT_MS);
    let phase: Promise<void> | undefined;
    let healedAt = 0;
    try {
      step(await scenario.inject(tc));
      phase = duringFault();
      await sleep(Math.max(0, HEAL_AT_MS - (Date.now() - loadStart)));
    } finally {
      const t = Date.now();
      const what = await scenario.heal(tc);
      healedAt = Date.now();
      step(`${what} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    }
    await phase;
    // Self-healing in action: the keys written during the fault settle while the load goes on.
    quiet = await waitForConvergence(tc, quietKeys, healedAt, healedAt + CONVERGE_BOUND_MS);
  };

  try {
    await timeline();
  } catch (err) {
    abort.abort();
    await workload;
    throw err;
  }
  await workload;
  const loadEnd = Date.now();

  const keys = [...new Set(recorder.operations().map((op) => op.key))].sort();
  const all = await waitForConvergence(tc, keys, loadEnd, loadEnd + CONVERGE_BOUND_MS);

  // Each node alone: the other two are stopped, so `one` can only be answered by it.
  const finalReads: FinalRead[] = [];
  const ids = tc.cluster.nodeIds();
  for (const id of ids) {
    const others = ids.filter((n) => n !== id);
    for (const n of others) await tc.cluster.signal(n, 'SIGTERM');
    try {
      finalReads.push(...(await readFinal(kv, keys, { consistency: 'one', source: id, converged: true })));
    } finally {
      for (const n of others) await tc.cluster.startProcess(n);
    }
  }
  finalReads.push(...(await readFinal(kv, keys, { consistency: 'quorum', source: 'gateway' })));

  const history = recorder.history(finalReads);
  // One gateway versions every write (gw-local, restarts included), so real-time order implies version order.
  const { violations } = checkHistory(history, { realTimeVersions: true, timeoutMs: REQUEST.timeoutMs });
  const stats = summarize(history.ops, loadEnd - loadStart);
  const outcomes = { ok: 0, failed: 0, timeout: 0 };
  for (const op of history.ops) outcomes[op.outcome]++;
  return {
    name: scenario.name,
    operations: stats.operations,
    outcomes,
    faults,
    violations,
    convergedAfterMs: all.afterMs,
    quietConvergedAfterHealMs: quiet.afterMs,
    divergent: all.divergent,
    setupProblems,
    finalReads,
    goneKeys,
    dataDir: tc.dataDir,
  };
}

/** Each node's record for each key, as `version` or `version (deleted)` or `absent`, read over the internal API. */
async function recordsOn(tc: TestCluster, nodeId: string, keys: readonly string[]): Promise<string[]> {
  const node = tc.cluster.map.nodes.find((n) => n.id === nodeId);
  if (!node) throw new Error(`no node ${nodeId}`);
  const client = new RpcClient({
    nodeId,
    address: node.address,
    clock: new HybridLogicalClock('fault-probe'),
    epoch: () => tc.cluster.map.epoch,
    timeoutMs: 2000,
    token: tc.cluster.internalToken,
  });
  try {
    const items = keys.map((key) => {
      const k = Buffer.from(key, 'utf8');
      return { p: partitionOf(k, tc.cluster.map.partitionCount), k };
    });
    const { records } = await client.call({ op: 'read', items });
    return records.map((raw) => {
      if (!raw) return 'absent';
      const rec = decodeRecord(raw);
      return `${formatVersion(rec.version)}${rec.tombstone ? ' (deleted)' : ''}`;
    });
  } finally {
    client.close();
  }
}

interface Convergence {
  /** ms from `since` until every node held the same records; undefined: not by the deadline */
  readonly afterMs: number | undefined;
  /** the keys that still differed, with each node's record */
  readonly divergent: string[];
}

/**
 * Polls every node (directly, so the polling itself repairs nothing) until all
 * hold the same record for every key, or the deadline passes.
 */
async function waitForConvergence(
  tc: TestCluster,
  keys: readonly string[],
  since: number,
  deadline: number,
): Promise<Convergence> {
  const ids = tc.cluster.nodeIds();
  while (true) {
    const views = await Promise.all(
      ids.map((id) =>
        recordsOn(tc, id, keys).catch((err: unknown) =>
          keys.map(() => `unreadable: ${(err as Error).message}`),
        ),
      ),
    );
    const divergent = keys.flatMap((key, i) => {
      const seen = views.map((v) => v[i]);
      return seen.every((x) => x === seen[0])
        ? []
        : [`${key}: ${ids.map((id, j) => `${id} ${seen[j]}`).join(', ')}`];
    });
    if (divergent.length === 0) return { afterMs: Math.max(0, Date.now() - since), divergent };
    if (Date.now() > deadline) return { afterMs: undefined, divergent };
    await sleep(200);
  }
}

function secs(ms: number | undefined, since: string): string {
  return ms === undefined
    ? `NOT within ${CONVERGE_BOUND_MS / 1000} s of the ${since}`
    : `${(ms / 1000).toFixed(1)} s after the ${since}`;
}

export function formatSummary(r: CaseReport, totalMs: number, kept: boolean): string {
  const counts = countViolations(r.violations);
  const kinds = VIOLATION_KINDS.filter((k) => counts[k] > 0).map((k) => `${k} ${counts[k]}`);
  const lines = [
    `fault case: ${r.name}`,
    `  operations  ${r.operations} (${r.outcomes.ok} ok, ${r.outcomes.failed} failed, ${r.outcomes.timeout} timed out)`,
    `  faults      ${r.faults.map((f) => `+${(f.at / 1000).toFixed(1)} s ${f.what}`).join('; ')}`,
    `  violations  ${r.violations.length}${kinds.length ? ` (${kinds.join(', ')})` : ''}`,
    `  converged   ${secs(r.quietConvergedAfterHealMs, 'heal')} for the keys written before and during the fault; ${secs(r.convergedAfterMs, 'load stopped')} for all (${r.divergent.length} keys differ)`,
    `  total       ${(totalMs / 1000).toFixed(1)} s${kept ? `; data and logs kept in ${r.dataDir}` : ''}`,
  ];
  for (const p of r.setupProblems) lines.push(`  setup: ${p}`);
  for (const d of r.divergent.slice(0, 5)) lines.push(`  differs: ${d}`);
  for (const v of r.violations.slice(0, 20)) lines.push(`  ${v.kind} ${v.key}: ${v.message}`);
  if (r.violations.length > 20) lines.push(`  ... and ${r.violations.length - 20} more`);
  return lines.join('\n');
}

/** The checks every case makes, each failing with the evidence. */
export function expectCaseHealthy(r: CaseReport): void {
  expect(r.setupProblems).toEqual([]);
  expect(r.operations).toBeGreaterThan(200);
  expect(r.faults.length).toBeGreaterThanOrEqual(2);
  // No acknowledged write lost, no deleted key back, no phantom, no hung request.
  expect(r.violations.map((v) => `${v.kind} ${v.key}: ${v.message}`)).toEqual([]);
  // Every single node holds the same record for every key.
  expect({ converged: r.convergedAfterMs !== undefined, differs: r.divergent.slice(0, 10) }).toEqual({
    converged: true,
    differs: [],
  });
  // A deleted key stays deleted, on each node alone and through the gateway (the checker says so too; this names it).
  const back = r.finalReads.filter((f) => r.goneKeys.includes(f.key) && f.value !== null);
  expect(back.map((f) => `${f.key} on ${f.source}: ${f.value}`)).toEqual([]);
  const sources = new Set(r.finalReads.filter((f) => r.goneKeys.includes(f.key)).map((f) => f.source));
  expect([...sources].sort()).toEqual(['gateway', 'n1', 'n2', 'n3']);
}
