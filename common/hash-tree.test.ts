import fc from 'fast-check';
import { partitionOf } from './hash';
import {
  buildTree,
  diffLeaves,
  HashTreeError,
  leafOf,
  PartitionTree,
  recordHash,
  type TreeEntry,
} from './hash-tree';

const LEAVES = 16;

const versionArb = fc.record({
  wall: fc.integer({ min: 0, max: 50 }),
  logical: fc.integer({ min: 0, max: 2 }),
  writer: fc.constantFrom('g1', 'g2'),
});
// A small key space so operations often hit the same key.
const keyArb = fc.oneof(
  fc.integer({ min: 0, max: 20 }).map((i) => Buffer.from(`k${i}`)),
  fc.uint8Array({ minLength: 1, maxLength: 8 }).map((a) => Buffer.from(a)),
);
const excludeArb = fc.option(fc.integer({ min: 0, max: 100 }), { nil: undefined });
const entryArb: fc.Arbitrary<TreeEntry> = fc.record(
  { key: keyArb, version: versionArb, excludeAt: excludeArb },
  { requiredKeys: ['key', 'version'] },
);

type Op =
  { kind: 'put'; entry: TreeEntry } | { kind: 'remove'; key: Buffer } | { kind: 'sweep'; now: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: entryArb.map((entry): Op => ({ kind: 'put', entry })) },
  { weight: 2, arbitrary: keyArb.map((key): Op => ({ kind: 'remove', key })) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 120 }).map((now): Op => ({ kind: 'sweep', now })) },
);

/** One record per key, as storage holds them. */
function uniqueByKey(entries: readonly TreeEntry[]): TreeEntry[] {
  const m = new Map<string, TreeEntry>();
  for (const e of entries) m.set(Buffer.from(e.key).toString('hex'), e);
  return [...m.values()];
}

const uniqueEntriesArb = fc.array(entryArb, { maxLength: 60 }).map(uniqueByKey);

/** Expected per-leaf contents, computed without XOR: the reference the tree's hashes must agree with. */
function leafContents(entries: readonly TreeEntry[], now: number): string[] {
  const leaves: string[][] = Array.from({ length: LEAVES }, () => []);
  for (const e of entries) {
    if (e.excludeAt !== undefined && e.excludeAt <= now) continue;
    const v = e.version;
    leaves[leafOf(e.key, LEAVES)].push(
      `${Buffer.from(e.key).toString('hex')}@${v.wall}.${v.logical}.${v.writer}`,
    );
  }
  return leaves.map((l) => l.sort().join(','));
}

describe('PartitionTree (property tests)', () => {
  it('kept incrementally through puts, removes and sweeps, equals a rebuild from the final records', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 80 }), (ops) => {
        const tree = new PartitionTree(LEAVES);
        const held = new Map<string, TreeEntry>();
        let swept = -Infinity;
        for (const op of ops) {
          if (op.kind === 'put') {
            const id = Buffer.from(op.entry.key).toString('hex');
            tree.replace(held.get(id), op.entry);
            held.set(id, op.entry);
          } else if (op.kind === 'remove') {
            const id = op.key.toString('hex');
            const prev = held.get(id);
            if (prev) tree.remove(prev);
            held.delete(id);
          } else {
            tree.sweep(op.now);
            swept = Math.max(swept, op.now);
          }
        }
        const rebuilt = buildTree(held.values(), LEAVES, swept);
        expect(tree.leaves().equals(rebuilt.leaves())).toBe(true);
        expect(tree.root().equals(rebuilt.root())).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('does not depend on the order records arrive in', () => {
    fc.assert(
      fc.property(
        uniqueEntriesArb.chain((entries) =>
          fc.tuple(
            fc.constant(entries),
            fc.shuffledSubarray(entries, { minLength: entries.length, maxLength: entries.length }),
          ),
        ),
        fc.integer({ min: 0, max: 120 }),
        ([entries, shuffled], now) => {
          const a = buildTree(entries, LEAVES, now);
          const b = buildTree(shuffled, LEAVES, now);
          expect(a.root().equals(b.root())).toBe(true);
          expect(diffLeaves(a.leaves(), b.leaves())).toEqual([]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('gives two trees of the same record set, swept alike, equal roots, whatever each swept on the way', () => {
    fc.assert(
      fc.property(uniqueEntriesArb, fc.array(fc.integer({ min: 0, max: 120 })), (entries, sweeps) => {
        // Replica A sweeps as records arrive; replica B receives everything first. Same final instant.
        const a = new PartitionTree(LEAVES);
        for (const [i, e] of entries.entries()) {
          a.add(e);
          if (sweeps[i] !== undefined) a.sweep(sweeps[i]);
        }
        const last = Math.max(-Infinity, ...sweeps.slice(0, entries.length));
        const b = buildTree(entries, LEAVES);
        b.sweep(last);
        expect(a.root().equals(b.root())).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('changes exactly one leaf, and the root, when a single record differs', () => {
    fc.assert(
      fc.property(
        uniqueEntriesArb,
        entryArb.filter((e) => e.excludeAt === undefined),
        fc.boolean(),
        (entries, extra, replaceExisting) => {
          const base = entries.filter((e) => e.excludeAt === undefined);
          let changed: TreeEntry[];
          let key: Uint8Array;
          if (replaceExisting && base.length > 0) {
            // Same key, another version.
            const target = base[0];
            key = target.key;
            const v = target.version;
            changed = [{ key, version: { ...v, logical: v.logical + 1 } }, ...base.slice(1)];
          } else {
            key = extra.key;
            const hex = Buffer.from(key).toString('hex');
            if (base.some((e) => Buffer.from(e.key).toString('hex') === hex)) return;
            changed = [...base, extra];
          }
          const a = buildTree(base, LEAVES);
          const b = buildTree(changed, LEAVES);
          expect(diffLeaves(a.leaves(), b.leaves())).toEqual([leafOf(key, LEAVES)]);
          expect(a.root().equals(b.root())).toBe(false);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('diffs leaves to exactly the leaves whose record sets differ', () => {
    fc.assert(
      fc.property(uniqueEntriesArb, uniqueEntriesArb, fc.integer({ min: 0, max: 120 }), (x, y, now) => {
        // Overlapping sets: y shares a random part of x.
        const shared = x.filter((_, i) => i % 2 === 0);
        const other = uniqueByKey([...shared, ...y]);
        const expected = leafContents(x, now)
          .map((c, i) => (c === leafContents(other, now)[i] ? -1 : i))
          .filter((i) => i >= 0);
        const a = buildTree(x, LEAVES, now);
        const b = buildTree(other, LEAVES, now);
        expect(diffLeaves(a.leaves(), b.leaves())).toEqual(expected);
        expect(a.root().equals(b.root())).toBe(expected.length === 0);
      }),
      { numRuns: 500 },
    );
  });
});

describe('PartitionTree', () => {
  const v = (wall: number) => ({ wall, logical: 0, writer: 'g1' });

  it('drops dying records at their instant, on a replica that sweeps late too', () => {
    const tomb: TreeEntry = { key: Buffer.from('gone'), version: v(5), excludeAt: 100 };
    const live: TreeEntry = { key: Buffer.from('kept'), version: v(6) };
    const early = buildTree([tomb, live], LEAVES);
    const withoutTomb = buildTree([live], LEAVES);
    expect(early.sweep(99)).toBe(0);
    expect(early.root().equals(withoutTomb.root())).toBe(false);
    expect(early.sweep(100)).toBe(1);
    expect(early.root().equals(withoutTomb.root())).toBe(true);
    // A record that arrives after its instant has passed does not count.
    const late = buildTree([live], LEAVES, 150);
    expect(late.add(tomb)).toBe(false);
    expect(late.root().equals(withoutTomb.root())).toBe(true);
    // Removing it again is a no-op as well.
    expect(late.remove(tomb)).toBe(false);
    expect(late.root().equals(withoutTomb.root())).toBe(true);
  });

  it('reports nothing to drop for a dying record added and removed before its instant', () => {
    const t = new PartitionTree(LEAVES);
    const e: TreeEntry = { key: Buffer.from('a'), version: v(1), excludeAt: 10 };
    t.add(e);
    t.remove(e);
    expect(t.sweep(20)).toBe(0);
    expect(t.root().equals(new PartitionTree(LEAVES).root())).toBe(true);
  });

  it('lays leaves out as 8-byte big-endian hashes and caches nothing stale', () => {
    const t = new PartitionTree(4);
    const e: TreeEntry = { key: Buffer.from('x'), version: v(1) };
    const before = t.root();
    t.add(e);
    const leaves = t.leaves();
    expect(leaves.length).toBe(32);
    const leaf = leafOf(e.key, 4);
    expect(leaves.readBigUInt64BE(leaf * 8)).toBe(recordHash(e.key, e.version));
    expect(t.root().equals(before)).toBe(false);
  });

  it('hashes key and version unambiguously', () => {
    // The same bytes split differently between key and writer must not collide.
    const a = recordHash(Buffer.from('ab'), { wall: 1, logical: 0, writer: 'c' });
    const b = recordHash(Buffer.from('a'), { wall: 1, logical: 0, writer: 'bc' });
    expect(a).not.toBe(b);
    expect(recordHash(Buffer.from('k'), v(1))).not.toBe(recordHash(Buffer.from('k'), v(2)));
  });

  it('spreads the keys of one partition over all leaves (the leaf hash is not the partition hash)', () => {
    const keys: Buffer[] = [];
    for (let i = 0; keys.length < 6400; i++) {
      const k = Buffer.from(`key-${i}`);
      if (partitionOf(k, 64) === 5) keys.push(k);
    }
    const counts = new Array<number>(64).fill(0);
    for (const k of keys) counts[leafOf(k, 64)]++;
    expect(Math.min(...counts)).toBeGreaterThan(50);
    expect(Math.max(...counts)).toBeLessThan(150);
  });

  it('refuses to compare trees of different leaf counts', () => {
    expect(() => diffLeaves(new PartitionTree(4).leaves(), new PartitionTree(8).leaves())).toThrow(
      HashTreeError,
    );
    expect(() => new PartitionTree(0)).toThrow(/leaf count/);
  });
});
