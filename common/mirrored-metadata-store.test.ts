import pino from 'pino';
import {
  MemoryMetadataStore,
  MetadataError,
  type MetadataFailure,
  type MetadataStore,
} from './metadata-store';
import { captureLogger, testMap, until } from './metadata-store.fixtures';
import { MirroredMetadataStore } from './mirrored-metadata-store';
import type { PartitionMap } from './partition-map';

/*
 * The mirroring logic with in-memory copies whose failures the test switches on and off. The same
 * store against a real API server and redis-server: e2e/k8s/configmap-metadata-store.test.ts.
 */

const silent = pino({ level: 'silent' });

/** A MemoryMetadataStore that fails every call while `failing` is set, as a down backend would. */
class SwitchableStore implements MetadataStore {
  readonly inner = new MemoryMetadataStore({ cluster: 'c1', pollIntervalMs: 20, log: silent });
  failing: MetadataFailure | undefined;
  loads = 0;
  closeError: Error | undefined;

  async load(): Promise<PartitionMap | undefined> {
    this.loads++;
    this.check('load');
    return this.inner.load();
  }
  async compareAndSet(map: PartitionMap, expectedEpoch: number | undefined): Promise<boolean> {
    this.check('compareAndSet');
    return this.inner.compareAndSet(map, expectedEpoch);
  }
  watch(listener: (map: PartitionMap) => void): () => void {
    return this.inner.watch(listener);
  }
  async close(): Promise<void> {
    await this.inner.close();
    if (this.closeError) throw this.closeError;
  }
  private check(op: string): void {
    if (this.failing) throw new MetadataError(this.failing, `switched off: ${op}`, { op });
  }
}

function setup(opts: { writer?: boolean; repairIntervalMs?: number } = {}) {
  const authoritative = new SwitchableStore();
  const fast = new SwitchableStore();
  const { log, lines } = captureLogger();
  const store = new MirroredMetadataStore({ authoritative, fast, log, repairIntervalMs: 0, ...opts });
  return { authoritative, fast, store, lines };
}

const stores: MetadataStore[] = [];
afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
});
function tracked<T extends { store: MetadataStore }>(t: T): T {
  stores.push(t.store);
  return t;
}

describe('MirroredMetadataStore', () => {
  it('writes the authoritative copy first and publishes to the fast copy only when that wins', async () => {
    const { authoritative, fast, store } = tracked(setup({ writer: true }));
    expect(await store.compareAndSet(testMap(1), undefined)).toBe(true);
    expect((await authoritative.inner.load())?.epoch).toBe(1);
    expect((await fast.inner.load())?.epoch).toBe(1);
    expect(await store.compareAndSet(testMap(3), 2)).toBe(false);
    expect((await fast.inner.load())?.epoch).toBe(1);
  });

  it('reports a write as done when only the publish fails, and logs it', async () => {
    const { fast, store, lines } = tracked(setup({ writer: true }));
    fast.failing = 'unavailable';
    expect(await store.compareAndSet(testMap(1), undefined)).toBe(true);
    expect(lines.some((l) => /fast copy could not be updated/.test(String(l.msg)))).toBe(true);
    fast.failing = undefined;
    expect(await store.repairFastCopy()).toBe('written');
    expect((await fast.inner.load())?.epoch).toBe(1);
  });

  it('propagates authoritative write failures as they are, and publishes nothing', async () => {
    const { authoritative, fast, store } = tracked(setup({ writer: true }));
    authoritative.failing = 'timeout';
    await expect(store.compareAndSet(testMap(1), undefined)).rejects.toMatchObject({
      code: 'metadata_timeout',
    });
    expect(await fast.inner.load()).toBeUndefined();
  });

  it('refuses bad arguments before any I/O', async () => {
    const { authoritative, store } = tracked(setup());
    await expect(store.compareAndSet(testMap(1), 1)).rejects.toMatchObject({ code: 'metadata_invalid' });
    expect(authoritative.loads).toBe(0);
  });

  it('a reader loads the fast copy and does not touch the authoritative one when it answers', async () => {
    const { authoritative, fast, store } = tracked(setup());
    await fast.inner.compareAndSet(testMap(2), undefined);
    await authoritative.inner.compareAndSet(testMap(2), undefined);
    expect((await store.load())?.epoch).toBe(2);
    expect(authoritative.loads).toBe(0);
  });

  it.each<MetadataFailure>(['unavailable', 'timeout', 'corrupt'])(
    'a reader falls back to the authoritative copy when the fast one fails with %s',
    async (failure) => {
      const { authoritative, fast, store, lines } = tracked(setup());
      await authoritative.inner.compareAndSet(testMap(4), undefined);
      fast.failing = failure;
      expect((await store.load())?.epoch).toBe(4);
      expect((await store.load())?.epoch).toBe(4);
      // A long outage is one warning, not one per load.
      expect(lines.filter((l) => /cannot read the partition map fast copy/.test(String(l.msg)))).toHaveLength(
        1,
      );
    },
  );

  it('a reader reads the authoritative copy when the fast one is empty', async () => {
    const { authoritative, store } = tracked(setup());
    await authoritative.inner.compareAndSet(testMap(1), undefined);
    expect((await store.load())?.epoch).toBe(1);
  });

  it('does not fall back on a closed fast copy: that is a bug, not an outage', async () => {
    const { fast, store } = tracked(setup());
    fast.failing = 'closed';
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_closed' });
  });

  it('when both copies fail, throws the authoritative kind with both in the context', async () => {
    const { authoritative, fast, store } = tracked(setup());
    fast.failing = 'unavailable';
    authoritative.failing = 'timeout';
    const err = (await store.load().catch((e: unknown) => e)) as MetadataError;
    expect(err.code).toBe('metadata_timeout');
    expect(err.context).toMatchObject({ fast: { op: 'load' }, authoritative: { op: 'load' } });
  });

  it('never returns an older map than one it has seen, from either copy', async () => {
    const { authoritative, fast, store } = tracked(setup());
    await fast.inner.compareAndSet(testMap(1), undefined);
    await authoritative.inner.compareAndSet(testMap(5), undefined);
    expect((await store.load())?.epoch).toBe(1);
    fast.failing = 'unavailable';
    expect((await store.load())?.epoch).toBe(5);
    fast.failing = undefined; // back, still holding epoch 1
    expect((await store.load())?.epoch).toBe(5);
  });

  it('a reader told of a newer epoch reads past a fast copy behind it (the writer died before publishing)', async () => {
    const { authoritative, fast, store, lines } = tracked(setup());
    await fast.inner.compareAndSet(testMap(9), undefined);
    await authoritative.inner.compareAndSet(testMap(10), undefined);
    // Without a claim the fast copy is the answer, as before: one read, no API server round trip.
    expect((await store.load())?.epoch).toBe(9);
    expect(authoritative.loads).toBe(0);
    // A node holding 10 refused a request: the fast copy at 9 is not enough.
    expect((await store.load(10))?.epoch).toBe(10);
    expect(authoritative.loads).toBe(1);
    expect(lines.some((l) => /fast copy is behind an epoch a peer holds/.test(String(l.msg)))).toBe(true);
    // A claim the fast copy already meets costs no authoritative read.
    expect((await store.load(9))?.epoch).toBe(10);
    expect(authoritative.loads).toBe(1);
  });

  it('a reader keeps the fast copy when the authoritative one cannot be read past it, and logs why', async () => {
    const { authoritative, fast, store, lines } = tracked(setup());
    await fast.inner.compareAndSet(testMap(9), undefined);
    authoritative.failing = 'unavailable';
    expect((await store.load(10))?.epoch).toBe(9);
    expect(
      lines.some((l) =>
        /behind an epoch a peer holds, and the authoritative copy cannot be read/.test(String(l.msg)),
      ),
    ).toBe(true);
  });

  it('a writer loads the authoritative copy, whatever the fast one holds', async () => {
    const { authoritative, fast, store } = tracked(setup({ writer: true }));
    await fast.inner.compareAndSet(testMap(1), undefined);
    await authoritative.inner.compareAndSet(testMap(3), undefined);
    expect((await store.load())?.epoch).toBe(3);
    expect(fast.loads).toBe(0);
  });

  it('watch passes on each epoch once, from whichever copy has it first, never going back', async () => {
    const { authoritative, fast, store } = tracked(setup());
    const seen: number[] = [];
    store.watch((m) => seen.push(m.epoch));
    await authoritative.inner.compareAndSet(testMap(1), undefined);
    await fast.inner.compareAndSet(testMap(1), undefined);
    await until(() => seen.includes(1));
    await authoritative.inner.compareAndSet(testMap(3), 1);
    await until(() => seen.includes(3));
    await fast.inner.compareAndSet(testMap(2), 1); // an older epoch arriving late
    await fast.inner.compareAndSet(testMap(3), 2);
    await authoritative.inner.compareAndSet(testMap(4), 3);
    await until(() => seen.includes(4));
    await new Promise((r) => setTimeout(r, 60)); // a few polls more
    expect(seen).toEqual([1, 3, 4]);
  });

  it('a writer repairs the fast copy in the background', async () => {
    const { authoritative, fast } = tracked(setup({ writer: true, repairIntervalMs: 20 }));
    await authoritative.inner.compareAndSet(testMap(2), undefined);
    const deadline = Date.now() + 5000;
    while ((await fast.inner.load())?.epoch !== 2) {
      if (Date.now() > deadline) throw new Error('fast copy not repaired within 5 s');
      await new Promise((r) => setTimeout(r, 10));
    }
  });

  it('a reader never writes the fast copy', async () => {
    const { authoritative, fast, store } = tracked(setup({ repairIntervalMs: 20 }));
    await authoritative.inner.compareAndSet(testMap(2), undefined);
    expect((await store.load())?.epoch).toBe(2);
    await new Promise((r) => setTimeout(r, 60));
    expect(await fast.inner.load()).toBeUndefined();
    // Only on request (e.g. by a tool): a reader's own loads never do it.
    expect(await store.repairFastCopy()).toBe('written');
  });

  it('close() closes both copies and reports a failure after trying both', async () => {
    const { authoritative, fast, store } = setup();
    fast.closeError = new Error('fast close failed');
    await expect(store.close()).rejects.toThrow('fast close failed');
    await expect(authoritative.inner.load()).rejects.toMatchObject({ code: 'metadata_closed' });
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_closed' });
  });
});
