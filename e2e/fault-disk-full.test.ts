import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { KeyValueStoreClient, KvClientError } from '../client';
import { partitionOf } from '../common/hash';
import { decodeRecord } from '../common/record';
import { nodeClient, startTestCluster, tempDir, type TestCluster } from './cluster-harness';
import { scrapeSum } from './metrics-scrape';
import { startRecordedLoad, stopAndCheckLoad, type RecordedLoad } from './recorded-load';
import { waitFor } from './wait-for';

/**
 * Fault suite: data volumes fill up (issue 23). Each node's data directory sits on a tmpfs of its
 * own, mounted by the test (it runs as root) and unmounted after. A full volume must make its node
 * refuse writes that grow the data (`insufficient_storage`, and `507` at the gateway when too few
 * replicas had room) while it keeps serving reads, never crash or restart, and take writes again
 * by itself once there is room, catching up on what it missed. A recorded load runs throughout and
 * goes through the history checker: no acknowledged write is lost.
 */
jest.setTimeout(240_000);

const MiB = 1024 * 1024;
const VALUE = Buffer.alloc(64 * 1024, 7);
/** The watermark the nodes run with: 8 MiB, whatever the size of the volume. */
const NODE_ARGS = [
  '--disk-min-free-bytes',
  String(8 * MiB),
  '--disk-min-free-percent',
  '0',
  '--anti-entropy-interval-ms',
  '2000',
];

const mounts: string[] = [];
let tc: TestCluster | undefined;
let dataDir: string | undefined;
let load: RecordedLoad | undefined;

afterEach(async () => {
  load?.abort.abort();
  await load?.done.catch(() => undefined);
  load = undefined;
  await tc?.stop();
  tc = undefined;
  // KVSTORE_KEEP_DATA=1 keeps the logs of a failed run (the volumes themselves go with their mounts).
  if (dataDir && process.env.KVSTORE_KEEP_DATA) {
    for (const m of mounts) fs.cpSync(m, `${m}.kept`, { recursive: true });
    process.stderr.write(`kept ${dataDir}\n`);
  }
  for (const m of mounts.splice(0)) execFileSync('umount', [m]);
  if (dataDir && !process.env.KVSTORE_KEEP_DATA) fs.rmSync(dataDir, { recursive: true, force: true });
  dataDir = undefined;
});

/** A tmpfs of `mib` MiB as node `id`'s data directory. */
function mountVolume(dir: string, id: string, mib: number): string {
  const at = path.join(dir, 'nodes', id);
  fs.mkdirSync(at, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m`, 'tmpfs', at]);
  mounts.push(at);
  return at;
}

function resize(at: string, mib: number): void {
  execFileSync('mount', ['-o', `remount,size=${mib}m`, at]);
}

interface DiskReadiness {
  status: string;
  disk?: { pressure: boolean; availableBytes: number; thresholdBytes: number; reason?: string };
}

async function readiness(t: TestCluster, id: string): Promise<DiskReadiness> {
  const res = await fetch(`${t.cluster.adminUrl(id)}/readyz`);
  return (await res.json()) as DiskReadiness;
}

async function pressured(t: TestCluster, id: string): Promise<boolean> {
  return (await readiness(t, id)).disk?.pressure === true;
}

/** The record node `id` holds for `key`, read over its own RPC (not through the gateway, which would repair). */
async function heldBy(t: TestCluster, id: string, key: string): Promise<Buffer | undefined> {
  const k = Buffer.from(key);
  const client = nodeClient(t, id);
  try {
    const reply = await client.call({
      op: 'read',
      items: [{ p: partitionOf(k, t.cluster.map.partitionCount), k }],
    });
    const raw = reply.records[0];
    return raw ? decodeRecord(raw).value : undefined;
  } finally {
    client.close();
  }
}

/** Waits until node `id` itself holds VALUE for every key (hints and anti-entropy bring them). */
async function waitHeldBy(t: TestCluster, id: string, keys: readonly string[]): Promise<void> {
  await waitFor(
    `${id} to hold every write it missed`,
    async () => {
      for (const key of keys) if (!(await heldBy(t, id, key))?.equals(VALUE)) return false;
      return true;
    },
    60_000,
    500,
  );
}

async function status(op: () => Promise<unknown>): Promise<{ status: number; message: string }> {
  try {
    await op();
    return { status: 200, message: '' };
  } catch (err) {
    if (err instanceof KvClientError && err.status !== undefined)
      return { status: err.status, message: err.message };
    throw err;
  }
}

test('one node’s volume fills: it refuses writes and serves reads, quorum writes go on, all gets 507; grown, it catches up', async () => {
  dataDir = tempDir('disk-full');
  const volume = mountVolume(dataDir, 'n2', 48);
  tc = await startTestCluster({ dataDir, nodeArgs: NODE_ARGS });
  const t = tc;
  const kv = new KeyValueStoreClient({ url: t.url });
  const pid = t.cluster.pid('n2');
  load = startRecordedLoad(t.url, 200_000);

  // Fill n2 with 64 KiB values until it says it is under the watermark; every write is acknowledged.
  const written: string[] = [];
  for (let i = 0; !(await pressured(t, 'n2')); i += 8) {
    expect(i).toBeLessThan(2000);
    const batch = Array.from({ length: 8 }, (_, j) => `fill/${i + j}`);
    await Promise.all(batch.map((key) => kv.put(key, VALUE)));
    written.push(...batch);
  }
  const full = await readiness(t, 'n2');
  expect(full.status).toBe('ready'); // still serving
  expect(full.disk?.reason).toMatch(/the watermark of 8\.0 MiB/);
  expect(await scrapeSum(t.cluster.adminUrl('n2'), 'kvstore_node_disk_pressure')).toBe(1);

  // Under pressure: quorum writes go through the other two, `all` names the full node.
  const during = Array.from({ length: 40 }, (_, i) => `during/${i}`);
  for (const key of during) await kv.put(key, VALUE);
  const all = await status(() => kv.put('all/one', VALUE, { consistency: 'all' }));
  expect(all.status).toBe(507);
  expect(all.message).toMatch(/n2 had no room/);
  // Reads of every key answer, through the gateway at quorum and one, and from n2 itself.
  for (const key of written)
    expect((await kv.getBytes(key, { consistency: 'quorum' }))?.equals(VALUE)).toBe(true);
  for (const key of written.slice(0, 50))
    expect((await kv.getBytes(key, { consistency: 'one' }))?.equals(VALUE)).toBe(true);
  const n2Held = await heldBy(t, 'n2', written[0]);
  expect(n2Held?.equals(VALUE)).toBe(true);
  expect(
    await scrapeSum(t.cluster.adminUrl('n2'), 'kvstore_node_writes_refused_total', {
      reason: 'insufficient_storage',
    }),
  ).toBeGreaterThan(0);

  // Room again: n2 takes writes by itself, and gets what it missed (hints, anti-entropy), with no restart.
  resize(volume, 256);
  await waitFor('n2 to take writes again', async () => !(await pressured(t, 'n2')), 30_000, 200);
  expect((await status(() => kv.put('all/two', VALUE, { consistency: 'all' }))).status).toBe(200);
  await waitHeldBy(t, 'n2', during);
  expect(t.cluster.pid('n2')).toBe(pid);
  await stopAndCheckLoad(load, { replicationFactor: 3 });
  console.log(
    `fault case: one data volume full\n  filled n2 with ${written.length} values of 64 KiB; 40 more written at quorum while it was full; PUT at all: ${all.status}\n  grown to 256 MiB: n2 took writes again and caught up, pid unchanged`,
  );
});

test('every volume fills: reads go on, writes get 507 naming the nodes, nothing restarts; deletes free room and writes resume', async () => {
  dataDir = tempDir('disk-full-all');
  for (const id of ['n1', 'n2', 'n3']) mountVolume(dataDir, id, 40);
  tc = await startTestCluster({ dataDir, nodeArgs: NODE_ARGS });
  const t = tc;
  const kv = new KeyValueStoreClient({ url: t.url });
  const pids = ['n1', 'n2', 'n3'].map((id) => t.cluster.pid(id));

  const written: string[] = [];
  let refused: { status: number; message: string } | undefined;
  for (let i = 0; !refused; i++) {
    expect(i).toBeLessThan(2000);
    const key = `fill/${i}`;
    const r = await status(() => kv.put(key, VALUE));
    if (r.status === 200) written.push(key);
    else refused = r;
  }
  expect(refused.status).toBe(507);
  expect(refused.message).toMatch(/had no room for it/);
  // Writes keep being refused, cleanly; every acknowledged key still reads back.
  for (let i = 0; i < 5; i++) expect((await status(() => kv.put(`more/${i}`, VALUE))).status).toBe(507);
  for (const key of written) expect((await kv.getBytes(key))?.equals(VALUE)).toBe(true);

  // Deleting frees LMDB pages for reuse: allowed near the watermark, and then writes go in again.
  const freed = written.slice(0, Math.ceil(written.length / 2));
  for (const key of freed) expect((await status(() => kv.delete(key))).status).toBe(200);
  await waitFor(
    'every node to take writes again',
    async () => {
      for (const id of ['n1', 'n2', 'n3']) if (await pressured(t, id)) return false;
      return true;
    },
    30_000,
    200,
  );
  expect((await status(() => kv.put('after/1', VALUE, { consistency: 'all' }))).status).toBe(200);
  for (const key of written.slice(freed.length)) expect((await kv.getBytes(key))?.equals(VALUE)).toBe(true);
  for (const key of freed.slice(0, 20)) expect(await kv.getBytes(key)).toBeNull();
  expect(['n1', 'n2', 'n3'].map((id) => t.cluster.pid(id))).toEqual(pids);
  console.log(
    `fault case: every data volume full\n  ${written.length} values of 64 KiB acknowledged, then 507: ${refused.message}\n  deleted ${freed.length}: writes resumed; no process restarted`,
  );
});

test('another process fills the volume between two samples, so LMDB meets ENOSPC mid-commit: the node stays up, answers write_failed, and takes writes again', async () => {
  dataDir = tempDir('disk-enospc');
  const volume = mountVolume(dataDir, 'n2', 24);
  // No watermark: only the room a write needs is checked, against the last sample (once a second).
  tc = await startTestCluster({
    dataDir,
    nodeArgs: [
      '--disk-min-free-bytes',
      '0',
      '--disk-min-free-percent',
      '0',
      '--anti-entropy-interval-ms',
      '2000',
    ],
  });
  const t = tc;
  const kv = new KeyValueStoreClient({ url: t.url });
  const pid = t.cluster.pid('n2');
  const filler = path.join(volume, 'filler');
  const written: string[] = [];
  let failed = false;
  for (let attempt = 0; attempt < 20 && !failed; attempt++) {
    // Leave 16 KiB free, then write at once, before n2 samples its volume again.
    const s = fs.statfsSync(volume);
    fs.writeFileSync(filler, Buffer.alloc(Math.max(0, s.bavail * s.bsize - 16 * 1024)));
    const key = `fill/${attempt}`;
    await kv.put(key, VALUE); // n1 and n3 take it
    written.push(key);
    const reason = (await readiness(t, 'n2')).disk?.reason ?? '';
    failed = reason.includes('the last write transaction failed');
    if (!failed) {
      // The sample came first and the guard refused the write itself: free the room and try again.
      fs.rmSync(filler);
      await waitFor('n2 to have room again', async () => !(await pressured(t, 'n2')), 30_000, 100);
    }
  }
  expect(failed).toBe(true);
  // Up, serving reads, refusing writes; the quorum writes went on.
  expect((await readiness(t, 'n2')).status).toBe('ready');
  for (const key of written) expect((await kv.getBytes(key))?.equals(VALUE)).toBe(true);
  expect(await scrapeSum(t.cluster.adminUrl('n2'), 'kvstore_node_disk_pressure')).toBe(1);
  fs.rmSync(filler);
  await waitFor(
    'n2 to take writes at all again',
    async () => (await status(() => kv.put('all/after', VALUE, { consistency: 'all' }))).status === 200,
    60_000,
    500,
  );
  await waitHeldBy(t, 'n2', written);
  expect(t.cluster.pid('n2')).toBe(pid);
  console.log(
    `fault case: ENOSPC inside LMDB's commit (the volume filled by another process)\n  n2's commit failed; it stayed up and served reads, answered write_failed\n  room back: it took writes again and caught up, pid unchanged`,
  );
});
