import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { CoreV1Api, KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import Redis from 'ioredis';
import pino from 'pino';
import {
  CONFIGMAP_MAP_KEY,
  ConfigMapMetadataStore,
  EPOCH_ANNOTATION,
  type ConfigMapMetadataStoreOptions,
} from '../../common/configmap-metadata-store';
import { MetadataError, PartitionMapHolder, type MetadataStore } from '../../common/metadata-store';
import { captureLogger, testMap, until } from '../../common/metadata-store.fixtures';
import {
  MirroredMetadataStore,
  type MirroredMetadataStoreOptions,
} from '../../common/mirrored-metadata-store';
import { openMetadataStore } from '../../common/open-metadata-store';
import type { PartitionMap } from '../../common/partition-map';
import { RedisMetadataStore } from '../../common/redis-metadata-store';
import { freePort } from '../free-port';
import { startRedis, type RunningRedis } from '../redis-server';
import { startControlPlane, type ControlPlane } from './control-plane';

/*
 * The ConfigMap store (the authoritative copy) and the mirrored store (ConfigMap + Redis)
 * against a real kube-apiserver (e2e/k8s/control-plane.ts) and a real redis-server. One
 * control plane for the whole file; each test uses a cluster name of its own, hence its own
 * ConfigMap, Redis key and channel.
 */

const START_TIMEOUT_MS = 40 * 60_000; // a first build of the binaries; cached, a start takes ~10 s
jest.setTimeout(60_000);

const NAMESPACE = 'kv-meta';
const silent = pino({ level: 'silent' });

let cp: ControlPlane | undefined;
let kc: KubeConfig;
let core: CoreV1Api;

beforeAll(async () => {
  cp = await startControlPlane();
  kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NAMESPACE } } });
}, START_TIMEOUT_MS);

afterAll(async () => {
  await cp?.stop();
}, 60_000);

let clusterSeq = 0;
/** A fresh cluster name per test: its own ConfigMap, Redis key and channel. */
const newCluster = (): string => `c${++clusterSeq}-${process.pid}`;

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  const failures = (await Promise.allSettled(closers.splice(0).map((c) => c()))).filter(
    (r) => r.status === 'rejected',
  );
  if (failures.length > 0) throw (failures[0] as PromiseRejectedResult).reason;
});
function track<T extends MetadataStore>(store: T): T {
  closers.push(() => store.close());
  return store;
}

function openConfigMap(
  cluster: string,
  opts: Partial<ConfigMapMetadataStoreOptions> = {},
): ConfigMapMetadataStore {
  return track(new ConfigMapMetadataStore({ kube: kc, namespace: NAMESPACE, cluster, log: silent, ...opts }));
}

async function readConfigMap(cluster: string): Promise<V1ConfigMap> {
  return core.readNamespacedConfigMap({ name: `${cluster}-partition-map`, namespace: NAMESPACE });
}

/** Replaces the stored ConfigMap by hand (as kubectl edit would). */
async function editConfigMap(cluster: string, edit: (cm: V1ConfigMap) => void): Promise<V1ConfigMap> {
  const cm = await readConfigMap(cluster);
  edit(cm);
  return core.replaceNamespacedConfigMap({
    name: `${cluster}-partition-map`,
    namespace: NAMESPACE,
    body: cm,
  });
}

// ---------------------------------------------------------------------------------------------
// The MetadataStore contract, run against every store in this file.
// ---------------------------------------------------------------------------------------------

interface ContractTarget {
  /** a new, open store for `cluster`; a slow poll proves notifications do the work */
  open(cluster: string, opts: { pollIntervalMs?: number }): MetadataStore;
}

function metadataStoreContract(name: string, target: () => ContractTarget): void {
  describe(`MetadataStore contract: ${name}`, () => {
    let cluster: string;
    beforeEach(() => {
      cluster = newCluster();
    });
    const mapOf = (epoch: number, tag = 0): PartitionMap => testMap(epoch, { cluster, tag });

    it('loads undefined when nothing was written, then compare-and-sets by epoch', async () => {
      const store = target().open(cluster, {});
      expect(await store.load()).toBeUndefined();
      expect(await store.compareAndSet(mapOf(1), undefined)).toBe(true);
      expect(await store.compareAndSet(mapOf(1, 1), 0)).toBe(false);
      expect(await store.compareAndSet(mapOf(5), 4)).toBe(false);
      expect(await store.compareAndSet(mapOf(2), 1)).toBe(true);
      expect(await store.load()).toEqual(mapOf(2));
      expect(await target().open(cluster, {}).load()).toEqual(mapOf(2));
      await expect(store.compareAndSet(mapOf(2), 2)).rejects.toMatchObject({ code: 'metadata_invalid' });
      await expect(store.compareAndSet(testMap(3, { cluster: 'other' }), 2)).rejects.toMatchObject({
        code: 'metadata_invalid',
      });
    });

    it('lets exactly one of several racing writers win each epoch', async () => {
      const writers = [target().open(cluster, {}), target().open(cluster, {}), target().open(cluster, {})];
      let expected: number | undefined;
      for (let epoch = 1; epoch <= 3; epoch++) {
        const results = await Promise.all(
          writers.flatMap((w, wi) =>
            Array.from({ length: 3 }, (_, j) => {
              const tag = wi * 10 + j;
              return w.compareAndSet(mapOf(epoch, tag), expected).then((won) => ({ won, tag }));
            }),
          ),
        );
        const winners = results.filter((r) => r.won);
        expect(winners).toHaveLength(1);
        expect((await writers[1].load())?.nodes[2].address).toBe(`127.0.0.1:${8000 + winners[0].tag}`);
        expected = epoch;
      }
    });

    it("another store's watch sees each write within a bound, in epoch order", async () => {
      const writer = target().open(cluster, {});
      // A poll this slow never fires during the test: what arrives came by notification.
      const reader = target().open(cluster, { pollIntervalMs: 600_000 });
      const seen: number[] = [];
      reader.watch((m) => seen.push(m.epoch));
      // Let the watch connect: the write below must come as an event, not as the initial look.
      await new Promise((r) => setTimeout(r, 500));
      for (let epoch = 1; epoch <= 3; epoch++) {
        const started = Date.now();
        expect(await writer.compareAndSet(mapOf(epoch), epoch === 1 ? undefined : epoch - 1)).toBe(true);
        await until(() => seen.includes(epoch), 5000);
        expect(Date.now() - started).toBeLessThan(5000);
      }
      expect(seen).toEqual([1, 2, 3]);
    });

    it('after close, calls fail with metadata_closed', async () => {
      const store = target().open(cluster, {});
      await store.load();
      await store.close();
      await expect(store.load()).rejects.toMatchObject({ code: 'metadata_closed' });
      await expect(store.compareAndSet(mapOf(1), undefined)).rejects.toMatchObject({
        code: 'metadata_closed',
      });
      expect(() => store.watch(() => undefined)).toThrow(MetadataError);
    });
  });
}

metadataStoreContract('ConfigMap', () => ({
  open: (cluster, opts) => openConfigMap(cluster, opts),
}));

// ---------------------------------------------------------------------------------------------
// ConfigMap store specifics
// ---------------------------------------------------------------------------------------------

describe('ConfigMapMetadataStore against a real API server', () => {
  let cluster: string;
  beforeEach(() => {
    cluster = newCluster();
  });
  const mapOf = (epoch: number, tag = 0): PartitionMap => testMap(epoch, { cluster, tag });

  it('stores map.json and the epoch annotation in <cluster>-partition-map, keeping what others set', async () => {
    const store = openConfigMap(cluster, { labels: { 'app.kubernetes.io/name': 'kvstore' } });
    expect(store.name).toBe(`${cluster}-partition-map`);
    expect(await store.compareAndSet(mapOf(1), undefined)).toBe(true);
    let cm = await readConfigMap(cluster);
    expect(JSON.parse(cm.data?.[CONFIGMAP_MAP_KEY] ?? 'null')).toEqual(mapOf(1));
    expect(cm.metadata?.annotations?.[EPOCH_ANNOTATION]).toBe('1');
    expect(cm.metadata?.labels).toEqual({ 'app.kubernetes.io/name': 'kvstore' });

    // Someone else's annotation, label and data key survive our writes.
    await editConfigMap(cluster, (c) => {
      c.metadata!.annotations = { ...c.metadata!.annotations, 'example.com/note': 'hello' };
      c.metadata!.labels = { ...c.metadata!.labels, team: 'storage' };
      c.data = { ...c.data, 'README.txt': 'managed by the kvstore operator' };
    });
    expect(await store.compareAndSet(mapOf(2), 1)).toBe(true);
    cm = await readConfigMap(cluster);
    expect(cm.metadata?.annotations).toEqual({ [EPOCH_ANNOTATION]: '2', 'example.com/note': 'hello' });
    expect(cm.metadata?.labels).toEqual({ 'app.kubernetes.io/name': 'kvstore', team: 'storage' });
    expect(cm.data?.['README.txt']).toBe('managed by the kvstore operator');
    expect(JSON.parse(cm.data?.[CONFIGMAP_MAP_KEY] ?? 'null')).toEqual(mapOf(2));
  });

  it('sets the owner references it is given, so the garbage collector deletes the map with its owner', async () => {
    // Any object can own; a ConfigMap stands in for the KVCluster here.
    const owner = await core.createNamespacedConfigMap({
      namespace: NAMESPACE,
      body: { metadata: { name: `${cluster}-owner` }, data: {} },
    });
    const ref = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      name: owner.metadata!.name!,
      uid: owner.metadata!.uid!,
    };
    const store = openConfigMap(cluster, { ownerReferences: [ref] });
    expect(await store.compareAndSet(mapOf(1), undefined)).toBe(true);
    expect(await store.compareAndSet(mapOf(2), 1)).toBe(true);
    expect((await readConfigMap(cluster)).metadata?.ownerReferences).toEqual([ref]);

    await core.deleteNamespacedConfigMap({ name: `${cluster}-owner`, namespace: NAMESPACE });
    // The real kube-controller-manager's garbage collector removes the dependent.
    const deadline = Date.now() + 30_000;
    while ((await store.load()) !== undefined) {
      if (Date.now() > deadline) throw new Error('partition map ConfigMap not garbage-collected within 30 s');
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  it('reports corrupt content as metadata_corrupt and never overwrites it', async () => {
    const store = openConfigMap(cluster);
    expect(await store.compareAndSet(mapOf(3), undefined)).toBe(true);
    const vandalisms: Array<[string, (cm: V1ConfigMap) => void]> = [
      ['not JSON', (cm) => void (cm.data![CONFIGMAP_MAP_KEY] = '{"epoch": 3, oops')],
      [
        'an invalid map',
        (cm) => void (cm.data![CONFIGMAP_MAP_KEY] = JSON.stringify({ ...mapOf(3), nodes: [] })),
      ],
      ['no map.json', (cm) => void delete cm.data![CONFIGMAP_MAP_KEY]],
      [
        'another cluster',
        (cm) => void (cm.data![CONFIGMAP_MAP_KEY] = JSON.stringify(testMap(3, { cluster: 'someone-else' }))),
      ],
      ['an annotation that disagrees', (cm) => void (cm.metadata!.annotations![EPOCH_ANNOTATION] = '7')],
    ];
    for (const [what, vandalise] of vandalisms) {
      // Start each case from a good map, then break it.
      await editConfigMap(cluster, (cm) => {
        cm.data = { [CONFIGMAP_MAP_KEY]: JSON.stringify(mapOf(3)) };
        cm.metadata!.annotations = { [EPOCH_ANNOTATION]: '3' };
      });
      const broken = await editConfigMap(cluster, vandalise);
      const failure = await store.load().catch((e: unknown) => e);
      expect([what, failure]).toEqual([what, expect.objectContaining({ code: 'metadata_corrupt' })]);
      expect((failure as MetadataError).context).toMatchObject({ namespace: NAMESPACE });
      await expect(store.compareAndSet(mapOf(4), 3)).rejects.toMatchObject({ code: 'metadata_corrupt' });
      await expect(store.compareAndSet(mapOf(1), undefined)).rejects.toMatchObject({
        code: 'metadata_corrupt',
      });
      const after = await readConfigMap(cluster);
      expect(after.metadata?.resourceVersion).toBe(broken.metadata?.resourceVersion);
      expect(after.data).toEqual(broken.data);
    }
  });

  it('loses the race (false) when the ConfigMap changes between its read and its replace', async () => {
    const a = openConfigMap(cluster);
    expect(await a.compareAndSet(mapOf(1), undefined)).toBe(true);
    // Two writers that both read epoch 1: the one replacing second carries a stale resourceVersion.
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => openConfigMap(cluster).compareAndSet(mapOf(2, i), 1)),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    // Deleted meanwhile: the stored epoch is no longer the expected one.
    await core.deleteNamespacedConfigMap({ name: `${cluster}-partition-map`, namespace: NAMESPACE });
    expect(await a.compareAndSet(mapOf(3), 2)).toBe(false);
    expect(await a.load()).toBeUndefined();
  });

  it('a holder following the ConfigMap ignores a map edited back to an older epoch', async () => {
    const { log, lines } = captureLogger();
    const writer = openConfigMap(cluster);
    await writer.compareAndSet(mapOf(1), undefined);
    const holder = await PartitionMapHolder.follow(openConfigMap(cluster, { log, pollIntervalMs: 200 }));
    expect(holder.epoch()).toBe(1);
    await writer.compareAndSet(mapOf(4), 1);
    await holder.waitForEpoch(4, 5000);
    await editConfigMap(cluster, (cm) => {
      cm.data![CONFIGMAP_MAP_KEY] = JSON.stringify(mapOf(2));
      cm.metadata!.annotations![EPOCH_ANNOTATION] = '2';
    });
    await until(() => lines.some((l) => /went backwards/.test(String(l.msg))));
    expect(holder.epoch()).toBe(4);
    expect((await holder.refresh())?.epoch).toBe(4);
    holder.stop();
  });

  it('re-establishes its watch after the connection is cut', async () => {
    const proxy = await startProxy(apiPort());
    closers.push(() => proxy.close());
    const { log, lines } = captureLogger();
    const writer = openConfigMap(cluster);
    const reader = openConfigMap(cluster, { kube: viaProxy(proxy.port), log, pollIntervalMs: 600_000 });
    const seen: number[] = [];
    reader.watch((m) => seen.push(m.epoch));
    await until(() => proxy.connections() > 0);
    await new Promise((r) => setTimeout(r, 300));
    expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
    await until(() => seen.includes(1));

    // Cut every connection (the watch stream among them), then write: only a new watch
    // (or the look taken when re-establishing) can bring epoch 2; the poll is 10 minutes away.
    proxy.cut();
    expect(await writer.compareAndSet(mapOf(2), 1)).toBe(true);
    await until(() => seen.includes(2), 10_000);
    expect(await writer.compareAndSet(mapOf(3), 2)).toBe(true);
    await until(() => seen.includes(3), 10_000);
    expect(seen).toEqual([1, 2, 3]);
    expect(lines.some((l) => /watch (ended|failed)/.test(String(l.msg)))).toBe(true);
  });

  it('gives up a watch that hangs while connecting, and retries until one connects', async () => {
    const proxy = await startProxy(apiPort());
    closers.push(() => proxy.close());
    proxy.blackhole(true);
    const { log, lines } = captureLogger();
    const reader = openConfigMap(cluster, {
      kube: viaProxy(proxy.port),
      log,
      timeoutMs: 300,
      pollIntervalMs: 600_000,
    });
    const seen: number[] = [];
    reader.watch((m) => seen.push(m.epoch));
    await until(() => lines.some((l) => /not established within 300 ms/.test(JSON.stringify(l))), 5000);
    proxy.blackhole(false);
    expect(await openConfigMap(cluster).compareAndSet(mapOf(1), undefined)).toBe(true);
    // Only a watch that connected after the stall can bring it: the poll is 10 minutes away.
    await until(() => seen.includes(1), 10_000);
  });

  it('fails fast with typed errors when the API server does not answer or cannot be reached', async () => {
    const proxy = await startProxy(apiPort());
    closers.push(() => proxy.close());
    proxy.blackhole(true); // accepts, never answers
    const store = openConfigMap(cluster, { kube: viaProxy(proxy.port), timeoutMs: 1000 });
    let started = Date.now();
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_timeout' });
    await expect(store.compareAndSet(mapOf(1), undefined)).rejects.toMatchObject({
      code: 'metadata_timeout',
    });
    expect(Date.now() - started).toBeLessThan(4000);

    await proxy.close(); // nothing listens any more
    started = Date.now();
    const err = await store.load().catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'metadata_unavailable',
      context: { namespace: NAMESPACE, op: 'read' },
    });
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(PartitionMapHolder.follow(store)).rejects.toBeInstanceOf(MetadataError);
  });

  it('refuses a cluster name that makes no valid ConfigMap name, and a bad namespace', () => {
    expect(
      () => new ConfigMapMetadataStore({ kube: kc, namespace: NAMESPACE, cluster: 'Upper_Case' }),
    ).toThrow(expect.objectContaining({ code: 'metadata_invalid' }));
    expect(() => new ConfigMapMetadataStore({ kube: kc, namespace: 'No/Such', cluster: 'c1' })).toThrow(
      expect.objectContaining({ code: 'metadata_invalid' }),
    );
  });

  it('with a CoreV1Api only, works and watches by polling', async () => {
    const store = openConfigMap(cluster, { kube: core, pollIntervalMs: 100 });
    const writer = openConfigMap(cluster);
    const seen: number[] = [];
    store.watch((m) => seen.push(m.epoch));
    await writer.compareAndSet(mapOf(1), undefined);
    await until(() => seen.includes(1));
    expect(await store.compareAndSet(mapOf(2), 1)).toBe(true);
    expect((await writer.load())?.epoch).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------
// Mirrored store: ConfigMap (authoritative) + Redis (fast copy)
// ---------------------------------------------------------------------------------------------

describe('MirroredMetadataStore with a real Redis and API server', () => {
  let redis: RunningRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });

  function openMirrored(
    cluster: string,
    opts: {
      redisUrl?: string;
      writer?: boolean;
      pollIntervalMs?: number;
      log?: MirroredMetadataStoreOptions['log'];
      repairIntervalMs?: number;
    } = {},
  ): MirroredMetadataStore {
    const log = opts.log ?? silent;
    return track(
      new MirroredMetadataStore({
        authoritative: new ConfigMapMetadataStore({
          kube: kc,
          namespace: NAMESPACE,
          cluster,
          log,
          pollIntervalMs: opts.pollIntervalMs,
        }),
        fast: new RedisMetadataStore({
          url: opts.redisUrl ?? redis.url,
          cluster,
          log,
          timeoutMs: 500,
          pollIntervalMs: opts.pollIntervalMs,
        }),
        writer: opts.writer,
        repairIntervalMs: opts.repairIntervalMs,
        log,
      }),
    );
  }

  /** A plain client to look at (or vandalise) the fast copy. */
  async function rawRedis<T>(url: string, fn: (r: Redis) => Promise<T>): Promise<T> {
    const r = new Redis(url, { maxRetriesPerRequest: 1 });
    try {
      return await fn(r);
    } finally {
      await r.quit();
    }
  }
  const fastEpoch = async (url: string, cluster: string): Promise<number | undefined> => {
    const text = await rawRedis(url, (r) => r.get(`kvstore:${cluster}:map`));
    return text === null ? undefined : (JSON.parse(text) as PartitionMap).epoch;
  };
  const configMapEpoch = async (cluster: string): Promise<number> =>
    Number((await readConfigMap(cluster)).metadata?.annotations?.[EPOCH_ANNOTATION]);

  // Readers and the writer both honour the contract.
  metadataStoreContract('mirrored, reader', () => ({
    open: (cluster, opts) => openMirrored(cluster, opts),
  }));
  metadataStoreContract('mirrored, writer', () => ({
    open: (cluster, opts) => openMirrored(cluster, { ...opts, writer: true }),
  }));

  describe('scenarios', () => {
    let cluster: string;
    beforeEach(() => {
      cluster = newCluster();
    });
    const mapOf = (epoch: number, tag = 0): PartitionMap => testMap(epoch, { cluster, tag });

    it('a write goes to the ConfigMap and to Redis', async () => {
      const writer = openMirrored(cluster, { writer: true });
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      expect(await writer.compareAndSet(mapOf(2), 1)).toBe(true);
      expect(await configMapEpoch(cluster)).toBe(2);
      expect(await fastEpoch(redis.url, cluster)).toBe(2);
      expect(await openMirrored(cluster).load()).toEqual(mapOf(2));
    });

    it('a write the ConfigMap refuses is not published', async () => {
      const writer = openMirrored(cluster, { writer: true });
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      expect(await writer.compareAndSet(mapOf(5), 3)).toBe(false);
      expect(await fastEpoch(redis.url, cluster)).toBe(1);
    });

    it('a fast copy that missed writes is brought forward by the next write', async () => {
      const writer = openMirrored(cluster, { writer: true });
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      // The ConfigMap moves on without Redis (as if the publish had failed twice).
      const configMapOnly = openConfigMap(cluster);
      expect(await configMapOnly.compareAndSet(mapOf(2), 1)).toBe(true);
      expect(await configMapOnly.compareAndSet(mapOf(3), 2)).toBe(true);
      expect(await fastEpoch(redis.url, cluster)).toBe(1);
      // Redis's CAS expects 3 and holds 1: the store writes over what Redis really holds.
      expect(await writer.compareAndSet(mapOf(4), 3)).toBe(true);
      expect(await fastEpoch(redis.url, cluster)).toBe(4);
    });

    it('a reader told of a newer epoch reads it from the ConfigMap when the writer died before publishing to Redis', async () => {
      const writer = openMirrored(cluster, { writer: true });
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      // The operator wrote epoch 2 to the ConfigMap and died before Redis: nodes following the
      // ConfigMap hold 2 and refuse requests at 1 as stale, saying so.
      expect(await openConfigMap(cluster).compareAndSet(mapOf(2), 1)).toBe(true);
      const reader = new PartitionMapHolder({ store: openMirrored(cluster) });
      expect((await reader.refresh())?.epoch).toBe(1);
      expect((await reader.refresh(2))?.epoch).toBe(2);
      expect(await fastEpoch(redis.url, cluster)).toBe(1); // a reader still never writes Redis
    });

    it('reads the ConfigMap when the fast copy is corrupt', async () => {
      const writer = openMirrored(cluster, { writer: true });
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      await rawRedis(redis.url, (r) => r.set(`kvstore:${cluster}:map`, 'garbage'));
      expect(await openMirrored(cluster).load()).toEqual(mapOf(1));
      // The write still succeeds (the ConfigMap is the truth); the publish failure is only logged.
      expect(await writer.compareAndSet(mapOf(2), 1)).toBe(true);
      expect(await openMirrored(cluster).load()).toEqual(mapOf(2));
    });

    it('Redis down: readers load and watch through the ConfigMap; restarted empty, the writer refills it', async () => {
      const own = await startRedis();
      closers.push(() => own.stop());
      const port = own.port;
      const writer = openMirrored(cluster, { redisUrl: own.url, writer: true, repairIntervalMs: 300 });
      const reader = openMirrored(cluster, { redisUrl: own.url, pollIntervalMs: 600_000 });
      const seen: number[] = [];
      reader.watch((m) => seen.push(m.epoch));
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      await until(() => seen.includes(1));
      expect(await fastEpoch(own.url, cluster)).toBe(1);

      await own.stop();
      // A write still succeeds: the ConfigMap is the truth, Redis is best effort.
      expect(await writer.compareAndSet(mapOf(2), 1)).toBe(true);
      // The reader's watch on the ConfigMap brings it, though Redis is down and the poll far off.
      await until(() => seen.includes(2), 10_000);
      const started = Date.now();
      expect(await reader.load()).toEqual(mapOf(2));
      expect(Date.now() - started).toBeLessThan(3000);
      // A fresh reader (nothing remembered) also loads through the ConfigMap.
      expect(await openMirrored(cluster, { redisUrl: own.url }).load()).toEqual(mapOf(2));
      const holder = await PartitionMapHolder.follow(openMirrored(cluster, { redisUrl: own.url }));
      expect(holder.epoch()).toBe(2);
      holder.stop();

      // Same port, empty (no persistence): the writer's periodic repair refills it, with no new write.
      const second = await startRedis({ port });
      closers.push(() => second.stop());
      await untilAsync(async () => (await fastEpoch(second.url, cluster)) === 2, 10_000);
      // And the next write goes through Redis again: the reader hears of it by Redis or ConfigMap.
      expect(await writer.compareAndSet(mapOf(3), 2)).toBe(true);
      expect(await fastEpoch(second.url, cluster)).toBe(3);
      await until(() => seen.includes(3), 10_000);
      expect(seen).toEqual([1, 2, 3]);
    });

    it('repairFastCopy() refills an emptied Redis and reports what it did', async () => {
      const writer = openMirrored(cluster, { writer: true, repairIntervalMs: 0 });
      expect(await writer.repairFastCopy()).toBe('nothing');
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      expect(await writer.repairFastCopy()).toBe('current');
      await rawRedis(redis.url, (r) => r.del(`kvstore:${cluster}:map`));
      expect(await writer.repairFastCopy()).toBe('written');
      expect(await fastEpoch(redis.url, cluster)).toBe(1);
      await rawRedis(redis.url, (r) => r.set(`kvstore:${cluster}:map`, JSON.stringify(mapOf(9))));
      expect(await writer.repairFastCopy()).toBe('ahead');
      await rawRedis(redis.url, (r) => r.set(`kvstore:${cluster}:map`, JSON.stringify(mapOf(1, 5))));
      expect(await writer.repairFastCopy()).toBe('diverged');
    });

    it('a reader never sees the epoch go back, whichever copy answers', async () => {
      const own = await startRedis();
      closers.push(() => own.stop());
      const writer = openMirrored(cluster, { redisUrl: own.url, writer: true, repairIntervalMs: 0 });
      const reader = openMirrored(cluster, { redisUrl: own.url, pollIntervalMs: 100 });
      const watched: number[] = [];
      const loaded: number[] = [];
      reader.watch((m) => watched.push(m.epoch));
      const holder = await PartitionMapHolder.follow(reader);
      const record = async (): Promise<void> => {
        loaded.push((await reader.load())?.epoch ?? 0);
      };

      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      await record();
      await own.stop();
      expect(await writer.compareAndSet(mapOf(2), 1)).toBe(true);
      expect(await writer.compareAndSet(mapOf(3), 2)).toBe(true);
      await until(() => watched.includes(3), 10_000);
      await record();

      // Redis comes back holding an old copy (say, restored from a snapshot): epoch 1.
      const back = await startRedis({ port: own.port });
      closers.push(() => back.stop());
      await rawRedis(back.url, (r) => r.set(`kvstore:${cluster}:map`, JSON.stringify(mapOf(1))));
      await untilAsync(async () => (await reader.load()) !== undefined, 5000);
      for (let i = 0; i < 5; i++) {
        await record();
        await new Promise((r) => setTimeout(r, 150)); // several polls of the old copy
      }
      expect(loaded.every((e, i) => i === 0 || e >= loaded[i - 1])).toBe(true);
      expect(loaded[loaded.length - 1]).toBe(3);
      expect(holder.epoch()).toBe(3);
      expect(watched).toEqual([1, 2, 3]);
      holder.stop();
    });

    it('a gateway process started with --kube-namespace and --redis follows the map through either copy', async () => {
      const own = await startRedis();
      closers.push(() => own.stop());
      const writer = openMirrored(cluster, { redisUrl: own.url, writer: true, repairIntervalMs: 300 });
      expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
      // Started while Redis is down: it must come up from the ConfigMap.
      await own.stop();
      const gateway = await startGateway(cluster, own.url);
      closers.push(async () => void (await gateway.stop()));
      await gateway.waitForEpoch(1);
      // Redis still down: the next map reaches it through the ConfigMap watch.
      expect(await writer.compareAndSet(mapOf(2), 1)).toBe(true);
      await gateway.waitForEpoch(2);
      // Redis back, empty: the writer refills it, and the gateway follows Redis again.
      const back = await startRedis({ port: own.port });
      closers.push(() => back.stop());
      await untilAsync(async () => (await fastEpoch(back.url, cluster)) === 2, 10_000);
      expect(await writer.compareAndSet(mapOf(3), 2)).toBe(true);
      await gateway.waitForEpoch(3);
      expect(await gateway.stop()).toBe(0);
    });

    it('fails with a typed error naming both copies when neither can be read', async () => {
      const proxy = await startProxy(apiPort());
      closers.push(() => proxy.close());
      await proxy.close();
      const store = track(
        new MirroredMetadataStore({
          authoritative: new ConfigMapMetadataStore({
            kube: viaProxy(proxy.port),
            namespace: NAMESPACE,
            cluster,
            log: silent,
            timeoutMs: 1000,
          }),
          fast: new RedisMetadataStore({
            url: `redis://127.0.0.1:${proxy.port}`,
            cluster,
            log: silent,
            timeoutMs: 500,
          }),
          log: silent,
        }),
      );
      const err = await store.load().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MetadataError);
      expect((err as MetadataError).code).toMatch(/^metadata_(unavailable|timeout)$/);
      expect((err as MetadataError).message).toMatch(/fast copy: .*authoritative copy: /);
      expect((err as MetadataError).context).toMatchObject({
        fast: expect.any(Object),
        authoritative: expect.any(Object),
      });
    });
  });

  describe('openMetadataStore', () => {
    it('--kube-namespace alone opens the ConfigMap; with --redis the mirrored store', async () => {
      const cluster = newCluster();
      const cm = track(openMetadataStore({ cluster, kubeNamespace: NAMESPACE, kubeConfig: kc }, silent));
      expect(cm).toBeInstanceOf(ConfigMapMetadataStore);
      const mirrored = track(
        openMetadataStore({ cluster, kubeNamespace: NAMESPACE, kubeConfig: kc, redisUrl: redis.url }, silent),
      );
      expect(mirrored).toBeInstanceOf(MirroredMetadataStore);
      expect(await cm.compareAndSet(testMap(1, { cluster }), undefined)).toBe(true);
      // The reader finds Redis empty and reads the ConfigMap.
      expect((await mirrored.load())?.epoch).toBe(1);
    });

    it('finds the API server through KUBECONFIG, and refuses bad combinations in one line', () => {
      const saved = process.env.KUBECONFIG;
      process.env.KUBECONFIG = cp!.kubeconfigPath;
      try {
        const store = track(openMetadataStore({ cluster: 'c1', kubeNamespace: NAMESPACE }, silent));
        expect(store).toBeInstanceOf(ConfigMapMetadataStore);
      } finally {
        process.env.KUBECONFIG = saved;
      }
      expect(() =>
        openMetadataStore(
          { cluster: 'c1', kubeNamespace: NAMESPACE, kubeConfig: kc, file: '/tmp/x' },
          silent,
        ),
      ).toThrow(expect.objectContaining({ code: 'usage' }));
      expect(() =>
        openMetadataStore({ cluster: 'Bad_Name', kubeNamespace: NAMESPACE, kubeConfig: kc }, silent),
      ).toThrow(
        expect.objectContaining({ code: 'usage', message: expect.stringMatching(/--kube-namespace/) }),
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

async function untilAsync(cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await cond()) return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface GatewayProcess {
  waitForEpoch(epoch: number): Promise<void>;
  /** SIGTERM; resolves with the exit code */
  stop(): Promise<number | null>;
}

/** The built gateway (dist/, as every e2e suite uses) against the test's API server and Redis. */
async function startGateway(cluster: string, redisUrl: string): Promise<GatewayProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let output = '';
  const child = spawn(
    process.execPath,
    [
      path.resolve(__dirname, '..', '..', 'dist', 'gateway', 'main.js'),
      '--cluster',
      cluster,
      '--port',
      String(port),
      '--kube-namespace',
      NAMESPACE,
      '--redis',
      redisUrl,
      // This gateway only follows the map; no node here asks for the internal token.
      '--no-auth',
    ],
    { env: { ...process.env, KUBECONFIG: cp!.kubeconfigPath }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const epochNow = async (): Promise<number> => {
    const res = await fetch(`${url}/v1/cluster`);
    return res.ok ? ((await res.json()) as { epoch: number }).epoch : 0;
  };
  let stopped: Promise<number | null> | undefined;
  return {
    waitForEpoch: async (epoch) => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`gateway exited (${child.exitCode}):\n${output}`);
        if ((await epochNow().catch(() => 0)) === epoch) return;
        if (Date.now() > deadline) throw new Error(`gateway never reached epoch ${epoch}:\n${output}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    stop: () => {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        return exited;
      })();
      return stopped;
    },
  };
}

function apiPort(): number {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('kubeconfig has no current cluster');
  return Number(new URL(server).port);
}

/** The test kubeconfig, pointed at 127.0.0.1:port (the API server's certificate names 127.0.0.1). */
function viaProxy(port: number): KubeConfig {
  const proxied = new KubeConfig();
  proxied.loadFromOptions({
    clusters: kc.clusters.map((c) => ({ ...c, server: `https://127.0.0.1:${port}` })),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return proxied;
}

interface Proxy {
  readonly port: number;
  /** connections accepted so far */
  connections(): number;
  /** destroys every open connection (both sides), as a network fault would */
  cut(): void;
  /** while on, new connections are accepted and never answered */
  blackhole(on: boolean): void;
  close(): Promise<void>;
}

/** A TCP relay in front of the API server, so a test can cut or stall the store's connections. */
async function startProxy(targetPort: number): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  let holding = false;
  const server = net.createServer((client) => {
    accepted++;
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    if (holding) return;
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy has no port');
  let closed: Promise<void> | undefined;
  const cut = (): void => {
    for (const s of [...sockets]) s.destroy();
  };
  return {
    port: address.port,
    connections: () => accepted,
    cut,
    blackhole: (on) => {
      holding = on;
    },
    close: () => {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        cut();
      });
      return closed;
    },
  };
}
