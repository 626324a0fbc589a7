import fs from 'node:fs';
import path from 'node:path';
import { nodeClient, startTestCluster, type TestCluster } from './cluster-harness';
import { scrapeSum } from './metrics-scrape';
import { waitFor } from './wait-for';

/**
 * Hinted handoff across real processes: while n2 is dead, the gateway leaves a
 * hint for every write n2 missed with a live replica (n1 or n3); when n2 is
 * back, n1 and n3 replay them. The proof reads nothing through the gateway
 * before n1 and n3 are stopped (a read would repair n2 and hide a missing
 * hint): with n2 alone, every key written or deleted during its outage is there.
 */
jest.setTimeout(180_000);

let tc: TestCluster;

afterAll(async () => {
  await tc?.stop(true);
});

const kv = (key: string): string => `${tc.url}/v1/kv/${encodeURIComponent(key)}`;

async function send(
  method: 'PUT' | 'DELETE',
  key: string,
  consistency: string,
  body?: string,
): Promise<number> {
  const res = await fetch(kv(key), { method, body, headers: { 'X-Consistency': consistency } });
  await res.arrayBuffer();
  return res.status;
}

const scrape = (url: string, name: string): Promise<number> => scrapeSum(url, name);

async function onNodes(nodes: string[], name: string): Promise<number> {
  const values = await Promise.all(nodes.map((id) => scrape(tc.cluster.adminUrl(id), name)));
  return values.reduce((a, b) => a + b, 0);
}

/** Hints a node reports over its internal API (`info`), as a peer would see them. */
async function hintsByInfo(nodeId: string): Promise<number> {
  const c = nodeClient(tc, nodeId, 'e2e-probe', 2000);
  try {
    return (await c.call({ op: 'info' })).hints ?? -1;
  } finally {
    c.close();
  }
}

test('writes and deletes missed by a dead node reach it through hints, without any read', async () => {
  // Anti-entropy off, so the data n2 ends up with can only have come from hints.
  tc = await startTestCluster({ nodeArgs: ['--anti-entropy-interval-ms', '0'] });
  const live = ['n1', 'n3'];

  // Keys that exist on all three replicas, to be deleted while n2 is down.
  const doomed = Array.from({ length: 10 }, (_, i) => `doomed-${i}`);
  for (const k of doomed) expect(await send('PUT', k, 'all', 'old')).toBe(200);

  await tc.cluster.signal('n2', 'SIGKILL');

  const written = new Map<string, string>();
  for (let i = 0; i < 100; i++) {
    const key = `hinted/${i}`;
    expect(await send('PUT', key, 'quorum', `value-${i}`)).toBe(200);
    written.set(key, `value-${i}`);
  }
  for (const k of doomed) expect(await send('DELETE', k, 'quorum')).toBe(200);
  // A write refused with 503 (`all` cannot be met) still reached n1 and n3: n2 gets it by hint too.
  expect(await send('PUT', 'refused-at-all', 'all', 'partial')).toBe(503);
  written.set('refused-at-all', 'partial');
  const missed = written.size + doomed.length;

  // RF=3 on 3 nodes: every partition has n2, so every write left exactly one hint for it.
  await waitFor(
    'hints on n1 and n3',
    async () => (await onNodes(live, 'kvstore_node_hints_stored')) >= missed,
  );
  expect(await onNodes(live, 'kvstore_node_hints_stored')).toBe(missed);
  expect((await hintsByInfo('n1')) + (await hintsByInfo('n3'))).toBe(missed);
  expect(await onNodes(live, 'kvstore_node_hints_bytes')).toBeGreaterThan(0);
  expect(await scrape(tc.url, 'kvstore_gateway_hints_sent_total')).toBe(missed);
  // Hints are spread over both live replicas, not piled on one.
  expect(await hintsByInfo('n1')).toBeGreaterThan(0);
  expect(await hintsByInfo('n3')).toBeGreaterThan(0);

  await tc.cluster.startProcess('n2');
  await waitFor('hints replayed', async () => (await onNodes(live, 'kvstore_node_hints_stored')) === 0);
  expect(await onNodes(live, 'kvstore_node_hints_replayed_total')).toBe(missed);
  expect(await onNodes(live, 'kvstore_node_hints_bytes')).toBe(0);
  expect(await onNodes(live, 'kvstore_node_hints_dropped_total')).toBe(0);

  // n2 alone: everything it missed must be on its disk now.
  await tc.cluster.signal('n1', 'SIGTERM');
  await tc.cluster.signal('n3', 'SIGTERM');
  const wrong: string[] = [];
  for (const [key, value] of written) {
    const res = await fetch(kv(key), { headers: { 'X-Consistency': 'one' } });
    const body = await res.text();
    if (res.status !== 200 || body !== value) wrong.push(`${key}: ${res.status} ${body}`);
  }
  for (const key of doomed) {
    const res = await fetch(kv(key), { headers: { 'X-Consistency': 'one' } });
    const body = await res.text();
    if (res.status !== 404) wrong.push(`${key} should be deleted: ${res.status} ${body}`);
  }
  expect(wrong).toEqual([]);
  // And it really was n2 alone answering.
  expect((await fetch(kv('hinted/0'), { headers: { 'X-Consistency': 'quorum' } })).status).toBe(503);
});

test('a replica that times out (SIGSTOP) gets hints too, and they drain once it answers', async () => {
  await tc?.stop(true);
  tc = await startTestCluster({ gatewayArgs: ['--rpc-timeout-ms', '500'] });
  const live = ['n1', 'n3'];
  await tc.cluster.signal('n2', 'SIGSTOP');
  try {
    for (let i = 0; i < 5; i++) expect(await send('PUT', `slow/${i}`, 'quorum', `s${i}`)).toBe(200);
    // The calls to n2 time out after 500 ms; only then are the hints left.
    await waitFor(
      'hints for the stalled node',
      async () => (await onNodes(live, 'kvstore_node_hints_stored')) === 5,
    );
  } finally {
    await tc.cluster.signal('n2', 'SIGCONT');
  }
  await waitFor('hints replayed', async () => (await onNodes(live, 'kvstore_node_hints_stored')) === 0);
  expect(await onNodes(live, 'kvstore_node_hints_replayed_total')).toBe(5);
});

test('--max-hint-bytes bounds the store: the oldest hints are dropped first, counted and logged', async () => {
  await tc?.stop(true);
  const bound = 4096;
  // Anti-entropy off: this test checks that dropped hints are really gone, which a repair pass would hide.
  tc = await startTestCluster({
    nodeArgs: ['--max-hint-bytes', String(bound), '--anti-entropy-interval-ms', '0'],
  });
  const live = ['n1', 'n3'];
  await tc.cluster.signal('n2', 'SIGKILL');
  const keys = Array.from({ length: 100 }, (_, i) => `bounded/${i}`);
  for (const k of keys) expect(await send('PUT', k, 'quorum', `${k}=${'x'.repeat(100)}`)).toBe(200);

  const accounted = async (): Promise<number> =>
    (await onNodes(live, 'kvstore_node_hints_stored')) +
    (await onNodes(live, 'kvstore_node_hints_dropped_total'));
  await waitFor('every hint stored or dropped', async () => (await accounted()) === keys.length);
  for (const id of live) {
    expect(await scrape(tc.cluster.adminUrl(id), 'kvstore_node_hints_bytes')).toBeLessThanOrEqual(bound);
    expect(await scrape(tc.cluster.adminUrl(id), 'kvstore_node_hints_dropped_total')).toBeGreaterThan(0);
    const logged = fs
      .readFileSync(path.join(tc.cluster.logDir, `${id}.log`), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"reason":"overflow"') && l.includes('"target":"n2"'));
    expect(logged.length).toBeGreaterThan(0);
    expect(logged[0]).toMatch(/"level":"warn"/);
    expect(logged[0]).toMatch(/"dropped":\d+/);
  }

  await tc.cluster.startProcess('n2');
  await waitFor('hints replayed', async () => (await onNodes(live, 'kvstore_node_hints_stored')) === 0);
  await tc.cluster.signal('n1', 'SIGTERM');
  await tc.cluster.signal('n3', 'SIGTERM');
  const onN2 = async (k: string): Promise<number> => {
    const res = await fetch(kv(k), { headers: { 'X-Consistency': 'one' } });
    await res.arrayBuffer();
    return res.status;
  };
  // The newest hints survived and were replayed; the oldest were the ones dropped.
  for (const k of keys.slice(-10)) expect(await onN2(k)).toBe(200);
  expect(await onN2(keys[0])).toBe(404);
});
