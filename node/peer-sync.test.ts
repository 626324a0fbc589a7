import fc from 'fast-check';
import { leafOf } from '../common/hash-tree';
import type { KvRecord } from '../common/record';
import { exclusionQuantumMs } from './purge';
import {
  P,
  GRACE,
  live,
  tomb,
  key,
  partitionOfKey,
  mapOf,
  replica,
  close,
  reopen,
  pass,
  allRoots,
  rebuiltRoots,
  stored,
  env,
  useReplicaFixtures,
} from './anti-entropy.fixtures';

/** Syncing a partition with a replica (node/peer-sync.ts), through the AntiEntropy facade over real replicas. */

useReplicaFixtures();

describe('anti-entropy between real replicas', () => {
  it('converges two diverged replicas: every key ends at its newest version on both, trees equal', async () => {
    const recordArb = fc.record({
      i: fc.integer({ min: 0, max: 40 }),
      wall: fc.integer({ min: 1, max: 1000 }),
      writer: fc.constantFrom('g1', 'g2'),
      tombstone: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(recordArb, { maxLength: 60 }),
        fc.array(recordArb, { maxLength: 60 }),
        async (onA, onB) => {
          env.map = mapOf(['a', 'b']);
          const a = replica('a');
          const b = replica('b');
          const newest = new Map<number, KvRecord>();
          for (const [r, writes] of [
            [a, onA],
            [b, onB],
          ] as const) {
            for (const w of writes) {
              const rec: KvRecord = {
                version: { wall: env.now + w.wall, logical: 0, writer: w.writer },
                value: w.tombstone ? Buffer.alloc(0) : Buffer.from(`v${w.wall}`),
                tombstone: w.tombstone,
              };
              await r.storage.applyRecord(partitionOfKey(w.i), key(w.i), rec);
              const cur = newest.get(w.i);
              if (
                !cur ||
                cur.version.wall < rec.version.wall ||
                (cur.version.wall === rec.version.wall && cur.version.writer < rec.version.writer)
              )
                newest.set(w.i, rec);
            }
          }
          await pass(a);
          for (const r of [a, b]) {
            for (const [i, rec] of newest)
              expect(r.storage.get(partitionOfKey(i), key(i))?.version).toEqual(rec.version);
            expect(stored(r)).toBe(newest.size);
            expect(allRoots(r).equals(rebuiltRoots(r))).toBe(true);
          }
          expect(allRoots(a).equals(allRoots(b))).toBe(true);
          await close(a);
          await close(b);
        },
      ),
      { numRuns: 15 },
    );
  });

  it('does not send a purged tombstone back from a replica that has not purged it yet', async () => {
    env.map = mapOf(['a', 'b']);
    let a = replica('a');
    let b = replica('b');
    for (const r of [a, b]) await r.storage.applyRecord(0, key(0), tomb(env.now));
    [a, b] = [await reopen(a), await reopen(b)];
    env.now += GRACE + exclusionQuantumMs(GRACE) + 1;
    await pass(a); // agreed (the tombstone is out of both trees): a purges, b still holds it
    expect(stored(a)).toBe(0);
    expect(stored(b)).toBe(1);
    // A new key in the same leaf makes the leaf differ, so a fetches b's bucket, tombstone included.
    let j = 4;
    while (leafOf(key(j), 64) !== leafOf(key(0), 64)) j += P;
    await b.storage.applyRecord(0, key(j), live(env.now, 'new'));
    await pass(a);
    expect(a.storage.get(0, key(j))?.value.toString()).toBe('new');
    expect(a.storage.get(0, key(0))).toBeUndefined();
    // Only the new key travelled: the tombstone was not taken back, even for a moment.
    expect(a.ae.status().keysRepaired).toBe(1);
    await pass(b);
    expect(stored(b)).toBe(1);
    expect(allRoots(a).equals(allRoots(b))).toBe(true);
  });
});
