import pino from 'pino';
import type { Logger } from './logger';
import {
  checkCompareAndSetArgs,
  MapWatchHub,
  MemoryMetadataStore,
  MetadataError,
  PartitionMapHolder,
  type MetadataStore,
} from './metadata-store';
import { InvalidMapError, type PartitionMap } from './partition-map';
import { captureLogger, deferred, testMap, type Deferred } from './metadata-store.fixtures';

const silent = pino({ level: 'silent' });

/** A store whose loads the test answers by hand and whose notifications it sends itself. */
class ScriptedStore implements MetadataStore {
  loads: Array<Deferred<PartitionMap | undefined>> = [];
  /** the minEpoch each load was given */
  floors: Array<number | undefined> = [];
  listeners = new Set<(map: PartitionMap) => void>();

  load(minEpoch?: number): Promise<PartitionMap | undefined> {
    const d = deferred<PartitionMap | undefined>();
    this.loads.push(d);
    this.floors.push(minEpoch);
    return d.promise;
  }
  async compareAndSet(): Promise<boolean> {
    throw new Error('not used');
  }
  watch(listener: (map: PartitionMap) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  notify(map: PartitionMap): void {
    for (const l of this.listeners) l(map);
  }
  async close(): Promise<void> {}
}

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
/** lets the hub's 0 ms check timer and the load behind it run */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 10));

describe('PartitionMapHolder', () => {
  it('starts empty and takes only newer epochs, emitting (map, previous)', () => {
    const holder = new PartitionMapHolder();
    expect(holder.current()).toBeUndefined();
    expect(holder.epoch()).toBe(0);
    const changes: Array<[number, number | undefined]> = [];
    holder.on('change', (map, previous) => changes.push([map.epoch, previous?.epoch]));

    expect(holder.accept(testMap(2))).toBe(true);
    expect(holder.accept(testMap(5))).toBe(true);
    expect(holder.accept(testMap(3))).toBe(false);
    expect(holder.accept(testMap(5, { tag: 1 }))).toBe(false);
    expect(holder.current()?.epoch).toBe(5);
    expect(holder.current()?.nodes[2].address).toBe('127.0.0.1:8000');
    expect(changes).toEqual([
      [2, undefined],
      [5, 2],
    ]);
  });

  it('refuses maps of another cluster: the configured one, else the first one held', () => {
    const pinned = new PartitionMapHolder({ cluster: 'c1', log: silent });
    expect(pinned.accept(testMap(1, { cluster: 'other' }))).toBe(false);
    expect(pinned.accept(testMap(1))).toBe(true);

    const free = new PartitionMapHolder({ log: silent });
    expect(free.accept(testMap(1, { cluster: 'a' }))).toBe(true);
    expect(free.accept(testMap(9, { cluster: 'b' }))).toBe(false);
    expect(free.current()?.cluster).toBe('a');
  });

  it('follow() loads, then applies notifications, never going back to an older epoch', async () => {
    const store = new ScriptedStore();
    const following = PartitionMapHolder.follow(store);
    expect(store.listeners.size).toBe(1); // subscribed before loading: nothing in between is lost
    store.loads[0].resolve(testMap(3));
    const holder = await following;
    expect(holder.epoch()).toBe(3);

    store.notify(testMap(4));
    store.notify(testMap(2));
    expect(holder.epoch()).toBe(4);

    const refreshing = holder.refresh();
    store.loads[1].resolve(testMap(1)); // a stale copy (e.g. a lagging replica of the store)
    expect((await refreshing)?.epoch).toBe(4);

    holder.stop();
    expect(store.listeners.size).toBe(0);
    store.notify(testMap(9));
    expect(holder.epoch()).toBe(4);
  });

  it('follow() rejects and unsubscribes when the first load fails', async () => {
    const store = new ScriptedStore();
    const following = PartitionMapHolder.follow(store);
    store.loads[0].reject(new MetadataError('unavailable', 'down'));
    await expect(following).rejects.toMatchObject({ code: 'metadata_unavailable' });
    expect(store.listeners.size).toBe(0);
  });

  it('follow() resolves with no map when none was ever written', async () => {
    const store = new ScriptedStore();
    const following = PartitionMapHolder.follow(store);
    store.loads[0].resolve(undefined);
    const holder = await following;
    expect(holder.current()).toBeUndefined();
    holder.stop();
  });

  it('refresh(minEpoch) does no I/O when that epoch is already held', async () => {
    const store = new ScriptedStore();
    const holder = new PartitionMapHolder({ store });
    holder.accept(testMap(7));
    expect((await holder.refresh(7))?.epoch).toBe(7);
    expect((await holder.refresh(3))?.epoch).toBe(7);
    expect(store.loads).toHaveLength(0);
    const newer = holder.refresh(8);
    expect(store.loads).toHaveLength(1);
    store.loads[0].resolve(testMap(8));
    expect((await newer)?.epoch).toBe(8);
  });

  it('refresh(minEpoch) tells the store the epoch a peer claimed, once, even when it joins a running load', async () => {
    const store = new ScriptedStore();
    const holder = new PartitionMapHolder({ store });
    holder.accept(testMap(7));
    const first = holder.refresh(8);
    const joined = holder.refresh(9); // arrives while the load for 8 runs: the next load carries 9
    store.loads[0].resolve(testMap(8));
    expect((await first)?.epoch).toBe(8);
    await flush();
    store.loads[1].resolve(testMap(9));
    expect((await joined)?.epoch).toBe(9);
    const plain = holder.refresh();
    store.loads[2].resolve(testMap(9));
    await plain;
    // A claim already met is not passed on again.
    expect(store.floors).toEqual([8, 9, undefined]);
  });

  it('refresh() coalesces a burst into the running load plus one that starts after it', async () => {
    const store = new ScriptedStore();
    const holder = new PartitionMapHolder({ store });
    const first = holder.refresh();
    const burst = Array.from({ length: 10 }, () => holder.refresh());
    expect(store.loads).toHaveLength(1);
    store.loads[0].resolve(testMap(1));
    expect((await first)?.epoch).toBe(1);
    await flush();
    expect(store.loads).toHaveLength(2); // the trailing load, shared by the whole burst
    store.loads[1].resolve(testMap(2));
    const results = await Promise.all(burst);
    expect(results.map((m) => m?.epoch)).toEqual(Array(10).fill(2));
    expect(store.loads).toHaveLength(2);
  });

  it('refresh() failures reach every caller of that load, and the next refresh tries again', async () => {
    const store = new ScriptedStore();
    const holder = new PartitionMapHolder({ store });
    const a = holder.refresh();
    const b = holder.refresh();
    store.loads[0].reject(new MetadataError('timeout', 'slow'));
    await expect(a).rejects.toBeInstanceOf(MetadataError);
    await flush();
    store.loads[1].reject(new MetadataError('timeout', 'slow again'));
    await expect(b).rejects.toMatchObject({ code: 'metadata_timeout' });
    const c = holder.refresh();
    store.loads[2].resolve(testMap(1));
    expect((await c)?.epoch).toBe(1);
  });

  it('refresh() without a store is a typed error', async () => {
    await expect(new PartitionMapHolder().refresh()).rejects.toMatchObject({ code: 'metadata_invalid' });
  });

  it('waitForEpoch resolves on the change that reaches it, and times out with a typed error', async () => {
    const holder = new PartitionMapHolder();
    const waiting = holder.waitForEpoch(3, 5000);
    holder.accept(testMap(2));
    holder.accept(testMap(4));
    expect((await waiting).epoch).toBe(4);
    expect((await holder.waitForEpoch(1, 10)).epoch).toBe(4);
    await expect(holder.waitForEpoch(5, 20)).rejects.toMatchObject({ code: 'metadata_timeout' });
    expect(holder.listenerCount('change')).toBe(0);
  });

  it('follows a MemoryMetadataStore end to end', async () => {
    const store = new MemoryMetadataStore({ cluster: 'c1', log: silent, pollIntervalMs: 50 });
    expect(await store.compareAndSet(testMap(1), undefined)).toBe(true);
    const holder = await PartitionMapHolder.follow(store);
    expect(holder.epoch()).toBe(1);
    expect(await store.compareAndSet(testMap(2), 1)).toBe(true);
    expect(await store.compareAndSet(testMap(2, { tag: 1 }), 1)).toBe(false);
    expect((await holder.waitForEpoch(2, 2000)).nodes[2].address).toBe('127.0.0.1:8000');
    holder.stop();
    await store.close();
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_closed' });
  });
});

describe('checkCompareAndSetArgs', () => {
  it('accepts a valid map that moves the epoch forward', () => {
    expect(checkCompareAndSetArgs(testMap(1), undefined).epoch).toBe(1);
    expect(checkCompareAndSetArgs(testMap(5), 4, 'c1').epoch).toBe(5);
  });

  it('refuses going back, a wrong cluster, a bad expected epoch and invalid maps', () => {
    expect(() => checkCompareAndSetArgs(testMap(3), 3)).toThrow(MetadataError);
    expect(() => checkCompareAndSetArgs(testMap(3), 7)).toThrow(/must be greater/);
    expect(() => checkCompareAndSetArgs(testMap(3), 2, 'other')).toThrow(/cannot be stored/);
    expect(() => checkCompareAndSetArgs(testMap(3), -1)).toThrow(/non-negative/);
    const broken = { ...testMap(3), partitions: [['n1']] };
    expect(() => checkCompareAndSetArgs(broken, 2)).toThrow(InvalidMapError);
  });
});

describe('MapWatchHub', () => {
  function hubWith(
    load: () => Promise<PartitionMap | undefined>,
    log: Logger = silent,
    pollIntervalMs = 60_000,
  ) {
    return new MapWatchHub({ load, pollIntervalMs, source: 'test', log });
  }

  it('coalesces triggers, gives each listener only newer epochs, and skips loads a hint makes useless', async () => {
    let stored: PartitionMap | undefined = testMap(1);
    let loads = 0;
    const hub = hubWith(async () => {
      loads++;
      return stored;
    });
    const seen: number[] = [];
    const off = hub.add((m) => seen.push(m.epoch));
    for (let i = 0; i < 5; i++) hub.trigger();
    await settle();
    expect(seen).toEqual([1]);
    expect(loads).toBe(1);

    hub.trigger(1); // this listener already has epoch 1
    await settle();
    expect(loads).toBe(1);

    stored = testMap(3);
    hub.trigger(3);
    await settle();
    stored = testMap(2);
    hub.trigger();
    await settle();
    expect(seen).toEqual([1, 3]);
    off();
    expect(hub.size).toBe(0);
    hub.close();
    expect(() => hub.add(() => undefined)).toThrow(MetadataError);
  });

  it('polls as a safety net without any trigger', async () => {
    const box: { stored?: PartitionMap } = {};
    const hub = hubWith(async () => box.stored, silent, 20);
    const seen: number[] = [];
    hub.add((m) => seen.push(m.epoch));
    await settle(); // the first look finds nothing
    box.stored = testMap(4);
    const deadline = Date.now() + 2000;
    while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(seen).toEqual([4]);
    hub.close();
  });

  it('logs a failing load once per distinct error and a throwing listener without stopping the others', async () => {
    const { log, lines } = captureLogger();
    let fail = true;
    const hub = hubWith(async () => {
      if (fail) throw new MetadataError('corrupt', 'bad file');
      return testMap(1);
    }, log);
    const seen: number[] = [];
    hub.add(() => {
      throw new Error('listener bug');
    });
    hub.add((m) => seen.push(m.epoch));
    for (let i = 0; i < 3; i++) {
      hub.trigger();
      await settle();
    }
    expect(lines.filter((l) => /cannot load/.test(String(l.msg)))).toHaveLength(1);
    fail = false;
    hub.trigger();
    await settle();
    expect(seen).toEqual([1]);
    expect(lines.some((l) => /readable again/.test(String(l.msg)))).toBe(true);
    expect(lines.some((l) => /listener threw/.test(String(l.msg)) && l.level === 'error')).toBe(true);
    hub.close();
  });
});
