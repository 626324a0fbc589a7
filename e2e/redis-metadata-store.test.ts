import Redis from 'ioredis';
import pino from 'pino';
import { MetadataError, PartitionMapHolder } from '../common/metadata-store';
import type { PartitionMap } from '../common/partition-map';
import { RedisMetadataStore, type RedisMetadataStoreOptions } from '../common/redis-metadata-store';
import { freePort } from './free-port';
import { findRedisServer, startRedis, withRedisClient, type RunningRedis } from './redis-server';
import { testMap, captureLogger, until } from '../common/metadata-store.fixtures';

jest.setTimeout(30_000);

describe('RedisMetadataStore against a real redis-server', () => {
  let redis: RunningRedis;
  let cluster: string;
  let clusterSeq = 0;
  const stores: RedisMetadataStore[] = [];
  const open = (opts: Partial<RedisMetadataStoreOptions> = {}): RedisMetadataStore => {
    const s = new RedisMetadataStore({ url: redis.url, cluster, log: pino({ level: 'silent' }), ...opts });
    stores.push(s);
    return s;
  };
  /** A plain client to look at (or vandalise) what the store wrote. */
  const raw = <T>(fn: (r: Redis) => Promise<T>): Promise<T> => withRedisClient(redis.url, fn);

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });
  beforeEach(() => {
    // A fresh cluster name per test: its own key and channel on the shared server.
    cluster = `c${++clusterSeq}`;
  });
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });

  const mapOf = (epoch: number, tag = 0): PartitionMap => testMap(epoch, { cluster, tag });

  it('loads undefined when nothing was written, then compare-and-sets by epoch', async () => {
    const store = open();
    expect(store.key).toBe(`kvstore:${cluster}:map`);
    expect(store.channel).toBe(`kvstore:${cluster}:map-changed`);
    expect(await store.load()).toBeUndefined();
    expect(await store.compareAndSet(mapOf(1), undefined)).toBe(true);
    expect(await store.compareAndSet(mapOf(1, 1), 0)).toBe(false);
    expect(await store.compareAndSet(mapOf(5), 4)).toBe(false);
    expect(await store.compareAndSet(mapOf(2), 1)).toBe(true);
    expect(await store.load()).toEqual(mapOf(2));
    expect(JSON.parse((await raw((r) => r.get(`kvstore:${cluster}:map`))) ?? 'null')).toEqual(mapOf(2));
    await expect(store.compareAndSet(mapOf(2), 2)).rejects.toMatchObject({ code: 'metadata_invalid' });
    await expect(store.compareAndSet(testMap(3, { cluster: 'other' }), 2)).rejects.toMatchObject({
      code: 'metadata_invalid',
    });
  });

  it("remove() deletes only this cluster's map: a cluster created again under the name starts from epoch 1", async () => {
    const store = open();
    const neighbour = open({ cluster: `${cluster}-other` });
    expect(await store.remove()).toBe(false);
    expect(await store.compareAndSet(mapOf(1), undefined)).toBe(true);
    expect(await store.compareAndSet(mapOf(2), 1)).toBe(true);
    expect(await neighbour.compareAndSet(testMap(1, { cluster: `${cluster}-other` }), undefined)).toBe(true);
    expect(await store.remove()).toBe(true);
    expect(await raw((r) => r.exists(`kvstore:${cluster}:map`))).toBe(0);
    expect(await store.load()).toBeUndefined();
    expect(await store.compareAndSet(mapOf(1), undefined)).toBe(true);
    expect(await neighbour.load()).toEqual(testMap(1, { cluster: `${cluster}-other` }));
  });

  it('lets exactly one of many racing writers win each epoch, across connections', async () => {
    const writers = [open(), open(), open()];
    let expected: number | undefined;
    for (let epoch = 1; epoch <= 5; epoch++) {
      const results = await Promise.all(
        writers.flatMap((w, wi) =>
          Array.from({ length: 10 }, (_, j) => {
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

  it("one store writes, the other's watch sees it through pub/sub", async () => {
    const writer = open();
    // A poll this slow never fires during the test: what arrives came by pub/sub.
    const reader = open({ pollIntervalMs: 600_000 });
    const seen: number[] = [];
    reader.watch((m) => seen.push(m.epoch));
    // Wait until the subscriber is in place (the channel has a subscriber).
    await waitForSubscribers(`kvstore:${cluster}:map-changed`, 1);
    expect(await writer.compareAndSet(mapOf(1), undefined)).toBe(true);
    await until(() => seen.includes(1));
    expect(await writer.compareAndSet(mapOf(2), 1)).toBe(true);
    await until(() => seen.includes(2));
    expect(seen).toEqual([1, 2]);
  });

  it('publishes the new epoch on the channel, exactly when a write happens', async () => {
    const messages: string[] = [];
    const sub = new Redis(redis.url);
    try {
      await sub.subscribe(`kvstore:${cluster}:map-changed`);
      sub.on('message', (_ch: string, msg: string) => messages.push(msg));
      const store = open();
      await store.compareAndSet(mapOf(1), undefined);
      await store.compareAndSet(mapOf(2, 1), 0); // lost: no message
      await store.compareAndSet(mapOf(2), 1);
      await until(() => messages.length >= 2);
      await new Promise((r) => setTimeout(r, 50));
      expect(messages).toEqual(['1', '2']);
    } finally {
      await sub.quit();
    }
  });

  it('a holder following Redis ignores maps older than the one it holds', async () => {
    const { log, lines } = captureLogger();
    const writer = open();
    await writer.compareAndSet(mapOf(1), undefined);
    const reader = open({ log, pollIntervalMs: 50 });
    const holder = await PartitionMapHolder.follow(reader);
    expect(holder.epoch()).toBe(1);
    await writer.compareAndSet(mapOf(4), 1);
    await holder.waitForEpoch(4, 5000);

    // Someone sets an old copy by hand: neither the poll nor a refresh takes the holder back.
    await raw((r) => r.set(`kvstore:${cluster}:map`, JSON.stringify(mapOf(2))));
    await until(() => lines.some((l) => /went backwards/.test(String(l.msg))));
    expect(holder.epoch()).toBe(4);
    expect((await holder.refresh())?.epoch).toBe(4);
    expect(holder.accept(mapOf(3))).toBe(false);
    holder.stop();
  });

  it('reports a corrupt stored map as a typed error, on load and on compareAndSet', async () => {
    const store = open();
    await raw((r) => r.set(`kvstore:${cluster}:map`, 'not json'));
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_corrupt' });
    await expect(store.compareAndSet(mapOf(1), undefined)).rejects.toMatchObject({
      code: 'metadata_corrupt',
    });
    await raw((r) =>
      r.set(`kvstore:${cluster}:map`, JSON.stringify(testMap(1, { cluster: 'someone-else' }))),
    );
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_corrupt' });
  });

  it('after close, calls fail with metadata_closed', async () => {
    const store = open();
    await store.load();
    await store.close();
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_closed' });
    expect(() => store.watch(() => undefined)).toThrow(MetadataError);
  });

  async function waitForSubscribers(channel: string, n: number): Promise<void> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const reply = (await raw((r) => r.pubsub('NUMSUB', channel))) as [string, number];
      if (Number(reply[1]) >= n) return;
      if (Date.now() > deadline) throw new Error(`no subscriber on ${channel}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
});

describe('RedisMetadataStore when Redis goes away', () => {
  it('fails fast with MetadataError while Redis is down, then recovers and resubscribes', async () => {
    const first = await startRedis();
    const port = first.port;
    const log = pino({ level: 'silent' });
    const reader = new RedisMetadataStore({
      url: first.url,
      cluster: 'c1',
      log,
      timeoutMs: 1000,
      pollIntervalMs: 600_000,
    });
    const writer = new RedisMetadataStore({ url: first.url, cluster: 'c1', log, timeoutMs: 1000 });
    let second: RunningRedis | undefined;
    try {
      expect(await writer.compareAndSet(testMap(1), undefined)).toBe(true);
      const seen: number[] = [];
      reader.watch((m) => seen.push(m.epoch));
      await until(() => seen.includes(1));

      await first.stop();
      for (const call of [() => reader.load(), () => writer.compareAndSet(testMap(2), 1)]) {
        const started = Date.now();
        const err = await call().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(MetadataError);
        expect((err as MetadataError).code).toMatch(/^metadata_(unavailable|timeout)$/);
        expect(Date.now() - started).toBeLessThan(3000);
      }

      // Same port, empty server (no persistence): ioredis reconnects, the reader resubscribes.
      second = await startRedis({ port });
      const deadline = Date.now() + 10_000;
      let wrote = false;
      while (!wrote) {
        try {
          wrote = await writer.compareAndSet(testMap(7), undefined);
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      // The reader's poll is 10 minutes away: epoch 7 arrives by the resubscribed channel
      // (or by the look taken right after resubscribing).
      await until(() => seen.includes(7), 10_000);
    } finally {
      await reader.close();
      await writer.close();
      await first.stop();
      await second?.stop();
    }
  });

  it('with no Redis at all, load() and follow() reject with MetadataError within the default timeout', async () => {
    const port = await freePort(); // nothing listens there
    const store = new RedisMetadataStore({
      url: `redis://127.0.0.1:${port}`,
      cluster: 'c1',
      log: pino({ level: 'silent' }),
    });
    try {
      const started = Date.now();
      await expect(store.load()).rejects.toMatchObject({
        code: 'metadata_unavailable',
        context: { endpoint: `127.0.0.1:${port}` },
      });
      await expect(PartitionMapHolder.follow(store)).rejects.toBeInstanceOf(MetadataError);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      await store.close();
    }
  });

  it('close() does not hang when Redis is already gone', async () => {
    const server = await startRedis();
    const store = new RedisMetadataStore({ url: server.url, cluster: 'c1', log: pino({ level: 'silent' }) });
    store.watch(() => undefined);
    await store.load();
    await server.stop();
    const started = Date.now();
    await store.close();
    expect(Date.now() - started).toBeLessThan(3000);
  });
});

describe('redis-server harness', () => {
  it('says how to install redis-server when it is not on PATH, instead of skipping', () => {
    const saved = process.env.PATH;
    process.env.PATH = '';
    try {
      expect(() => findRedisServer()).toThrow(/apt-get install redis-server/);
    } finally {
      process.env.PATH = saved;
    }
  });
});
