import fc from 'fast-check';
import { putRecord, rounds } from './batch-runner';

const k = (s: string): { key: Buffer } => ({ key: Buffer.from(s) });

describe('rounds', () => {
  it('puts the n-th operation on each key in round n, keeping the order given within a round', () => {
    expect(rounds([k('a'), k('b'), k('a'), k('c'), k('a'), k('b')])).toEqual([[0, 1, 3], [2, 5], [4]]);
    expect(rounds([])).toEqual([]);
  });

  it('for any batch: every operation in exactly one round, no key twice in a round, per-key order kept', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'é'), { maxLength: 60 }), (names) => {
        const items = names.map(k);
        const rs = rounds(items);
        expect(rs.flat().sort((x, y) => x - y)).toEqual(names.map((_, i) => i));
        for (const r of rs) expect(new Set(r.map((i) => names[i])).size).toBe(r.length);
        // The operations on one key, read round by round, are in the order given.
        for (const name of new Set(names)) {
          const byRound = rs.flatMap((r) => r.filter((i) => names[i] === name));
          expect(byRound).toEqual(names.flatMap((n, i) => (n === name ? [i] : [])));
        }
      }),
    );
  });
});

describe('putRecord', () => {
  it('sets the expiry from the ttl against the version, and the content type when given', () => {
    const version = { wall: 1000, logical: 0, writer: 'g' };
    expect(putRecord(version, Buffer.from('v'), { ttlSeconds: 5, contentType: 'text/csv' })).toEqual({
      version,
      value: Buffer.from('v'),
      tombstone: false,
      expiresAt: 6000,
      contentType: 'text/csv',
    });
    expect(putRecord(version, Buffer.from('v'), {})).toEqual({
      version,
      value: Buffer.from('v'),
      tombstone: false,
    });
  });
});
