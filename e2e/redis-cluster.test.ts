import type { PartitionMap } from '../common/partition-map';
import { RedisMetadataStore } from '../common/redis-metadata-store';
import { startExtraGateway, startTestCluster, type ExtraGateway, type TestCluster } from './cluster-harness';
import { startRedis, type RunningRedis } from './redis-server';

/**
 * A local cluster whose partition map lives in a real redis-server: nodes and
 * two gateway processes load it from Redis, and a new map published there
 * reaches both gateways without a restart.
 */
jest.setTimeout(60_000);

let redis: RunningRedis;
let tc: TestCluster;
let second: ExtraGateway;

beforeAll(async () => {
  redis = await startRedis();
  tc = await startTestCluster({ redisUrl: redis.url, cluster: 'redis-test' });
  second = await startExtraGateway(tc);
});

afterAll(async () => {
  await second?.stop();
  await tc?.stop(true);
  await redis?.stop();
});

async function epochAt(url: string): Promise<number> {
  const body = (await (await fetch(`${url}/v1/cluster`)).json()) as { epoch: number };
  return body.epoch;
}

test('the map is in Redis under kvstore:<cluster>:map and both gateways serve the same data', async () => {
  const store = new RedisMetadataStore({ url: redis.url, cluster: 'redis-test' });
  try {
    const map = await store.load();
    expect(map?.cluster).toBe('redis-test');
    expect(map?.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3']);
  } finally {
    await store.close();
  }
  const put = await fetch(`${tc.url}/v1/kv/shared`, { method: 'PUT', body: 'from gateway one' });
  expect(put.status).toBe(200);
  const get = await fetch(`${second.url}/v1/kv/shared`);
  expect(await get.text()).toBe('from gateway one');
  // versions from two gateways never tie: the writer id is part of the version
  const put2 = await fetch(`${second.url}/v1/kv/shared`, { method: 'PUT', body: 'from gateway two' });
  expect(((await put2.json()) as { version: string }).version).toMatch(/\.gw-second$/);
  expect(await (await fetch(`${tc.url}/v1/kv/shared`)).text()).toBe('from gateway two');
});

test('a map change published through Redis reaches both gateways and every node', async () => {
  const store = new RedisMetadataStore({ url: redis.url, cluster: 'redis-test' });
  try {
    const current = (await store.load()) as PartitionMap;
    expect(await epochAt(tc.url)).toBe(current.epoch);
    // Same nodes, replica order rotated: a new epoch everyone must pick up.
    const next: PartitionMap = {
      ...current,
      epoch: current.epoch + 1,
      partitions: current.partitions.map((owners) => [...owners.slice(1), owners[0]]),
    };
    expect(await store.compareAndSet(next, current.epoch)).toBe(true);
    for (const url of [tc.url, second.url]) {
      let epoch = 0;
      for (let i = 0; i < 300 && epoch !== next.epoch; i++) {
        epoch = await epochAt(url);
        if (epoch !== next.epoch) await new Promise((r) => setTimeout(r, 50));
      }
      expect(epoch).toBe(next.epoch);
    }
    // nodes follow too: their metrics report the new epoch
    for (const id of tc.cluster.nodeIds()) {
      const metricsUrl = `${tc.cluster.adminUrl(id)}/metrics`;
      let text = '';
      for (
        let t = 0;
        t < 100 && !text.match(new RegExp(`kvstore_node_map_epoch\\{[^}]*\\} ${next.epoch}\\b`));
        t++
      ) {
        text = await (await fetch(metricsUrl)).text();
        if (t) await new Promise((r) => setTimeout(r, 50));
      }
      expect(text).toMatch(new RegExp(`kvstore_node_map_epoch\\{[^}]*\\} ${next.epoch}\\b`));
    }
    // and the data path works on the new epoch
    expect((await fetch(`${second.url}/v1/kv/after-change`, { method: 'PUT', body: 'ok' })).status).toBe(200);
    expect(await (await fetch(`${tc.url}/v1/kv/after-change`)).text()).toBe('ok');
  } finally {
    await store.close();
  }
});
