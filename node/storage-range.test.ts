import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { Storage } from './storage';
import { encodeRecord, recordDigest, type KvRecord } from '../common/record';
import { prefixRange, type KeyRange } from '../common/key-range';

const rec = (wall: number, value: string, tombstone = false): KvRecord => ({
  version: { wall, logical: 0, writer: 'g1' },
  value: Buffer.from(value),
  tombstone,
});

interface Held {
  readonly p: number;
  readonly k: Buffer;
  readonly r: Buffer;
}

/** What Storage.range must answer, computed from the whole content. */
function model(
  held: readonly Held[],
  partitions: readonly number[],
  range: KeyRange,
  after: Buffer | undefined,
): Held[] {
  return held
    .filter((h) => partitions.includes(h.p))
    .filter((h) => Buffer.compare(h.k, range.start) >= 0)
    .filter((h) => range.end === undefined || Buffer.compare(h.k, range.end) < 0)
    .filter((h) => after === undefined || Buffer.compare(h.k, after) > 0)
    .sort((a, b) => Buffer.compare(a.k, b.k));
}

const show = (items: readonly Held[]): string[] => items.map((i) => `${i.p}:${i.k.toString('hex')}`);

describe('Storage.range (real LMDB on disk): one key order across partitions', () => {
  let dir: string;
  let s: Storage;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-range-'));
    s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
  });
  afterEach(async () => {
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function load(keys: ReadonlyArray<readonly [number, string]>): Promise<Held[]> {
    const held: Held[] = [];
    let wall = 100;
    for (const [p, k] of keys) {
      const r = encodeRecord(rec(wall++, `v-${p}-${k}`, k.endsWith('~')));
      await s.apply([{ partition: p, key: Buffer.from(k), record: r }]);
      held.push({ p, k: Buffer.from(k), r });
    }
    return held;
  }

  it('merges the partitions asked for, in byte order, tombstones included, others left out', async () => {
    const held = await load([
      [3, 'users/b'],
      [1, 'users/a'],
      [2, 'users/c~'],
      [1, 'users/d'],
      [2, 'other'],
      [4, 'users/aa'],
    ]);
    const got = s.range([1, 2, 3], prefixRange(Buffer.from('users/')), { limit: 100, maxBytes: 1 << 20 });
    expect(got.more).toBe(false);
    expect(got.items.map((i) => i.k.toString())).toEqual(['users/a', 'users/b', 'users/c~', 'users/d']);
    // Each item carries its partition and the stored record in wire form.
    expect(got.items.map((i) => i.p)).toEqual([1, 3, 2, 1]);
    for (const i of got.items) {
      expect(i.r.equals(held.find((h) => h.k.equals(i.k))?.r as Buffer)).toBe(true);
    }
  });

  it('stops at the limit or the byte budget (always one record), saying there is more', async () => {
    await load([
      [1, 'a'],
      [2, 'b'],
      [1, 'c'],
    ]);
    const all = { start: Buffer.alloc(0) };
    const two = s.range([1, 2], all, { limit: 2, maxBytes: 1 << 20 });
    expect([two.items.map((i) => i.k.toString()), two.more]).toEqual([['a', 'b'], true]);
    const one = s.range([1, 2], all, { limit: 10, maxBytes: 1 });
    expect([one.items.map((i) => i.k.toString()), one.more]).toEqual([['a'], true]);
    const rest = s.range([1, 2], all, { after: Buffer.from('b'), limit: 10, maxBytes: 1 << 20 });
    expect([rest.items.map((i) => i.k.toString()), rest.more]).toEqual([['c'], false]);
  });

  it('digests: the records without their values', async () => {
    const held = await load([[7, 'k']]);
    const got = s.range([7], { start: Buffer.alloc(0) }, { limit: 10, maxBytes: 1 << 20, digest: true });
    expect(got.items[0].r.equals(recordDigest(held[0].r))).toBe(true);
  });

  it('resumes after a key of the longest length a node stores', async () => {
    const long = 'x'.repeat(1976);
    await load([
      [1, long],
      [2, `${long.slice(0, 1975)}y`],
    ]);
    const got = s.range(
      [1, 2],
      { start: Buffer.alloc(0) },
      { after: Buffer.from(long), limit: 10, maxBytes: 1 << 20 },
    );
    expect(got.items.map((i) => i.k.toString().slice(1970))).toEqual(['xxxxxy']);
  });

  it('matches the model for any keys, partitions, ranges, limits and resume points', async () => {
    const alphabet = ['a', 'b', 'ab', 'b\u00ff', 'ba', 'c', 'a\u0000', 'zz'];
    const keyArb = fc
      .array(fc.constantFrom(...alphabet), { minLength: 1, maxLength: 3 })
      .map((parts) => parts.join(''));
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 5 }), keyArb), {
          maxLength: 40,
          selector: ([, k]) => k, // a key belongs to one partition
        }),
        fc.uniqueArray(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 6 }),
        fc.option(keyArb, { nil: undefined }),
        fc.option(keyArb, { nil: undefined }),
        fc.integer({ min: 1, max: 7 }),
        async (keys, partitions, bound, after, pageLimit) => {
          await s.close();
          fs.rmSync(dir, { recursive: true, force: true });
          dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-range-'));
          s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
          const held = await load(keys);
          const range: KeyRange =
            bound === undefined ? { start: Buffer.alloc(0) } : prefixRange(Buffer.from(bound));
          const afterKey = after === undefined ? undefined : Buffer.from(after);
          const want = model(held, partitions, range, afterKey);
          const got = s.range(partitions, range, {
            ...(afterKey === undefined ? {} : { after: afterKey }),
            limit: 1000,
            maxBytes: 1 << 20,
          });
          expect(show(got.items)).toEqual(show(want));
          expect(got.more).toBe(false);
          // Paged by any limit, resuming after the last key of each page: every record exactly once.
          const paged: Held[] = [];
          let cursor: Buffer | undefined = afterKey;
          for (let page = 0; page < 100; page++) {
            const r = s.range(partitions, range, {
              ...(cursor === undefined ? {} : { after: cursor }),
              limit: pageLimit,
              maxBytes: 1 << 20,
            });
            paged.push(...r.items);
            if (!r.more) break;
            cursor = r.items[r.items.length - 1].k;
          }
          expect(show(paged)).toEqual(show(want));
        },
      ),
      { numRuns: 60 },
    );
  });
});
