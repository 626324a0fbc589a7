import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAX_NUMBERED_CONTENT_TYPES, Storage, storageKey } from './storage';
import { encodeRecord, recordDigest, type KvRecord } from '../common/record';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kv-storage-'));
}

const rec = (wall: number, value: string, writer = 'g1', tombstone = false): KvRecord => ({
  version: { wall, logical: 0, writer },
  value: Buffer.from(value),
  tombstone,
});

describe('Storage (real LMDB on disk)', () => {
  let dir: string;
  beforeEach(() => {
    dir = tmpDir();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('stores, reads back and keeps the higher version only', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const key = Buffer.from('user/42');
    expect(await s.applyRecord(7, key, rec(100, 'a'))).toBe(true);
    expect(await s.applyRecord(7, key, rec(90, 'older'))).toBe(false);
    expect(await s.applyRecord(7, key, rec(100, 'a'))).toBe(false);
    expect(await s.applyRecord(7, key, rec(110, '', 'g1', true))).toBe(true);
    const got = s.get(7, key);
    expect(got?.tombstone).toBe(true);
    expect(got?.version.wall).toBe(110);
    expect(s.get(8, key)).toBeUndefined();
    await s.close();
  });

  it('reads give exactly the stored bytes, whatever was read before (LMDB reuses its read buffer)', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const big = rec(100, 'B'.repeat(5000));
    const small = rec(101, 's');
    await s.applyRecord(3, Buffer.from('big'), big);
    await s.applyRecord(3, Buffer.from('small'), small);
    for (let round = 0; round < 2; round++) {
      // The big value first, so the buffer the small one is read into holds the big one's bytes after it.
      expect(s.getEncoded(3, Buffer.from('big'))?.equals(encodeRecord(big))).toBe(true);
      expect(s.getEncoded(3, Buffer.from('small'))?.equals(encodeRecord(small))).toBe(true);
      expect(s.get(3, Buffer.from('big'))).toEqual(big);
      expect(s.get(3, Buffer.from('small'))).toEqual(small);
      expect(s.getDigest(3, Buffer.from('big'))?.equals(recordDigest(encodeRecord(big)))).toBe(true);
      expect(s.getDigest(3, Buffer.from('small'))?.equals(recordDigest(encodeRecord(small)))).toBe(true);
    }
    // What was returned stays as it was after further reads.
    const kept = s.getEncoded(3, Buffer.from('small'));
    s.get(3, Buffer.from('big'));
    expect(kept?.equals(encodeRecord(small))).toBe(true);
    await s.close();
  });

  it('keeps every acknowledged write across close and reopen', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        s.applyRecord(i % 16, Buffer.from(`k${i}`), rec(1000 + i, `v${i}`)),
      ),
    );
    expect(s.stats().keys).toBe(500);
    await s.close();
    const again = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    for (let i = 0; i < 500; i++) {
      expect(again.get(i % 16, Buffer.from(`k${i}`))?.value.toString()).toBe(`v${i}`);
    }
    await again.close();
  });

  it('applies a mixed batch item by item under the merge rule', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    await s.applyRecord(1, Buffer.from('a'), rec(50, 'a50'));
    const res = await s.apply([
      { partition: 1, key: Buffer.from('a'), record: encodeRecord(rec(40, 'a40')) },
      { partition: 1, key: Buffer.from('b'), record: encodeRecord(rec(40, 'b40')) },
      { partition: 1, key: Buffer.from('a'), record: encodeRecord(rec(60, 'a60')) },
    ]);
    expect(res).toEqual([false, true, true]);
    expect(s.get(1, Buffer.from('a'))?.value.toString()).toBe('a60');
    await s.close();
  });

  it('refuses a data directory that belongs to another node', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    await s.close();
    expect(() => Storage.open(dir, { nodeId: 'n2', cluster: 'c' })).toThrow(/belongs to node n1/);
  });

  it('accepts the largest key the gateway allows and rejects empty keys', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const big = Buffer.alloc(1976, 0x61);
    expect(await s.applyRecord(3, big, rec(1, 'x'))).toBe(true);
    expect(s.get(3, big)?.value.toString()).toBe('x');
    expect(() => storageKey(3, Buffer.alloc(0))).toThrow(/cannot be stored/);
    expect(() => storageKey(70000, Buffer.from('a'))).toThrow(/out of range/);
    await s.close();
  });
});

describe('Storage ranges and hooks', () => {
  let dir: string;
  beforeEach(() => {
    dir = tmpDir();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('scans one partition in key order, resumable after a key, never crossing into the next', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    for (const p of [4, 5, 6]) {
      for (const k of ['b', 'a', 'c', 'a/x']) await s.applyRecord(p, Buffer.from(k), rec(10, `${p}${k}`));
    }
    const all = s.scan(5);
    expect(all.map((r) => r.key.toString())).toEqual(['a', 'a/x', 'b', 'c']);
    expect(s.scan(5, { limit: 2 }).map((r) => r.key.toString())).toEqual(['a', 'a/x']);
    expect(s.scan(5, { afterKey: Buffer.from('a/x') }).map((r) => r.key.toString())).toEqual(['b', 'c']);
    expect(s.scan(5, { afterKey: Buffer.from('c') })).toEqual([]);
    expect(s.scan(65535)).toEqual([]);
    expect(s.freshDisk).toBe(true);
    await s.close();
    const again = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    expect(again.freshDisk).toBe(false);
    await again.close();
  });

  it('gives a snapshot of every record, in key order across partitions, that writes after it do not change', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    for (const p of [7, 0, 300]) {
      // The wall clock tells the records apart: a snapshot gives headers, not values.
      for (const k of ['b', 'a'])
        await s.applyRecord(p, Buffer.from(k), rec(1000 + 10 * p + (k === 'b' ? 1 : 0), `${p}${k}`));
    }
    const snap = s.snapshot();
    try {
      // Written after the snapshot: a newer version of 7/a and a new key.
      await s.applyRecord(7, Buffer.from('a'), rec(20000, 'newer'));
      await s.applyRecord(7, Buffer.from('c'), rec(20000, 'new'));
      const seen: string[] = [];
      for (const { partition, key, header } of snap.records()) {
        seen.push(`${partition}:${key.toString()}:${header.version.wall}`);
      }
      expect(seen).toEqual(['0:a:1000', '0:b:1001', '7:a:1070', '7:b:1071', '300:a:4000', '300:b:4001']);
      expect(snap.get(7, Buffer.from('a'))).toEqual({
        version: { wall: 1070, logical: 0, writer: 'g1' },
        tombstone: false,
      });
      expect(snap.get(7, Buffer.from('c'))).toBeUndefined();
      // The database itself has the writes.
      expect(s.get(7, Buffer.from('a'))?.value.toString()).toBe('newer');
    } finally {
      snap.done();
    }
    await s.close();
  });

  it('tells listeners about replacements only, with the record replaced', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const seen: string[] = [];
    s.onApplied((changes) => {
      for (const c of changes)
        seen.push(`${c.key}:${c.previous?.version.wall ?? '-'}->${c.next.version.wall}`);
    });
    await s.applyRecord(1, Buffer.from('k'), rec(10, 'a'));
    await s.applyRecord(1, Buffer.from('k'), rec(5, 'older'));
    await s.applyRecord(1, Buffer.from('k'), rec(20, 'b'));
    expect(seen).toEqual(['k:-->10', 'k:10->20']);
    await s.close();
  });

  it('purges a record only while it still has the expected version', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const tomb = rec(10, '', 'g1', true);
    await s.applyRecord(1, Buffer.from('k'), tomb);
    await s.applyRecord(1, Buffer.from('k2'), tomb);
    await s.applyRecord(1, Buffer.from('k2'), rec(11, 'rewritten'));
    expect(await s.purge(1, Buffer.from('k'), tomb)).toBe(true);
    expect(s.get(1, Buffer.from('k'))).toBeUndefined();
    expect(await s.purge(1, Buffer.from('k2'), tomb)).toBe(false);
    expect(s.get(1, Buffer.from('k2'))?.value.toString()).toBe('rewritten');
    await s.close();
  });

  it('drop deletes a moved partition but keeps a record rewritten since the scan', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    for (let i = 0; i < 5; i++) await s.applyRecord(3, Buffer.from(`k${i}`), rec(100, `v${i}`));
    await s.applyRecord(4, Buffer.from('other'), rec(100, 'x'));
    const removed: string[] = [];
    s.onRemoved((p, items) => removed.push(...items.map((i) => `${p}/${i.key.toString()}`)));
    const scanned = s.scan(3);
    // A write that raced the clean-up: newer than what was scanned, so it stays.
    await s.applyRecord(3, Buffer.from('k2'), rec(200, 'newer'));
    expect(await s.drop(3, scanned)).toBe(4);
    expect(s.scan(3).map((r) => r.key.toString())).toEqual(['k2']);
    expect(s.get(3, Buffer.from('k2'))?.value.toString()).toBe('newer');
    expect(s.get(4, Buffer.from('other'))?.value.toString()).toBe('x');
    expect(removed.sort()).toEqual(['3/k0', '3/k1', '3/k3', '3/k4']);
    await s.close();
  });

  it('stores records compactly, numbering each writer once, and reads them back after reopen', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const wall = Date.now();
    const writers = Array.from({ length: 200 }, (_, i) => `gateway-${i}`);
    // All in one turn: one LMDB transaction gives each new writer its number, once.
    await Promise.all(
      writers.flatMap((w, i) => [
        s.applyRecord(1, Buffer.from(`${w}/a`), {
          version: { wall, logical: i, writer: w },
          value: Buffer.alloc(100, i),
          tombstone: false,
        }),
        s.applyRecord(1, Buffer.from(`${w}/b`), {
          version: { wall, logical: 0, writer: w },
          value: Buffer.alloc(100, i),
          tombstone: false,
          expiresAt: wall + 5000,
        }),
      ]),
    );
    await s.close();

    // The bytes on disk, through LMDB itself: 9 header bytes (10 from the 128th writer on), 15 with an expiry.
    const { open } = await import('lmdb');
    const raw = open({ path: dir, maxDbs: 8 });
    const data = raw.openDB<Buffer, Buffer>({ name: 'data', keyEncoding: 'binary', encoding: 'binary' });
    const numbers = raw.openDB<Buffer, Buffer>({
      name: 'writers',
      keyEncoding: 'binary',
      encoding: 'binary',
    });
    const sizes = new Set<number>();
    for (const { key, value } of data.getRange()) {
      const expiring = key.toString().endsWith('/b');
      sizes.add(value.length - 100 - (expiring ? 6 : 0));
    }
    // Logical counters and writer numbers from 128 on take two bytes each.
    expect([...sizes].sort((x, y) => x - y)).toEqual([9, 10, 11]);
    expect([...numbers.getRange()].length).toBe(1 + 2 * writers.length);
    await raw.close();

    const again = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    for (const [i, w] of writers.entries()) {
      const a: KvRecord = {
        version: { wall, logical: i, writer: w },
        value: Buffer.alloc(100, i),
        tombstone: false,
      };
      expect(again.get(1, Buffer.from(`${w}/a`))).toEqual(a);
      expect(again.getEncoded(1, Buffer.from(`${w}/a`))?.equals(encodeRecord(a))).toBe(true);
      expect(again.get(1, Buffer.from(`${w}/b`))?.expiresAt).toBe(wall + 5000);
    }
    // A known writer keeps its number; a new one gets the next.
    await again.applyRecord(2, Buffer.from('x'), rec(wall, 'x', 'gateway-7'));
    await again.applyRecord(2, Buffer.from('y'), rec(wall, 'y', 'gateway-new'));
    expect(again.get(2, Buffer.from('y'))?.version.writer).toBe('gateway-new');
    await again.close();
    const check = open({ path: dir, maxDbs: 8 });
    const numbers2 = check.openDB<Buffer, Buffer>({
      name: 'writers',
      keyEncoding: 'binary',
      encoding: 'binary',
    });
    expect([...numbers2.getRange()].length).toBe(1 + 2 * (writers.length + 1));
    await check.close();
  });

  it('stores a content type as a number of its own, kept across reopen; past the bound it is spelt out', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const wall = Date.now();
    const typed = (i: number, contentType: string): KvRecord => ({
      version: { wall, logical: i, writer: 'g1' },
      value: Buffer.alloc(100, i),
      tombstone: false,
      contentType,
    });
    await Promise.all(
      ['application/json', 'text/plain; charset=utf-8', 'application/json'].map((t, i) =>
        s.applyRecord(1, Buffer.from(`k${i}`), typed(i, t)),
      ),
    );
    // The bound: one more type than a node numbers, each in a transaction of its own.
    for (let i = 0; i < MAX_NUMBERED_CONTENT_TYPES; i++) {
      await s.applyRecord(2, Buffer.from(`t${i}`), typed(i, `x-test/t${i}`));
    }
    await s.close();

    const { open } = await import('lmdb');
    const raw = open({ path: dir, maxDbs: 8 });
    const data = raw.openDB<Buffer, Buffer>({ name: 'data', keyEncoding: 'binary', encoding: 'binary' });
    const header = (p: number, k: string): number =>
      (data.getBinary(storageKey(p, Buffer.from(k))) as Buffer).length - 100;
    // 9 bytes of header and one for the type's number, the same number for the same type.
    expect([header(1, 'k0'), header(1, 'k1'), header(1, 'k2')]).toEqual([10, 10, 10]);
    // Types 3 .. 4096 got numbers (two bytes from the 128th name on); the one past the bound did not.
    const last = `t${MAX_NUMBERED_CONTENT_TYPES - 1}`;
    expect(header(2, 't200')).toBe(12); // 9, a second byte for logical 200, two for type number 204
    expect(header(2, last)).toBe(
      encodeRecord(typed(MAX_NUMBERED_CONTENT_TYPES - 1, `x-test/${last}`)).length - 100,
    );
    await raw.close();

    const again = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    expect(again.get(1, Buffer.from('k1'))).toEqual(typed(1, 'text/plain; charset=utf-8'));
    expect(again.getEncoded(1, Buffer.from('k0'))?.equals(encodeRecord(typed(0, 'application/json')))).toBe(
      true,
    );
    expect(again.get(2, Buffer.from(last))?.contentType).toBe(`x-test/${last}`);
    expect(again.get(2, Buffer.from('t5'))?.contentType).toBe('x-test/t5');
    await again.close();
    // 4,097 transactions, each flushed: seconds on a loaded machine, so a budget above jest's 5 s.
  }, 60_000);

  it('reads, replaces, purges and drops records stored in the wire form (before the compact form existed)', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    await s.close();
    const { open } = await import('lmdb');
    const raw = open({ path: dir, maxDbs: 8 });
    const data = raw.openDB<Buffer, Buffer>({ name: 'data', keyEncoding: 'binary', encoding: 'binary' });
    const old = (i: number) => rec(100 + i, `old${i}`, 'writer-of-old');
    for (let i = 0; i < 4; i++) data.putSync(storageKey(5, Buffer.from(`k${i}`)), encodeRecord(old(i)));
    await raw.close();

    const again = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    expect(again.get(5, Buffer.from('k0'))).toEqual(old(0));
    expect(again.getEncoded(5, Buffer.from('k0'))?.equals(encodeRecord(old(0)))).toBe(true);
    expect(again.getDigest(5, Buffer.from('k0'))?.equals(recordDigest(encodeRecord(old(0))))).toBe(true);
    expect(
      again.scan(5).map((r) => r.raw.equals(encodeRecord(old(Number(r.key.toString().slice(1)))))),
    ).toEqual([true, true, true, true]);
    // The merge rule reads the old form: older refused, newer stored (in the compact form).
    expect(await again.applyRecord(5, Buffer.from('k1'), rec(50, 'older', 'writer-of-old'))).toBe(false);
    expect(await again.applyRecord(5, Buffer.from('k1'), rec(500, 'newer', 'writer-of-old'))).toBe(true);
    expect(again.get(5, Buffer.from('k1'))?.value.toString()).toBe('newer');
    expect(await again.purge(5, Buffer.from('k2'), old(2))).toBe(true);
    expect(again.get(5, Buffer.from('k2'))).toBeUndefined();
    const snap = again.snapshot();
    try {
      expect([...snap.records()].map((r) => r.header.version.wall)).toEqual([100, 500, 103]);
    } finally {
      snap.done();
    }
    expect(await again.drop(5, again.scan(5))).toBe(3);
    expect(again.scan(5)).toEqual([]);
    await again.close();
  });

  it('commits a batch larger than its transaction budget in slices, every write applied under the merge rule', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' }, { maxRecordsPerTransaction: 100 });
    await s.applyRecord(0, Buffer.from('k0250'), rec(5000, 'already newer'));
    const slices: number[] = [];
    s.onApplied((changes) => slices.push(changes.length));
    const batch = (from: number, n: number, wall: number) =>
      Array.from({ length: n }, (_, i) => ({
        partition: 0,
        key: Buffer.from(`k${String(from + i).padStart(4, '0')}`),
        record: encodeRecord(rec(wall, `v${from + i}`)),
      }));
    // Three bulk batches at once, as a partition stream and hint replays might send them.
    const results = await Promise.all([
      s.apply(batch(0, 350, 100)),
      s.apply(batch(1000, 120, 100)),
      s.apply(batch(2000, 30, 100)),
    ]);
    expect(results.map((r) => r.length)).toEqual([350, 120, 30]);
    expect(results[0].filter((applied) => !applied)).toHaveLength(1);
    expect(results[0][250]).toBe(false);
    expect(Math.max(...slices)).toBeLessThanOrEqual(100);
    expect(slices.reduce((x, y) => x + y, 0)).toBe(499);
    expect(s.stats().keys).toBe(500);
    expect(s.get(0, Buffer.from('k0250'))?.value.toString()).toBe('already newer');
    expect(s.get(0, Buffer.from('k1119'))?.value.toString()).toBe('v1119');
    await s.close();
  });
});

describe('writer numbers not yet in memory (lmdb-js reuses its read buffer)', () => {
  let dir: string;
  beforeEach(() => {
    dir = tmpDir();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a record read in the transaction that numbered its writer keeps its whole header', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const changes: { previous?: number; next?: number }[] = [];
    s.onApplied((batch) => {
      for (const c of batch) changes.push({ previous: c.previous?.expiresAt, next: c.next.expiresAt });
    });
    const key = Buffer.from('k');
    const first: KvRecord = { ...rec(100, 'first', 'new-writer'), expiresAt: 1_900_000_000_000 };
    const second: KvRecord = { ...rec(200, 'second', 'new-writer'), expiresAt: 1_900_000_000_500 };
    // One batch: the second write reads the first's record, whose writer was numbered moments ago.
    expect(
      await s.apply([
        { partition: 1, key, record: encodeRecord(first) },
        { partition: 1, key, record: encodeRecord(second) },
      ]),
    ).toEqual([true, true]);
    expect(changes).toEqual([
      { previous: undefined, next: first.expiresAt },
      { previous: first.expiresAt, next: second.expiresAt },
    ]);
    expect(s.getEncoded(1, key)?.equals(encodeRecord(second))).toBe(true);
    await s.close();
  });
});
