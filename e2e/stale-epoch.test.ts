import pino from 'pino';
import { FileMetadataStore } from '../common/file-metadata-store';
import { HybridLogicalClock } from '../common/hlc';
import { PartitionMapHolder } from '../common/metadata-store';
import type { PartitionMap } from '../common/partition-map';
import { PeerPool } from '../common/peer-pool';
import { Coordinator } from '../gateway/coordinator';
import { GatewayMetrics } from '../gateway/metrics';
import { startTestCluster, type TestCluster } from './cluster-harness';

/**
 * A coordinator that still routes by an old map epoch: real node processes that
 * already hold the newer map refuse it, and the coordinator reloads the map and
 * retries, so the client never sees the change (docs/design.md, "Metadata: ConfigMap and Redis": as Redis Cluster's MOVED).
 */
jest.setTimeout(60_000);

let tc: TestCluster;

afterAll(async () => {
  await tc?.stop(true);
});

test('a coordinator on a stale epoch is refused, reloads the map, and succeeds', async () => {
  tc = await startTestCluster();
  const store = new FileMetadataStore(tc.cluster.metadataFile);
  const old = (await store.load()) as PartitionMap;
  const next: PartitionMap = { ...old, epoch: old.epoch + 1 };
  expect(await store.compareAndSet(next, old.epoch)).toBe(true);

  // wait until every node has taken the new epoch
  for (const id of tc.cluster.nodeIds()) {
    let text = '';
    for (let i = 0; i < 300 && !text.includes(`} ${next.epoch}\n`); i++) {
      if (i) await new Promise((r) => setTimeout(r, 50));
      text =
        (await (await fetch(`${tc.cluster.adminUrl(id)}/metrics`)).text())
          .split('\n')
          .filter((l) => l.startsWith('kvstore_node_map_epoch'))
          .join('\n') + '\n';
    }
    expect(text).toContain(`} ${next.epoch}\n`);
  }

  const clock = new HybridLogicalClock('gw-stale');
  const metrics = new GatewayMetrics({ gateway: 'gw-stale' });
  // The coordinator's holder is not following the store: it only learns by refresh().
  const staleCoordinator = (): { holder: PartitionMapHolder; pool: PeerPool; coordinator: Coordinator } => {
    const holder = new PartitionMapHolder({ store });
    holder.accept(old);
    const pool = new PeerPool({
      clock,
      epoch: () => holder.epoch(),
      timeoutMs: 2000,
      token: tc.cluster.internalToken,
    });
    pool.update(old);
    return {
      holder,
      pool,
      coordinator: new Coordinator(holder, pool, clock, metrics, pino({ level: 'silent' })),
    };
  };
  const { holder, pool, coordinator } = staleCoordinator();
  try {
    const version = await coordinator.put(Buffer.from('k'), Buffer.from('v'), { consistency: 'all' });
    expect(version.writer).toBe('gw-stale');
    expect(holder.epoch()).toBe(next.epoch);
    const rec = await coordinator.get(Buffer.from('k'), { consistency: 'all' });
    expect(rec?.value.toString()).toBe('v');
    const refused = await metrics.replicaRequests.get();
    expect(refused.values.some((v) => v.labels.outcome === 'stale_epoch' && v.value > 0)).toBe(true);

    // A batch on the old epoch too: every node refuses its RPCs, and the whole batch retries by the new map.
    const { holder: batchHolder, pool: batchPool, coordinator: batcher } = staleCoordinator();
    try {
      const out = await batcher.batch(
        [
          { op: 'put', key: Buffer.from('b1'), value: Buffer.from('1') },
          { op: 'get', key: Buffer.from('k') },
          { op: 'get', key: Buffer.from('b1') },
        ],
        { consistency: 'all' },
      );
      expect(out.map((o) => (o.ok ? o.op : o.error.message))).toEqual(['put', 'get', 'get']);
      expect(out[1]?.ok && out[1].op === 'get' ? out[1].record?.value.toString() : undefined).toBe('v');
      expect(out[2]?.ok && out[2].op === 'get' ? out[2].record?.value.toString() : undefined).toBe('1');
      expect(batchHolder.epoch()).toBe(next.epoch);
    } finally {
      batchPool.close();
    }
  } finally {
    pool.close();
    await store.close();
  }
});
