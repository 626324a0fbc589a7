import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { KeyValueStoreClient } from '../client';
import { parsePartitionMap, type PartitionMap } from '../common/partition-map';
import { mapViolations, replicaLoad } from '../common/rebalance-plan';
import type { RebalanceProgress } from '../common/rebalance-progress';
import { alive, tempDir } from './cluster-harness';
import { freePortBlock } from './free-port';
import { startRecordedLoad, stopAndCheckLoad } from './recorded-load';

/**
 * Issue 4's proof on real processes: the launcher (`npm start`'s
 * local/main.ts, a process of its own, as the operator is on Kubernetes)
 * grows and shrinks a live RF 2 cluster while clients write and read the whole
 * time, and is killed mid-rebalance and started again. Afterwards the recorded
 * history goes through the history checker (no acknowledged write lost, no
 * deleted key back, no request hung), no request failed, every partition has
 * RF replicas in every map seen, the load is balanced within one partition of
 * the mean, and each plan moved the fewest replicas any balanced plan can. A listing paged
 * across a rebalance lists every unchanged key once (issue 17).
 */
jest.setTimeout(300_000);

const RUNNER = path.resolve(__dirname, '..', 'dist', 'local', 'main.js');
const RF = 2;
const PARTITIONS = 64;

interface Runner {
  child: ChildProcess;
  exited: Promise<void>;
}

let runner: Runner | undefined;
let dataDir: string | undefined;
let mapWatcher: { stop(): Promise<string[]> } | undefined;

afterEach(async () => {
  await mapWatcher?.stop();
  mapWatcher = undefined;
  if (runner && alive(runner.child.pid)) {
    runner.child.kill('SIGTERM');
    await runner.exited;
  }
  runner = undefined;
  // A killed launcher leaves its children running until the next one adopts them: make sure none survive.
  if (dataDir) {
    const file = path.join(dataDir, 'processes.json');
    if (fs.existsSync(file)) {
      for (const pid of pidsIn(fs.readFileSync(file, 'utf8'))) if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    // KVSTORE_KEEP_DATA=1 keeps the data and logs of a failed run for a post-mortem.
    if (process.env.KVSTORE_KEEP_DATA) process.stderr.write(`kept ${dataDir}\n`);
    else fs.rmSync(dataDir, { recursive: true, force: true });
  }
  dataDir = undefined;
});

function pidsIn(json: string): number[] {
  const out: number[] = [];
  JSON.parse(json, (k, v: unknown) => {
    if (k === 'pid' && typeof v === 'number') out.push(v);
    return v;
  });
  return out;
}

function startRunner(dir: string, port: number, extra: string[] = []): Runner {
  const out = fs.openSync(path.join(dir, 'runner.log'), 'a');
  const child = spawn(
    process.execPath,
    [
      RUNNER,
      '--data-dir',
      dir,
      '--port',
      String(port),
      // Slow enough that a rebalance takes a few seconds and can be interrupted.
      '--node-arg=--move-max-bytes-per-second=262144',
      ...extra,
    ],
    { stdio: ['ignore', out, out] },
  );
  fs.closeSync(out);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, exited };
}

async function waitFor<T>(what: string, get: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function json<T>(url: string, init?: RequestInit): Promise<T> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const body = (await res.json()) as T;
  if (!res.ok) throw new Error(`${url}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** The map as the launcher stored it (file metadata store). */
function storedMap(dir: string): PartitionMap {
  return parsePartitionMap(fs.readFileSync(path.join(dir, 'partition-map.json'), 'utf8'));
}

/**
 * The fewest replicas any balanced plan must copy from `map` to `target` nodes:
 * every node may keep at most min(current load, its new share), the larger
 * shares going to the nodes holding most; the rest must be copied. (Reachable
 * here: no zones, and P·RF large next to the node count.)
 */
function minimalMoves(map: PartitionMap, target: readonly string[]): number {
  const total = map.partitionCount * map.replicationFactor;
  const base = Math.floor(total / target.length);
  let ceilShares = total % target.length;
  const load = replicaLoad(map);
  const kept = target.map((id) => load.get(id) ?? 0).sort((a, b) => b - a);
  let keep = 0;
  for (const l of kept) {
    const cap = ceilShares-- > 0 ? base + 1 : base;
    keep += Math.min(l, cap);
  }
  return total - keep;
}

function expectHealthyAndBalanced(map: PartitionMap, nodes: number): void {
  expect(mapViolations(map)).toEqual([]);
  expect(map.moves).toEqual([]);
  expect(map.rebalance).toBeUndefined();
  expect(map.nodes.map((n) => n.id)).toEqual(Array.from({ length: nodes }, (_, i) => `n${i + 1}`));
  const mean = (map.partitionCount * map.replicationFactor) / nodes;
  for (const [id, l] of replicaLoad(map)) {
    expect({ id, off: Math.abs(l - mean) <= 1 }).toEqual({ id, off: true });
  }
}

/** Samples the stored map until stopped: every map seen must keep RF full replicas per partition. */
function watchMaps(dir: string): { stop(): Promise<string[]>; epochs: Set<number> } {
  const problems: string[] = [];
  const epochs = new Set<number>();
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      try {
        const m = storedMap(dir);
        epochs.add(m.epoch);
        for (const v of mapViolations(m)) problems.push(`epoch ${m.epoch}: ${v}`);
      } catch {
        // mid-rename: read again
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    epochs,
    async stop() {
      stop = true;
      await loop;
      return problems;
    },
  };
}

async function scale(adminUrl: string, nodes: number): Promise<RebalanceProgress> {
  return json<RebalanceProgress>(`${adminUrl}/v1/admin/scale`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ nodes }),
  });
}

async function waitBalanced(adminUrl: string, timeoutMs = 120_000): Promise<RebalanceProgress> {
  return waitFor(
    'the rebalance to finish',
    async () => {
      const p = await json<RebalanceProgress>(`${adminUrl}/v1/admin/rebalance`);
      return p.active ? undefined : p;
    },
    timeoutMs,
  );
}

async function preload(url: string, n: number): Promise<void> {
  const kv = new KeyValueStoreClient({ url });
  const value = 'x'.repeat(1024);
  for (let i = 0; i < n; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => kv.put(`bulk/${i + j}`, value)));
  }
}

/** A launcher over 3 nodes at RF 2 in a new data directory; resolves once its gateway and admin answer. */
async function startThreeNodes(prefix: string): Promise<{ url: string; adminUrl: string; dir: string }> {
  const port = await freePortBlock(5);
  const dir = tempDir(prefix);
  dataDir = dir;
  runner = startRunner(dir, port, [
    '--nodes',
    '3',
    '--replication-factor',
    String(RF),
    '--partitions',
    String(PARTITIONS),
  ]);
  const url = `http://127.0.0.1:${port}`;
  const adminUrl = `http://127.0.0.1:${port + 100}`;
  await waitFor('the gateway', async () => ((await fetch(`${url}/readyz`)).ok ? true : undefined));
  await waitFor('the launcher admin', async () =>
    (await fetch(`${adminUrl}/healthz`)).ok ? true : undefined,
  );
  return { url, adminUrl, dir };
}

test('scale 3 → 5 → 2 → 3 under load: no failed request, no lost write, balanced, minimal moves', async () => {
  const { url, adminUrl, dir } = await startThreeNodes('rebalance');
  await preload(url, 1000);

  const maps = watchMaps(dir);
  mapWatcher = maps;
  const load = startRecordedLoad(url, 280_000);
  for (const nodes of [5, 2, 3]) {
    const before = storedMap(dir);
    const target = Array.from({ length: nodes }, (_, i) => `n${i + 1}`);
    const planned = await scale(adminUrl, nodes);
    expect(planned.movesTotal).toBe(minimalMoves(before, target));
    expect(planned.movesTotal).toBeGreaterThan(0);
    await waitBalanced(adminUrl);
    expectHealthyAndBalanced(storedMap(dir), nodes);
  }
  await stopAndCheckLoad(load, { replicationFactor: RF });
  expect(await maps.stop()).toEqual([]);
  // Several epochs were seen: one per plan, switch and finish at least.
  expect(maps.epochs.size).toBeGreaterThan(6);
});

test('the launcher killed mid-rebalance resumes the recorded plan and finishes it', async () => {
  const port = await freePortBlock(5);
  dataDir = tempDir('rebalance-kill');
  const args = ['--replication-factor', String(RF), '--partitions', String(PARTITIONS)];
  runner = startRunner(dataDir, port, ['--nodes', '3', ...args]);
  const url = `http://127.0.0.1:${port}`;
  const adminUrl = `http://127.0.0.1:${port + 100}`;
  await waitFor('the gateway', async () => ((await fetch(`${url}/readyz`)).ok ? true : undefined));
  await waitFor('the launcher admin', async () =>
    (await fetch(`${adminUrl}/healthz`)).ok ? true : undefined,
  );
  await preload(url, 2000);

  const maps = watchMaps(dataDir);
  mapWatcher = maps;
  const load = startRecordedLoad(url, 280_000);
  const before = storedMap(dataDir);
  const planned = await scale(adminUrl, 5);
  expect(planned.movesTotal).toBe(minimalMoves(before, ['n1', 'n2', 'n3', 'n4', 'n5']));
  // Kill it once some moves are switched and some are not.
  await waitFor('a partly done rebalance', async () => {
    const p = await json<RebalanceProgress>(`${adminUrl}/v1/admin/rebalance`);
    return p.movesDone > 0 && p.movesLeft > 0 ? p : undefined;
  });
  runner.child.kill('SIGKILL');
  await runner.exited;
  const interrupted = storedMap(dataDir);
  expect(interrupted.moves.length).toBeGreaterThan(0);
  expect(interrupted.rebalance?.targetNodes).toEqual(['n1', 'n2', 'n3', 'n4', 'n5']);

  // Started again with no --nodes: it adopts the processes and finishes the plan it finds in the map.
  runner = startRunner(dataDir, port, args);
  await waitFor('the new launcher', async () => ((await fetch(`${adminUrl}/healthz`)).ok ? true : undefined));
  const finished = await waitBalanced(adminUrl);
  expect(finished.movesLeft).toBe(0);
  expectHealthyAndBalanced(storedMap(dataDir), 5);
  await stopAndCheckLoad(load, { replicationFactor: RF });
  expect(await maps.stop()).toEqual([]);
});

test('a listing that spans a rebalance lists every unchanged key exactly once, in order, with its value', async () => {
  const { url, adminUrl, dir } = await startThreeNodes('rebalance-list');
  const kv = new KeyValueStoreClient({ url });
  // Keys no one touches during the listing: each must appear once. Values differ per key so a
  // key listed with another key's record would show.
  const fixed = new Map<string, string>();
  for (let i = 0; i < 1500; i++) fixed.set(`fixed/${String(i).padStart(5, '0')}`, `v${i}-${'x'.repeat(900)}`);
  const entries = [...fixed];
  for (let i = 0; i < entries.length; i += 50) {
    await Promise.all(entries.slice(i, i + 50).map(([k, v]) => kv.put(k, v)));
  }
  // Keys written and deleted while the listing runs: they may or may not be listed, never twice.
  let churning = true;
  const churn = (async () => {
    for (let i = 0; churning; i++) {
      // A stride over the key space, so some land ahead of the listing and some behind it.
      const key = `fixed/${String((i * 613) % 1500).padStart(5, '0')}~churn`;
      await kv.put(key, 'c');
      if (i % 2 === 0) await kv.delete(key);
    }
  })();

  const listed: { key: string; value: string }[] = [];
  const pagesBy = { before: 0, during: 0, after: 0 };
  let cursor: string | undefined;
  const page = async (phase: keyof typeof pagesBy): Promise<boolean> => {
    const p = await kv.listPage({
      prefix: 'fixed/',
      pageSize: 20,
      ...(cursor === undefined ? {} : { cursor }),
    });
    for (const e of p.entries) listed.push({ key: e.key, value: e.value?.toString('utf8') ?? '<none>' });
    pagesBy[phase]++;
    cursor = p.cursor;
    return cursor !== undefined;
  };
  let more = true;
  while (more && listed.length < 300) more = await page('before');
  await scale(adminUrl, 5);
  // Pages while moves copy and switch, keeping some for after the rebalance.
  for (;;) {
    const p = await json<RebalanceProgress>(`${adminUrl}/v1/admin/rebalance`);
    if (!p.active || !more || listed.length > 1200) break;
    more = await page('during');
    await new Promise((r) => setTimeout(r, 100));
  }
  await waitBalanced(adminUrl);
  while (more) more = await page('after');
  churning = false;
  await churn;

  expect(pagesBy.before).toBeGreaterThan(0);
  expect(pagesBy.during).toBeGreaterThan(0);
  expect(pagesBy.after).toBeGreaterThan(0);
  const keys = listed.map((e) => e.key);
  expect(new Set(keys).size).toBe(keys.length); // nothing twice
  expect([...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))).toEqual(keys);
  const listedFixed = listed.filter((e) => fixed.has(e.key));
  expect(listedFixed.length).toBe(fixed.size); // nothing lost
  for (const e of listedFixed)
    expect({ key: e.key, value: e.value }).toEqual({ key: e.key, value: fixed.get(e.key) });
  for (const e of listed) if (!fixed.has(e.key)) expect(e.key).toMatch(/~churn$/);
  expectHealthyAndBalanced(storedMap(dir), 5);
});
