import fc from 'fast-check';
import { compareVersions, type Version } from '../common/hlc';
import type { KvRecord } from '../common/record';
import { resolveRead, staleReplicas, type ReadAnswer } from './read-resolution';

const v = (wall: number, logical = 0, writer = 'g'): Version => ({ wall, logical, writer });
const live = (version: Version, value = 'x'): KvRecord => ({
  version,
  value: Buffer.from(value),
  tombstone: false,
});
const tomb = (version: Version): KvRecord => ({ version, value: Buffer.alloc(0), tombstone: true });
/** what a replica asked for a digest answers: the record with an empty value */
const digestOf = (rec: KvRecord): KvRecord => ({ ...rec, value: Buffer.alloc(0) });

const NOW = 1_000_000;
const full = (rec: KvRecord | undefined): ReadAnswer => ({ rec, digest: false });
const digest = (rec: KvRecord | undefined): ReadAnswer => ({ rec: rec && digestOf(rec), digest: true });

describe('resolveRead', () => {
  it('answers the full record when the full read is the newest', () => {
    const newest = live(v(2), 'new');
    expect(
      resolveRead(
        [
          ['a', full(newest)],
          ['b', digest(live(v(1), 'old'))],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'value', record: newest });
  });

  it('answers absent when no replica holds the key', () => {
    expect(
      resolveRead(
        [
          ['a', full(undefined)],
          ['b', digest(undefined)],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'value', record: undefined });
  });

  it('fetches the value from every replica whose digest is the newest, when none sent it', () => {
    const newest = live(v(5), 'new');
    expect(
      resolveRead(
        [
          ['a', full(live(v(1), 'old'))],
          ['b', digest(newest)],
          ['c', digest(newest)],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'fetch', version: v(5), from: ['b', 'c'] });
    // The full replica holding nothing changes nothing: the value is still elsewhere.
    expect(
      resolveRead(
        [
          ['a', full(undefined)],
          ['b', digest(newest)],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'fetch', version: v(5), from: ['b'] });
  });

  it('takes a tombstone from its digest: the digest is the whole tombstone', () => {
    const deleted = tomb(v(3));
    expect(
      resolveRead(
        [
          ['a', full(live(v(1)))],
          ['b', digest(deleted)],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'value', record: deleted });
  });

  it('answers an expired record known only by digest as expired, without fetching its value', () => {
    const expired: KvRecord = { ...live(v(5), 'gone'), expiresAt: NOW };
    const later: KvRecord = { ...live(v(5), 'still'), expiresAt: NOW + 1 };
    const answers = (rec: KvRecord): Array<[string, ReadAnswer]> => [
      ['a', full(live(v(1), 'old'))],
      ['b', digest(rec)],
    ];
    expect(resolveRead(answers(expired), NOW)).toEqual({ kind: 'expired', version: v(5) });
    expect(resolveRead(answers(later), NOW)).toEqual({ kind: 'fetch', version: v(5), from: ['b'] });
    // Sent in full, it is the answer as it is (the caller reads it as absent, and can repair with it).
    expect(resolveRead([['a', full(expired)]], NOW)).toEqual({ kind: 'value', record: expired });
  });

  it('keeps the content type of a write that a replica of an older release stored without it', () => {
    const untyped = live(v(2), 'new');
    const typed: KvRecord = { ...untyped, contentType: 'application/json' };
    // The value from the old replica, the type from a digest of the same version.
    expect(
      resolveRead(
        [
          ['old', full(untyped)],
          ['new', digest(typed)],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'value', record: typed });
    // An older version's type is not the newest write's.
    expect(
      resolveRead(
        [
          ['old', full(untyped)],
          ['new', digest({ ...typed, version: v(1) })],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'value', record: untyped });
  });

  it('breaks version ties by writer, as the merge rule does', () => {
    const fromG2 = live(v(7, 0, 'g2'), 'two');
    expect(
      resolveRead(
        [
          ['a', full(live(v(7, 0, 'g1'), 'one'))],
          ['b', digest(fromG2)],
        ],
        NOW,
      ),
    ).toEqual({ kind: 'fetch', version: fromG2.version, from: ['b'] });
  });

  it('whatever the answers, the winner has the newest version, and a value only when one was sent', () => {
    const arbRec = fc.option(
      fc.record({
        version: fc.record({
          wall: fc.integer({ min: 0, max: 5 }),
          logical: fc.integer({ min: 0, max: 2 }),
          writer: fc.constantFrom('g1', 'g2'),
        }),
        value: fc.constantFrom('a', 'b').map((s) => Buffer.from(s)),
        tombstone: fc.boolean(),
      }),
      { nil: undefined },
    );
    const arbAnswers = fc.array(fc.tuple(arbRec, fc.boolean()), { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(arbAnswers, (raw) => {
        // A tombstone's value is always empty, whoever sends it; the expiry is part of the write,
        // so it follows from the version: none, past or future.
        const answers = raw.map(([rec, asDigest], i): [string, ReadAnswer] => {
          const expiry = rec && [undefined, NOW, NOW + 1][rec.version.wall % 3];
          const withExpiry = rec && (expiry === undefined ? rec : { ...rec, expiresAt: expiry });
          const r =
            withExpiry && withExpiry.tombstone ? { ...withExpiry, value: Buffer.alloc(0) } : withExpiry;
          return [`n${i}`, asDigest ? digest(r) : full(r)];
        });
        const versions = answers.flatMap(([, a]) => (a.rec ? [a.rec.version] : []));
        const newest = versions.sort(compareVersions).at(-1);
        const r = resolveRead(answers, NOW);
        if (!newest) {
          expect(r).toEqual({ kind: 'value', record: undefined });
          return;
        }
        if (r.kind === 'value') {
          expect(r.record && compareVersions(r.record.version, newest)).toBe(0);
          // Its value is one a replica really sent in full (or a tombstone's, which is empty).
          const sent = answers.some(([, a]) => a.rec === r.record && (!a.digest || a.rec?.tombstone));
          expect(sent).toBe(true);
        } else {
          expect(compareVersions(r.version, newest)).toBe(0);
          const holders = answers.filter(([, a]) => a.rec && compareVersions(a.rec.version, newest) === 0);
          // Known by digests only, and no tombstone.
          expect(holders.every(([, a]) => a.digest && !a.rec?.tombstone)).toBe(true);
          const expiresAt = holders[0][1].rec?.expiresAt;
          if (r.kind === 'expired') {
            expect(expiresAt !== undefined && expiresAt <= NOW).toBe(true);
            return;
          }
          expect(expiresAt === undefined || expiresAt > NOW).toBe(true);
          expect(r.from.length).toBeGreaterThan(0);
          for (const node of r.from) {
            const a = answers.find(([n]) => n === node)?.[1];
            expect(a?.digest).toBe(true);
            expect(a?.rec && compareVersions(a.rec.version, newest)).toBe(0);
          }
        }
      }),
      { seed: 7, numRuns: 2000 },
    );
  });
});

describe('staleReplicas', () => {
  it('names replicas with nothing or an older version, never an equal or newer one', () => {
    const winner = live(v(5));
    expect(
      staleReplicas(
        [
          ['none', full(undefined)],
          ['older', digest(live(v(4)))],
          ['same', digest(winner)],
          ['newer', digest(live(v(6)))],
          ['older-full', full(tomb(v(1)))],
        ],
        winner.version,
      ),
    ).toEqual(['none', 'older', 'older-full']);
  });
});
