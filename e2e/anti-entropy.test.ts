import fs from 'node:fs';
import path from 'node:path';
import { runKvctl } from '../kvctl/main';
import { RpcError } from '../common/rpc-client';
import { nodeClient, startTestCluster, type TestCluster } from './cluster-harness';
import { scrapeSum } from './metrics-scrape';
import { waitFor } from './wait-for';

/**
 * Anti-entropy against real node processes. Hint replay is pushed out of the
 * test's time frame (--hint-replay-interval-ms 1 h) and no key is read through
 * the gateway before the checks (reads repair), so what heals the replicas
 * here is anti-entropy alone.
 */
jest.setTimeout(180_000);

const NO_HINT_REPLAY = ['--hint-replay-interval-ms', '3600000'];

let tc: TestCluster | undefined;

afterEach(async () => {
  await tc?.stop(true);
  tc = undefined;
});

function kv(t: TestCluster, key: string, query = ''): string {
  return `${t.url}/v1/kv/${encodeURIComponent(key)}${query}`;
}

async function put(t: TestCluster, key: string, value: string, query = ''): Promise<void> {
  const res = await fetch(kv(t, key, query), { method: 'PUT', body: value });
  expect(res.status).toBe(200);
}

async function del(t: TestCluster, key: string): Promise<void> {
  const res = await fetch(kv(t, key), { method: 'DELETE' });
  expect(res.status).toBe(200);
}

/** Keys that do not read back with their value at `consistency`. */
async function missing(
  t: TestCluster,
  expected: Map<string, string>,
  consistency: string,
): Promise<string[]> {
  const out: string[] = [];
  for (const [k, v] of expected) {
    const res = await fetch(kv(t, k), { headers: { 'X-Consistency': consistency } });
    const body = await res.text();
    if (res.status !== 200 || body !== v) out.push(`${k} (${res.status})`);
  }
  return out;
}

/** Sum of a metric's samples on a node, optionally only those with the given labels. */
async function metric(
  t: TestCluster,
  node: string,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  return scrapeSum(t.cluster.adminUrl(node), name, labels);
}

async function kvctl(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runKvctl(argv, {
    stdout: { write: (s: string | Uint8Array) => (out += String(s)) },
    stderr: { write: (s: string) => (err += s) },
    stdin: (async function* () {})(),
    env: {},
  });
  return { code, out, err };
}

test('a node that missed writes, and a node rebuilt from an empty disk, converge by anti-entropy alone', async () => {
  const t = (tc = await startTestCluster({
    nodeArgs: [...NO_HINT_REPLAY, '--anti-entropy-max-keys-per-second', '50'],
  }));
  const expected = new Map<string, string>();
  for (let i = 0; i < 50; i++) {
    await put(t, `before-${i}`, `b${i}`);
    expected.set(`before-${i}`, `b${i}`);
  }

  // n2 dies; 100 writes it never sees.
  await t.cluster.signal('n2', 'SIGKILL');
  for (let i = 0; i < 100; i++) {
    await put(t, `during-${i}`, `d${i}`);
    expected.set(`during-${i}`, `d${i}`);
  }
  await t.cluster.startProcess('n2');

  // kvctl repair on every node, followed to the end.
  const repair = await kvctl(['--url', t.url, 'repair', '--watch', '--interval', '200ms']);
  expect(repair.err).toBe('');
  expect(repair.code).toBe(0);
  expect(repair.out).toMatch(/repair started on 3 of 3 nodes \(all partitions\)/);
  expect(repair.out).toMatch(/repair finished in/);
  const report = (await (await fetch(`${t.url}/v1/admin/repair`)).json()) as {
    nodes: {
      id: string;
      ready: boolean;
      keys: number;
      repair: { running: boolean; partitionsFailed: number };
    }[];
  };
  expect(report.nodes.map((n) => [n.id, n.ready, n.repair.running, n.repair.partitionsFailed])).toEqual([
    ['n1', true, false, 0],
    ['n2', true, false, 0],
    ['n3', true, false, 0],
  ]);
  expect((await fetch(`${t.url}/v1/admin/repair?partition=64`, { method: 'POST' })).status).toBe(400);
  expect((await fetch(`${t.url}/v1/admin/repair`, { method: 'PUT' })).status).toBe(405);
  const status = await kvctl(['--url', t.url, 'repair', '--partition', '0,1']);
  expect(status.code).toBe(0);
  expect(status.out).toMatch(/partitions 0, 1/);

  // What did it, by anti-entropy's own counters (read now: restarts reset them).
  const pulled = await metric(t, 'n2', 'kvstore_node_antientropy_keys_repaired_total', {
    direction: 'pulled',
  });
  const pushed =
    (await metric(t, 'n1', 'kvstore_node_antientropy_keys_repaired_total', { direction: 'pushed' })) +
    (await metric(t, 'n3', 'kvstore_node_antientropy_keys_repaired_total', { direction: 'pushed' }));
  const compared = await metric(t, 'n2', 'kvstore_node_antientropy_ranges_compared_total');
  const lastFull = await metric(t, 'n2', 'kvstore_node_antientropy_last_full_repair_timestamp_seconds');

  // n2 alone holds every key.
  await t.cluster.signal('n1', 'SIGTERM');
  await t.cluster.signal('n3', 'SIGTERM');
  expect(await missing(t, expected, 'one')).toEqual([]);
  expect(pulled + pushed).toBeGreaterThanOrEqual(100);
  expect(compared).toBeGreaterThan(0);
  expect(lastFull).toBeGreaterThan(0);
  await t.cluster.startProcess('n1');
  await t.cluster.startProcess('n3');

  // n3 loses its volume: it must refill from its peers before it serves reads.
  await t.cluster.signal('n3', 'SIGTERM');
  fs.rmSync(path.join(t.dataDir, 'nodes', 'n3'), { recursive: true, force: true });
  const rpc = nodeClient(t, 'n3', 'e2e-anti-entropy', 2000);
  let sawRefilling = false;
  let refusedRead = false;
  let starting = true;
  const started = t.cluster.startProcess('n3').finally(() => (starting = false));
  while (starting) {
    try {
      const res = await fetch(`${t.cluster.adminUrl('n3')}/readyz`);
      const body = (await res.json()) as { reason?: string };
      if (res.status === 503 && /refilling/.test(body.reason ?? '')) {
        sawRefilling = true;
        const err = await rpc
          .call({ op: 'read', items: [{ p: 0, k: Buffer.from('before-1') }] })
          .catch((e: unknown) => e);
        if (err instanceof RpcError && err.remote?.code === 'not_ready') refusedRead = true;
      }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await started;
  rpc.close();
  expect(sawRefilling).toBe(true);
  expect(refusedRead).toBe(true);
  const log = fs.readFileSync(path.join(t.cluster.logDir, 'n3.log'), 'utf8');
  expect(log).toMatch(/refill started/);
  const finished = log
    .split('\n')
    .filter((l) => l.includes('refill finished'))
    .map((l) => JSON.parse(l) as { keys: number });
  expect(finished.at(-1)?.keys).toBeGreaterThanOrEqual(expected.size);

  // Ready means full: with n1 and n2 gone, n3 serves every key.
  await t.cluster.signal('n1', 'SIGTERM');
  await t.cluster.signal('n2', 'SIGTERM');
  expect(await missing(t, expected, 'one')).toEqual([]);
});

test('tombstones and expired records are purged from every disk after the grace period, once every replica agrees', async () => {
  const t = (tc = await startTestCluster({
    nodeArgs: [...NO_HINT_REPLAY, '--tombstone-grace-ms', '1000', '--anti-entropy-interval-ms', '500'],
  }));
  const kept = new Map<string, string>();
  for (let i = 0; i < 30; i++) {
    await put(t, `keep-${i}`, `k${i}`);
    kept.set(`keep-${i}`, `k${i}`);
  }
  for (let i = 0; i < 20; i++) await put(t, `del-${i}`, `old${i}`);
  for (let i = 0; i < 10; i++) await put(t, `ttl-${i}`, `t${i}`, '?ttl=1');

  // n3 is down while the keys are deleted: it keeps their old values.
  await t.cluster.signal('n3', 'SIGKILL');
  for (let i = 0; i < 20; i++) await del(t, `del-${i}`);

  // Past the grace period (and the expiry), but n3 cannot agree: nothing may be purged.
  await new Promise((r) => setTimeout(r, 3000));
  for (const n of ['n1', 'n2']) {
    expect(await metric(t, n, 'kvstore_node_stored_keys')).toBe(60);
    expect(await metric(t, n, 'kvstore_node_antientropy_records_purged_total')).toBe(0);
  }

  // n3 is back: the tombstones reach it, then every replica purges them and the expired records.
  await t.cluster.startProcess('n3');
  const stored = async (): Promise<number[]> =>
    Promise.all(['n1', 'n2', 'n3'].map((n) => metric(t, n, 'kvstore_node_stored_keys')));
  await waitFor('tombstones and expired records purged everywhere', async () =>
    (await stored()).every((k) => k === kept.size),
  );
  for (const n of ['n1', 'n2', 'n3']) {
    expect(
      await metric(t, n, 'kvstore_node_antientropy_records_purged_total', { kind: 'tombstone' }),
    ).toBeGreaterThan(0);
    expect(await metric(t, n, 'kvstore_node_antientropy_records_purged_total', { kind: 'expired' })).toBe(10);
  }

  // Several passes later nothing came back: deleted keys stay deleted, kept keys stay.
  await new Promise((r) => setTimeout(r, 2500));
  expect(await stored()).toEqual([kept.size, kept.size, kept.size]);
  for (let i = 0; i < 20; i++) {
    expect((await fetch(kv(t, `del-${i}`), { headers: { 'X-Consistency': 'all' } })).status).toBe(404);
  }
  for (let i = 0; i < 10; i++) {
    expect((await fetch(kv(t, `ttl-${i}`), { headers: { 'X-Consistency': 'all' } })).status).toBe(404);
  }
  expect(await missing(t, kept, 'all')).toEqual([]);
});
