import { partitionOf } from '../common/hash';
import { decodeRecord, encodeRecord, type KvRecord } from '../common/record';
import { nodeClient, startTestCluster, type TestCluster } from './cluster-harness';
import { scrapeSum } from './metrics-scrape';
import { waitFor } from './wait-for';

/**
 * Reads ask R replicas, not all of them (DESIGN: "it reads from R replicas"):
 * at `quorum` two of three, spread evenly over the nodes; at `all` three. A
 * stalled replica (SIGSTOP: its socket stays open, nothing answers) makes reads
 * ask the third replica after the hedge delay instead of waiting for the RPC
 * timeout, and reads stop choosing it while requests to it are in flight; a
 * killed one is skipped. Every read returns the acknowledged value throughout.
 */
jest.setTimeout(120_000);

const KEYS = 60;
let tc: TestCluster;

beforeAll(async () => {
  // RPC timeout far above the hedge: a read that waited for the stalled node would be visibly slow.
  tc = await startTestCluster({ gatewayArgs: ['--rpc-timeout-ms', '10000', '--read-hedge-ms', '30'] });
});

afterAll(async () => {
  await tc?.stop(true);
});

const kv = (key: string): string => `${tc.url}/v1/kv/${encodeURIComponent(key)}`;

const readsSent = (labels: Record<string, string> = {}): Promise<number> =>
  scrapeSum(tc.url, 'kvstore_gateway_replica_requests_total', { op: 'read', ...labels });

/** Reads every key; answers the wrong ones, and the longest single read in ms. */
async function readAll(consistency: string): Promise<{ wrong: string[]; longestMs: number }> {
  const wrong: string[] = [];
  let longestMs = 0;
  for (let i = 0; i < KEYS; i++) {
    const started = performance.now();
    const res = await fetch(kv(`k${i}`), { headers: { 'X-Consistency': consistency } });
    const body = await res.text();
    longestMs = Math.max(longestMs, performance.now() - started);
    if (res.status !== 200 || body !== `v${i}`) wrong.push(`k${i}: ${res.status} ${body}`);
  }
  return { wrong, longestMs };
}

test('quorum reads ask two of three replicas, spread evenly; `all` asks three', async () => {
  for (let i = 0; i < KEYS; i++) {
    const res = await fetch(kv(`k${i}`), { method: 'PUT', body: `v${i}` });
    expect(res.status).toBe(200);
  }
  const before = await Promise.all(['n1', 'n2', 'n3'].map((node) => readsSent({ node })));
  expect((await readAll('quorum')).wrong).toEqual([]);
  const after = await Promise.all(['n1', 'n2', 'n3'].map((node) => readsSent({ node })));
  const perNode = after.map((a, i) => a - before[i]);
  expect(perNode.reduce((a, b) => a + b, 0)).toBe(2 * KEYS);
  // One read at a time: nothing is in flight, so the rotation over each partition's replica list
  // decides: a fair share is 40 each; every node gets most of one.
  for (const n of perNode) expect(n).toBeGreaterThanOrEqual(KEYS / 2);

  const beforeAll = await readsSent();
  expect((await readAll('all')).wrong).toEqual([]);
  expect((await readsSent()) - beforeAll).toBe(3 * KEYS);
  expect(await readsSent({ outcome: 'rpc_timeout' })).toBe(0);
  expect(await scrapeSum(tc.url, 'kvstore_gateway_read_extra_requests_total')).toBe(0);
});

/**
 * Writes "old" to each key through the gateway, then `newer(key)` to n3 alone over the internal
 * RPC (as if n1 and n2 had missed it), so nothing but reads can bring n1 and n2 up to date.
 * Returns the keys' read items.
 */
async function newerOnN3Only(
  keys: string[],
  newer: (key: string) => KvRecord,
): Promise<{ p: number; k: Buffer }[]> {
  for (const key of keys) expect((await fetch(kv(key), { method: 'PUT', body: 'old' })).status).toBe(200);
  const items = keys.map((key) => ({
    p: partitionOf(Buffer.from(key), tc.cluster.map.partitionCount),
    k: Buffer.from(key),
    r: encodeRecord(newer(key)),
  }));
  const n3 = nodeClient(tc, 'n3', 'test-writer');
  try {
    expect((await n3.call({ op: 'write', items })).applied).toEqual(keys.map(() => true));
  } finally {
    n3.close();
  }
  return items.map(({ p, k }) => ({ p, k }));
}

/** Reads each key at `all`, one at a time; `check` gets each answer. */
async function readEachAtAll(
  keys: string[],
  check: (key: string, status: number, body: string) => void,
): Promise<void> {
  for (const key of keys) {
    const res = await fetch(kv(key), { headers: { 'X-Consistency': 'all' } });
    check(key, res.status, await res.text());
    // Let this read's repair writes (to n1 and n2, when n3 sent its record in full) finish: reads
    // put the replicas with requests in flight last, which would ask n3 in full every time.
    await new Promise((r) => setTimeout(r, 50));
  }
}

const n3Reads = (): Promise<number> => readsSent({ node: 'n3' });
const digestMismatches = (): Promise<number> =>
  scrapeSum(tc.url, 'kvstore_gateway_read_digest_mismatches_total');

test('one replica sends the value, the others a digest; a newer digest makes the read fetch that value', async () => {
  const keys = Array.from({ length: 12 }, (_, i) => `d${i}`);
  const items = await newerOnN3Only(keys, (key) => ({
    version: { wall: Date.now() + 1000, logical: 0, writer: 'test-writer' },
    value: Buffer.from(`new ${key}`),
    tombstone: false,
  }));
  const [reads0, mismatches0] = [await n3Reads(), await digestMismatches()];
  await readEachAtAll(keys, (key, status, body) =>
    expect(`${key}: ${status} ${body}`).toBe(`${key}: 200 new ${key}`),
  );
  // Each read asked n3 once, in full or for a digest; each time its digest was the newest, once
  // more for the value. The rotation puts another replica first for most keys.
  const fetched = (await digestMismatches()) - mismatches0;
  expect(fetched).toBeGreaterThanOrEqual(1);
  expect((await n3Reads()) - reads0).toBe(keys.length + fetched);

  // Read repair brought the value (not just the version) to n1 and n2.
  for (const node of ['n1', 'n2']) {
    const c = nodeClient(tc, node);
    try {
      await waitFor(`read repair on ${node}`, async () => {
        const { records } = await c.call({ op: 'read', items });
        return records.every((r, i) => r !== null && decodeRecord(r).value.toString() === `new ${keys[i]}`);
      });
    } finally {
      c.close();
    }
  }
});

test('a newer record that expired, known only by its digest, reads as absent without fetching its value', async () => {
  // A short TTL, over before the reads (called after the "old" writes, so newer than them).
  const keys = Array.from({ length: 12 }, (_, i) => `e${i}`);
  await newerOnN3Only(keys, (key) => {
    const wall = Date.now() + 1;
    return {
      version: { wall, logical: 0, writer: 'test-writer' },
      value: Buffer.from(`short-lived ${key}`),
      tombstone: false,
      expiresAt: wall + 200,
    };
  });
  await new Promise((r) => setTimeout(r, 300));
  const [reads0, mismatches0] = [await n3Reads(), await digestMismatches()];
  await readEachAtAll(keys, (key, status) => expect(`${key}: ${status}`).toBe(`${key}: 404`));
  // n3 was asked once per read, and never again for a value that reads as absent anyway.
  expect((await n3Reads()) - reads0).toBe(keys.length);
  expect((await digestMismatches()) - mismatches0).toBe(0);
});

test('a stalled replica costs reads the hedge delay, not the RPC timeout', async () => {
  await tc.cluster.signal('n2', 'SIGSTOP');
  try {
    const { wrong, longestMs } = await readAll('quorum');
    expect(wrong).toEqual([]);
    const slow = await scrapeSum(tc.url, 'kvstore_gateway_read_extra_requests_total', { reason: 'slow' });
    expect(slow).toBeGreaterThanOrEqual(1);
    // Once a request to n2 is in flight, reads prefer the idle replicas: far fewer hedges than reads.
    expect(slow).toBeLessThan(KEYS / 4);
    // No read waited for n2's answer: that takes the 10 s RPC timeout (a behaviour check, not a speed one).
    expect(longestMs).toBeLessThan(10_000);
  } finally {
    await tc.cluster.signal('n2', 'SIGCONT');
  }
});

test('a stopped node shows as down in /v1/cluster, from its unanswered heartbeats, and up once it answers', async () => {
  const statusOf = async (id: string): Promise<string | undefined> => {
    const body = (await (await fetch(`${tc.url}/v1/cluster`)).json()) as {
      nodes: { id: string; status: string }[];
    };
    return body.nodes.find((n) => n.id === id)?.status;
  };
  expect(await statusOf('n2')).toBe('up');
  await tc.cluster.signal('n2', 'SIGSTOP');
  try {
    // Its connection stays open: only the missing answers tell (RpcClient's stall time, 3 s).
    await waitFor('n2 to show as down', async () => (await statusOf('n2')) === 'down', 15_000, 100);
    expect(await statusOf('n1')).toBe('up');
  } finally {
    await tc.cluster.signal('n2', 'SIGCONT');
  }
  await waitFor('n2 to show as up again', async () => (await statusOf('n2')) === 'up', 15_000, 100);
});

test('a killed replica is skipped, and reads still answer at quorum', async () => {
  await tc.cluster.signal('n3', 'SIGKILL');
  expect((await readAll('quorum')).wrong).toEqual([]);
  expect((await readAll('one')).wrong).toEqual([]);
  const all = await fetch(kv('k1'), { headers: { 'X-Consistency': 'all' } });
  expect(all.status).toBe(503);
});
