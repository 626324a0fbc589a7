import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import pino from 'pino';
import { KeyValueStoreClient } from '../client';
import { FileMetadataStore } from '../common/file-metadata-store';
import type { NodeInfo, PartitionMap } from '../common/partition-map';
import { mapViolations, replicaLoad } from '../common/rebalance-plan';
import { Rebalancer } from '../common/rebalancer';
import { startTestCluster, type TestCluster } from './cluster-harness';
import { freePortBlock } from './free-port';
import { scrapeSum } from './metrics-scrape';

/**
 * The rebalancing protocol on real processes, driven by the Rebalancer module
 * directly (no launcher): a fourth node joins a running 3-node RF 2 cluster and
 * leaves again while writers keep writing. Nothing acknowledged is lost, no
 * request fails, the map stays well formed, and the nodes that gave partitions
 * away delete them after the grace period.
 */
jest.setTimeout(180_000);

const DIST_NODE = path.resolve(__dirname, '..', 'dist', 'node', 'main.js');
const GRACE_MS = 2000;

let tc: TestCluster | undefined;
let extra: ChildProcess | undefined;
let rebalancer: Rebalancer | undefined;

afterAll(async () => {
  await rebalancer?.stop();
  extra?.kill('SIGKILL');
  await tc?.stop(true);
});

const metric = (url: string, name: string): Promise<number> => scrapeSum(url, name);

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Writers on disjoint keys, one request at a time each: the last acknowledged value of a key is what a read must return. */
function startWriters(client: KeyValueStoreClient, writers: number, keysPerWriter: number) {
  const acked = new Map<string, string>();
  const failures: string[] = [];
  let stop = false;
  let writes = 0;
  const loops = Array.from({ length: writers }, async (_, w) => {
    for (let i = 0; !stop; i++) {
      const key = `w${w}-k${i % keysPerWriter}`;
      const value = `v${i}`;
      try {
        await client.put(key, value);
        acked.set(key, value);
        writes++;
      } catch (err) {
        failures.push(`${key}: ${(err as Error).message}`);
      }
    }
  });
  return {
    acked,
    failures,
    writes: () => writes,
    async stop() {
      stop = true;
      await Promise.all(loops);
    },
  };
}

async function checkAll(
  client: KeyValueStoreClient,
  acked: Map<string, string>,
  consistency: 'quorum' | 'all',
) {
  const wrong: string[] = [];
  for (const [key, value] of acked) {
    const got = await client.getEntry(key, { consistency });
    if (got?.value.toString() !== value) wrong.push(`${key}: want ${value}, got ${got?.value.toString()}`);
  }
  expect(wrong).toEqual([]);
}

function expectBalanced(map: PartitionMap): void {
  expect(mapViolations(map)).toEqual([]);
  const loads = [...replicaLoad(map).values()];
  const mean = (map.partitionCount * map.replicationFactor) / map.nodes.length;
  for (const l of loads) expect(Math.abs(l - mean)).toBeLessThanOrEqual(1);
}

test('a node joins and leaves a live cluster: no failed request, no lost write, old copies cleaned up', async () => {
  const port = await freePortBlock(4);
  tc = await startTestCluster({
    port,
    nodes: 3,
    replicationFactor: 2,
    partitionCount: 16,
    // This test drives the Rebalancer module itself: the launcher must not own the map too.
    rebalancer: false,
    nodeArgs: ['--moved-data-grace-ms', String(GRACE_MS)],
  });
  const client = new KeyValueStoreClient({ url: tc.url, consistency: 'quorum' });
  const store = new FileMetadataStore(tc.cluster.metadataFile);
  const log = pino({ level: process.env.LOG_LEVEL ?? 'silent' });
  rebalancer = await Rebalancer.start({
    store,
    log,
    pollIntervalMs: 200,
    internalToken: tc.cluster.internalToken,
  });
  const initial = rebalancer.current() as PartitionMap;

  // Data before the move, then writers for the whole test.
  for (let i = 0; i < 300; i++) await client.put(`pre-${i}`, `p${i}`);
  const writers = startWriters(client, 4, 50);

  const n4: NodeInfo = { id: 'n4', address: `127.0.0.1:${port + 4}` };
  extra = spawn(
    process.execPath,
    [
      DIST_NODE,
      '--id',
      'n4',
      '--cluster',
      'local',
      '--data-dir',
      path.join(tc.dataDir, 'nodes', 'n4'),
      '--listen',
      n4.address,
      '--admin-listen',
      `127.0.0.1:${port + 104}`,
      '--metadata-file',
      tc.cluster.metadataFile,
      '--internal-token-file',
      tc.cluster.internalTokenFile,
      '--moved-data-grace-ms',
      String(GRACE_MS),
    ],
    { stdio: 'ignore' },
  );
  const n4Admin = `http://127.0.0.1:${port + 104}`;
  await waitFor(
    'n4 ready',
    async () => (await fetch(`${n4Admin}/readyz`).catch(() => undefined))?.ok === true,
    30_000,
  );

  const planned = await rebalancer.scale([...initial.nodes, n4]);
  expect(planned.epoch).toBeGreaterThan(initial.epoch);
  expect(planned.rebalance?.targetNodes).toEqual(['n1', 'n2', 'n3', 'n4']);
  // 16 partitions x RF 2 over 4 nodes: n4 takes 8 replicas, the least any plan can move.
  expect(planned.moves).toHaveLength(8);
  expect(planned.moves.every((m) => m.to === 'n4')).toBe(true);
  await rebalancer.idle();

  const grown = rebalancer.current() as PartitionMap;
  expect(grown.moves).toEqual([]);
  expect(grown.rebalance).toBeUndefined();
  expect(grown.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3', 'n4']);
  expectBalanced(grown);
  expect(await metric(n4Admin, 'kvstore_node_move_keys_streamed_total')).toBeGreaterThan(0);

  // The nodes that gave replicas to n4 delete them after the grace period.
  await waitFor(
    'old copies deleted',
    async () => {
      let dropped = 0;
      for (const id of tc?.cluster.nodeIds() ?? []) {
        dropped += await metric(tc!.cluster.adminUrl(id), 'kvstore_node_moved_records_dropped_total');
      }
      return dropped > 0;
    },
    30_000,
  );

  // Shrink back: n4 drains, then leaves the map.
  await rebalancer.scale(initial.nodes);
  await rebalancer.idle();
  const shrunk = rebalancer.current() as PartitionMap;
  expect(shrunk.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3']);
  expectBalanced(shrunk);
  const writes = writers.writes();
  await writers.stop();
  expect(writers.failures).toEqual([]);
  expect(writes).toBeGreaterThan(0);

  // n4 is gone from the map: stop it; everything must be on n1..n3, on every replica.
  extra.kill('SIGTERM');
  await new Promise((r) => extra?.once('exit', r));
  extra = undefined;
  const pre = new Map(Array.from({ length: 300 }, (_, i) => [`pre-${i}`, `p${i}`] as [string, string]));
  await checkAll(client, pre, 'all');
  await checkAll(client, writers.acked, 'all');
});
