import { startTestCluster, type TestCluster } from './cluster-harness';

/**
 * A node dies (SIGKILL, no goodbye) in a 3-node, RF=3 cluster: quorum reads and
 * writes go on, `all` is refused with 503, and nothing acknowledged is lost,
 * across the node's restart and a restart of the whole cluster.
 */
jest.setTimeout(120_000);

let tc: TestCluster;
const acked = new Map<string, string>();

afterAll(async () => {
  await tc?.stop(true);
});

function kv(key: string): string {
  return `${tc.url}/v1/kv/${encodeURIComponent(key)}`;
}

async function put(key: string, value: string, consistency = 'quorum'): Promise<Response> {
  const res = await fetch(kv(key), { method: 'PUT', body: value, headers: { 'X-Consistency': consistency } });
  if (res.status === 200) acked.set(key, value);
  return res;
}

async function get(key: string, consistency = 'quorum'): Promise<Response> {
  return fetch(kv(key), { headers: { 'X-Consistency': consistency } });
}

async function expectAllAcknowledged(consistency: string): Promise<void> {
  const missing: string[] = [];
  for (const [k, v] of acked) {
    const res = await get(k, consistency);
    if (res.status !== 200 || (await res.text()) !== v) missing.push(k);
  }
  expect(missing).toEqual([]);
}

test('SIGKILL one of three nodes, keep serving at quorum, restart, lose nothing', async () => {
  tc = await startTestCluster();
  for (let i = 0; i < 100; i++) expect((await put(`before-${i}`, `v${i}`)).status).toBe(200);

  await tc.cluster.signal('n2', 'SIGKILL');

  // Writes and reads at quorum keep working with one replica gone.
  for (let i = 0; i < 100; i++) expect((await put(`during-${i}`, `d${i}`)).status).toBe(200);
  await expectAllAcknowledged('quorum');
  // `one` also works.
  expect((await put('during-one', 'x', 'one')).status).toBe(200);

  // `all` cannot be met: a clear 503 JSON error, for reads and writes alike.
  const w = await put('needs-all', 'x', 'all');
  expect(w.status).toBe(503);
  const body = (await w.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe('unavailable');
  expect(body.error.message).toMatch(/needs 3 of 3 replicas/);
  expect((await get('before-1', 'all')).status).toBe(503);

  // The node comes back: everything acknowledged is readable, and `all` works again.
  await tc.cluster.startProcess('n2');
  await expectAllAcknowledged('quorum');
  expect((await put('after-restart', 'y', 'all')).status).toBe(200);

  // Reads at `all` answer with the newest version and read-repair n2 in the background.
  await expectAllAcknowledged('all');

  // Proof of the repair: with n1 and n3 stopped, n2 alone serves every key at `one`,
  // including the 100 written while it was dead.
  await tc.cluster.signal('n1', 'SIGTERM');
  await tc.cluster.signal('n3', 'SIGTERM');
  let missingOnN2 = [...acked.keys()];
  // Repair writes are sent right after a read completes; give the last few a moment to land.
  for (let round = 0; round < 20 && missingOnN2.length > 0; round++) {
    if (round > 0) await new Promise((r) => setTimeout(r, 100));
    const still: string[] = [];
    for (const k of missingOnN2) {
      const res = await get(k, 'one');
      if (res.status !== 200 || (await res.text()) !== acked.get(k)) still.push(k);
    }
    missingOnN2 = still;
  }
  expect(missingOnN2).toEqual([]);
  expect((await get('before-1', 'quorum')).status).toBe(503);

  // A restart of the whole cluster on the same data directory keeps every acknowledged key.
  const { dataDir, port } = tc;
  await tc.stop();
  tc = await startTestCluster({ dataDir, port });
  await expectAllAcknowledged('all');
  expect(acked.size).toBeGreaterThan(200);
});
