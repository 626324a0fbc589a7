import fc from 'fast-check';
import type { KvRecord } from '../common/record';
import { mergeRange, resolveRangePage, type RangeAnswer } from './range-merge';

const NOW = 1_000_000;
const k = (s: string): Buffer => Buffer.from(s);
const rec = (wall: number, value: string, extra: Partial<KvRecord> = {}): KvRecord => ({
  version: { wall, logical: 0, writer: 'g' },
  value: Buffer.from(value),
  tombstone: false,
  ...extra,
});
const tomb = (wall: number): KvRecord => ({ ...rec(wall, ''), tombstone: true });
const digestOf = (r: KvRecord): KvRecord => ({ ...r, value: Buffer.alloc(0) });

function answer(
  node: string,
  partitions: number[],
  items: Array<[number, string, KvRecord]>,
  more = false,
  digest = false,
): RangeAnswer {
  return {
    node,
    partitions,
    items: items.map(([p, key, r]) => ({ p, k: k(key), rec: digest ? digestOf(r) : r })),
    more,
    digest,
  };
}

const keysOf = (page: { entries: { key: Buffer }[] }): string[] => page.entries.map((e) => e.key.toString());

describe('resolveRangePage', () => {
  test('the newest version of each key wins; replicas that lacked it or held an older one are repaired', () => {
    const page = resolveRangePage(
      [
        answer(
          'n1',
          [0, 1],
          [
            [0, 'a', rec(10, 'old')],
            [1, 'b', rec(5, 'b')],
          ],
        ),
        answer('n2', [0, 1], [[0, 'a', rec(20, 'new')]]),
      ],
      100,
      NOW,
    );
    expect(page.entries.map((e) => [e.key.toString(), e.record?.value.toString()])).toEqual([
      ['a', 'new'],
      ['b', 'b'],
    ]);
    expect(page.next).toBeUndefined();
    expect(page.repairs.map((r) => [r.node, r.key.toString(), r.rec.value.toString()])).toEqual([
      ['n1', 'a', 'new'],
      ['n2', 'b', 'b'],
    ]);
  });

  test('deleted and expired keys are left out; a newer delete is repaired onto a replica still holding the value', () => {
    const page = resolveRangePage(
      [
        answer(
          'n1',
          [0],
          [
            [0, 'a', rec(10, 'live')],
            [0, 'e', rec(10, 'gone', { expiresAt: NOW - 1 })],
            [0, 'f', rec(10, 'lasting', { expiresAt: NOW + 1 })],
          ],
        ),
        answer(
          'n2',
          [0],
          [
            [0, 'a', tomb(11)],
            [0, 'e', rec(10, 'gone', { expiresAt: NOW - 1 })],
            [0, 'f', rec(10, 'lasting', { expiresAt: NOW + 1 })],
          ],
        ),
      ],
      100,
      NOW,
    );
    expect(keysOf(page)).toEqual(['f']);
    expect(page.repairs.map((r) => [r.node, r.key.toString(), r.rec.tombstone])).toEqual([['n1', 'a', true]]);
  });

  test('keys only: a live key seen newer on one replica gets a fetch repair from it to the stale ones; an expired one none', () => {
    const page = resolveRangePage(
      [
        answer(
          'n1',
          [0],
          [
            [0, 'a', rec(20, 'new')],
            [0, 'b', rec(5, 'same')],
            [0, 'x', rec(30, 'gone', { expiresAt: NOW - 1 })],
          ],
          false,
          true,
        ),
        answer(
          'n2',
          [0],
          [
            [0, 'a', rec(10, 'old')],
            [0, 'b', rec(5, 'same')],
            [0, 'x', rec(1, 'older')],
          ],
          false,
          true,
        ),
        answer('n3', [0], [[0, 'b', rec(5, 'same')]], false, true),
      ],
      100,
      NOW,
    );
    expect(page.entries.map((e) => [e.key.toString(), e.version.wall, e.record])).toEqual([
      ['a', 20, undefined],
      ['b', 5, undefined],
    ]);
    expect(page.repairs).toEqual([]);
    // b is alike everywhere: nothing to repair. x expired: its value is not known to write.
    expect(page.fetchRepairs.map((f) => [f.key.toString(), f.version.wall, f.from, f.to])).toEqual([
      ['a', 20, ['n1'], ['n2', 'n3']],
    ]);
  });

  test('an answer that stopped at its limit bounds the page at its last key: nothing past it is listed yet', () => {
    const page = resolveRangePage(
      [
        answer(
          'n1',
          [0],
          [
            [0, 'a', rec(1, 'a')],
            [0, 'c', rec(1, 'c')],
          ],
          true,
        ),
        answer(
          'n2',
          [1],
          [
            [1, 'b', rec(1, 'b')],
            [1, 'd', rec(1, 'd')],
          ],
        ),
      ],
      100,
      NOW,
    );
    expect(keysOf(page)).toEqual(['a', 'b', 'c']);
    expect(page.next).toEqual(k('c'));
  });

  test('at the limit the page ends at its last entry', () => {
    const page = resolveRangePage(
      [
        answer(
          'n1',
          [0],
          [
            [0, 'a', rec(1, 'a')],
            [0, 'b', tomb(2)],
            [0, 'c', rec(1, 'c')],
            [0, 'd', rec(1, 'd')],
          ],
        ),
      ],
      2,
      NOW,
    );
    expect(keysOf(page)).toEqual(['a', 'c']);
    expect(page.next).toEqual(k('c'));
  });

  test('digests only (keys_only): versions without values, and nothing repaired that is not known in full', () => {
    const page = resolveRangePage(
      [
        answer('n1', [0], [[0, 'a', rec(10, 'old')]], false, true),
        answer(
          'n2',
          [0],
          [
            [0, 'a', rec(20, 'new')],
            [0, 'x', tomb(3)],
          ],
          false,
          true,
        ),
      ],
      100,
      NOW,
    );
    expect(page.entries).toEqual([{ key: k('a'), version: rec(20, '').version }]);
    // The tombstone's digest is the whole record: it is repaired; the value of 'a' is not known.
    expect(page.repairs.map((r) => [r.node, r.key.toString()])).toEqual([['n1', 'x']]);
  });

  test('a key is answered only by the replicas asked for its partition', () => {
    const { keys } = mergeRange([
      answer('n1', [0], [[0, 'a', rec(1, 'a')]]),
      answer('n2', [1], [[1, 'b', rec(1, 'b')]]),
      answer('n3', [0, 1], []),
    ]);
    expect(
      keys.map((m) => [m.key.toString(), m.answers.map(([n, a]) => `${n}:${a.rec ? 'has' : 'none'}`)]),
    ).toEqual([
      ['a', ['n1:has', 'n3:none']],
      ['b', ['n2:has', 'n3:none']],
    ]);
  });
});

/**
 * The whole paging loop against simulated replicas: each holds its own (possibly stale) records,
 * answers as Storage.range does (key order, a limit, `more`), and the pages are followed by their
 * `next` key. Whatever the data and the limits, the pages together list each live key exactly once,
 * in order, at the newest version among the replicas asked for its partition.
 */
describe('paging through resolveRangePage', () => {
  const NODES = ['n1', 'n2', 'n3'];
  const PARTITIONS = 4;
  const partitionOf = (key: string): number => key.charCodeAt(0) % PARTITIONS;

  test('every live key exactly once, in byte order, at its newest version', () => {
    const keyArb = fc.stringMatching(/^[a-f]{1,3}$/);
    const recArb = fc.record({
      wall: fc.integer({ min: 1, max: 5 }),
      kind: fc.constantFrom('live', 'live', 'tomb', 'expired'),
    });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(...NODES), keyArb, recArb), { maxLength: 60 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 5 }),
        fc.boolean(),
        (writes, pageLimit, nodeLimit, digest) => {
          const held = new Map<string, Map<string, KvRecord>>(NODES.map((n) => [n, new Map()]));
          // A version names one write: replicas holding the same version of a key hold the same
          // record, so the first kind drawn for a key's version is that version's everywhere.
          const writeOf = new Map<string, KvRecord>();
          for (const [node, key, { wall, kind }] of writes) {
            const id = `${key}@${wall}`;
            let r = writeOf.get(id);
            if (!r) {
              r =
                kind === 'tomb'
                  ? tomb(wall)
                  : rec(wall, `${key}${wall}`, kind === 'expired' ? { expiresAt: NOW - 1 } : {});
              writeOf.set(id, r);
            }
            held.get(node)?.set(key, r);
          }
          // Two of three replicas per partition, fixed for the whole listing.
          const asked = new Map<string, number[]>(NODES.map((n) => [n, []]));
          for (let p = 0; p < PARTITIONS; p++) {
            for (const i of [p % 3, (p + 1) % 3]) asked.get(NODES[i])?.push(p);
          }
          const answerOf = (node: string, after: Buffer | undefined): RangeAnswer => {
            const parts = asked.get(node) ?? [];
            const all = [...(held.get(node) ?? new Map<string, KvRecord>()).entries()]
              .filter(([key]) => parts.includes(partitionOf(key)))
              .filter(([key]) => after === undefined || Buffer.compare(k(key), after) > 0)
              .sort(([a], [b]) => Buffer.compare(k(a), k(b)));
            const items = all.slice(0, nodeLimit);
            return answer(
              node,
              parts,
              items.map(([key, r]) => [partitionOf(key), key, r]),
              all.length > nodeLimit,
              digest,
            );
          };
          const listed: string[] = [];
          let after: Buffer | undefined;
          for (let round = 0; round < 1000; round++) {
            const page = resolveRangePage(
              NODES.map((n) => answerOf(n, after)),
              pageLimit,
              NOW,
            );
            expect(page.entries.length).toBeLessThanOrEqual(pageLimit);
            for (const e of page.entries) {
              listed.push(
                `${e.key.toString()}@${e.version.wall}${digest ? '' : `=${e.record?.value.toString()}`}`,
              );
            }
            if (page.next === undefined) break;
            if (after !== undefined) expect(Buffer.compare(page.next, after)).toBeGreaterThan(0);
            after = page.next;
          }
          const expected: string[] = [];
          const allKeys = [...new Set(writes.map(([, key]) => key))].sort((a, b) =>
            Buffer.compare(k(a), k(b)),
          );
          for (const key of allKeys) {
            let newest: KvRecord | undefined;
            for (const [node, parts] of asked) {
              if (!parts.includes(partitionOf(key))) continue;
              const r = held.get(node)?.get(key);
              if (r && (!newest || r.version.wall > newest.version.wall)) newest = r;
            }
            if (!newest || newest.tombstone || (newest.expiresAt ?? Infinity) <= NOW) continue;
            expected.push(`${key}@${newest.version.wall}${digest ? '' : `=${newest.value.toString()}`}`);
          }
          expect(listed).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
    // 300 runs are a fixed amount of work; the budget is for a machine busy with other suites.
  }, 30_000);
});
