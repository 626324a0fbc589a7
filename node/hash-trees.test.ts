import fc from 'fast-check';
import { pastGrace } from './purge';
import {
  P,
  GRACE,
  live,
  tomb,
  key,
  partitionOfKey,
  mapOf,
  newAntiEntropy,
  replica,
  close,
  allRoots,
  rebuiltRoots,
  env,
  dirs,
  type Replica,
  useReplicaFixtures,
} from './anti-entropy.fixtures';

/** The hash trees (node/hash-trees.ts), through the AntiEntropy facade over real replicas (anti-entropy.fixtures.ts). */

useReplicaFixtures();

describe('anti-entropy between real replicas', () => {
  it('keeps trees equal to a rebuild while writes, tombstones and sweeps interleave', async () => {
    env.map = mapOf(['a']);
    const a = replica('a');
    for (let i = 0; i < 200; i++) {
      const rec =
        i % 3 === 0
          ? tomb(env.now + i)
          : live(env.now + i, `v${i}`, i % 5 === 0 ? env.now + i + 50 : undefined);
      await a.storage.applyRecord(partitionOfKey(i % 37), key(i % 37), rec);
      if (i % 20 === 0) {
        env.now += 300;
        a.ae.roots([0, 1, 2, 3]); // sweeps
      }
    }
    expect(allRoots(a).equals(rebuiltRoots(a))).toBe(true);
  });
});

describe('building the trees while the node takes writes', () => {
  /** One step of the concurrent load: a write (live, tombstone, expiring), a purge (if past grace) or a drop. */
  type Op =
    | { kind: 'write'; i: number; rec: 'live' | 'tomb' | 'expiring'; wall: number }
    | { kind: 'purge'; i: number }
    | { kind: 'drop'; i: number };

  const opArb: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('write' as const),
        i: fc.nat(59),
        rec: fc.constantFrom('live' as const, 'tomb' as const, 'expiring' as const),
        wall: fc.integer({ min: -3 * GRACE, max: 3 * GRACE }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('purge' as const), i: fc.nat(59) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), i: fc.nat(59) }) },
  );

  async function run(r: Replica, op: Op): Promise<void> {
    const p = partitionOfKey(op.i);
    if (op.kind === 'write') {
      const wall = env.now + op.wall;
      const rec =
        op.rec === 'live'
          ? live(wall, `w${op.i}`)
          : op.rec === 'tomb'
            ? tomb(wall)
            : live(wall, 'e', wall + 10);
      await r.storage.applyRecord(p, key(op.i), rec);
      return;
    }
    const current = r.storage.get(p, key(op.i));
    if (!current) return;
    // As node/purge.ts does: only records past their grace, which the trees no longer count.
    if (op.kind === 'purge') {
      if (pastGrace(current, GRACE, env.now)) await r.storage.purge(p, key(op.i), current);
    } else await r.storage.drop(p, [{ key: key(op.i), raw: r.storage.getEncoded(p, key(op.i))! }]);
  }

  it('ends with the trees a rebuild from disk gives, whatever the writes interleaved with the scan', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ i: fc.nat(59), wall: fc.integer({ min: -2 * GRACE, max: 0 }) }), {
          minLength: 10,
          maxLength: 60,
        }),
        // `at` in records scanned: most ops land during the scan (at least 10 records), some after it.
        fc.array(fc.record({ at: fc.nat(30), op: opArb }), { minLength: 1, maxLength: 40 }),
        async (preload, ops) => {
          const r = replica(`bg-${dirs.length}`);
          for (const w of preload)
            await r.storage.applyRecord(partitionOfKey(w.i), key(w.i), live(env.now + w.wall, 'p'));
          // A fresh AntiEntropy on the loaded disk, as at a node's start. The scan pauses after every
          // record and runs the ops due there (op k at record `at`), so writes land before, during
          // and after the scan, deterministically.
          const ae = newAntiEntropy(r);
          try {
            const due = [...ops].sort((a, b) => a.at - b.at);
            let record = 0;
            const building = ae.buildInBackground(P, {
              sliceMs: 0,
              checkEvery: 1,
              pause: async () => {
                record++;
                while (due.length > 0 && due[0].at <= record) await run(r, due.shift()!.op);
              },
            });
            if (r.storage.stats().keys > 0)
              expect(() => ae.roots([0])).toThrow(/still building its hash trees/);
            await building;
            for (const d of due) await run(r, d.op);
            // Writes after the build go through the incremental path.
            for (const { op } of ops.slice(0, 10)) await run(r, op);
            const roots = Buffer.concat(ae.roots(Array.from({ length: P }, (_, p) => p)));
            expect(roots.equals(rebuiltRoots(r))).toBe(true);
          } finally {
            // Also on a failed check: stop the build (and the writes in its pauses) before closing.
            await ae.stop();
            await close(r);
          }
        },
      ),
      { numRuns: 40, seed: 20261126 },
    );
  });
});
