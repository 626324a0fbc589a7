import fc from 'fast-check';
import { CorruptDataError } from './errors';
import {
  decodeRecord,
  decodeRecordHeader,
  encodeRecord,
  isLive,
  newerRecord,
  recordDigest,
  supersedes,
  withoutContentType,
  type KvRecord,
} from './record';

const v = (wall: number, logical = 0, writer = 'g') => ({ wall, logical, writer });

describe('record codec', () => {
  it('has a frozen layout', () => {
    const rec: KvRecord = { version: v(1000, 2, 'g1'), value: Buffer.from('hi'), tombstone: false };
    // format 1 | flags 0 | f64 1000 | u32 2 | writer "g1" | value "hi"
    expect(encodeRecord(rec).toString('hex')).toBe(
      '01' + '00' + '408f400000000000' + '00000002' + '02' + '6731' + '6869',
    );
    const tomb: KvRecord = {
      version: v(1000, 2, 'g1'),
      value: Buffer.alloc(0),
      tombstone: true,
      expiresAt: 2000,
    };
    // flags tombstone|expiry, then f64 2000 for the expiry and no value
    expect(encodeRecord(tomb).toString('hex')).toBe(
      '01' + '03' + '408f400000000000' + '00000002' + '02' + '6731' + '409f400000000000',
    );
  });

  it('holds a content type after the expiry, under flag 4', () => {
    const rec: KvRecord = {
      version: v(1000, 2, 'g1'),
      value: Buffer.from('hi'),
      tombstone: false,
      contentType: 'a/b',
    };
    // flags 4 | ... | u8 3 "a/b" | value "hi"
    expect(encodeRecord(rec).toString('hex')).toBe(
      '01' + '04' + '408f400000000000' + '00000002' + '02' + '6731' + '03' + '612f62' + '6869',
    );
    expect(decodeRecord(encodeRecord(rec)).contentType).toBe('a/b');
    for (const bad of ['', ' leading space', 'caf\u00e9', 'tab\there', 'x'.repeat(256)]) {
      expect(() => encodeRecord({ ...rec, contentType: bad })).toThrow(CorruptDataError);
    }
    // A zero length or an overrun is corrupt, not an empty type.
    const zero = Buffer.from('01' + '04' + '408f400000000000' + '00000002' + '02' + '6731' + '00', 'hex');
    expect(() => decodeRecord(zero)).toThrow(CorruptDataError);
  });

  it('round-trips any record', () => {
    const arbRecord = fc.record(
      {
        version: fc.record({
          wall: fc.integer({ min: 0, max: 2 ** 50 }),
          logical: fc.integer({ min: 0, max: 0xffffffff }),
          writer: fc.stringMatching(/^[\x21-\x7e]{1,64}$/),
        }),
        value: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
        tombstone: fc.boolean(),
        expiresAt: fc.integer({ min: 0, max: 2 ** 50 }),
        contentType: fc.stringMatching(/^[\x21-\x7e][\x20-\x7e]{0,254}$/),
      },
      { requiredKeys: ['version', 'value', 'tombstone'] },
    );
    fc.assert(
      fc.property(arbRecord, (rec) => {
        const encoded = encodeRecord(rec);
        expect(decodeRecord(encoded)).toEqual(rec);
        // The header alone (hash-tree builds) is the record without its value.
        expect(decodeRecordHeader(encoded)).toEqual({ ...rec, value: undefined });
        // The digest is the same record with an empty value, and shares the encoding's bytes.
        const digest = recordDigest(encoded);
        expect(decodeRecord(digest)).toEqual({ ...rec, value: Buffer.alloc(0) });
        expect(digest.buffer).toBe(encoded.buffer);
        expect(encodeRecord({ ...rec, value: Buffer.alloc(0) }).equals(digest)).toBe(true);
        // For a peer that predates content types: the same record without one, nothing else changed.
        const plain: KvRecord = { ...rec };
        delete (plain as { contentType?: string }).contentType;
        expect(withoutContentType(encoded).equals(encodeRecord(plain))).toBe(true);
        if (rec.contentType === undefined) expect(withoutContentType(encoded)).toBe(encoded);
      }),
      { seed: 1, numRuns: 1000 },
    );
  });

  it('reports garbage as CorruptDataError, never as a wrong record', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
        try {
          const rec = decodeRecord(Buffer.from(bytes));
          // whatever decodes must re-encode to the same bytes
          expect(encodeRecord(rec).equals(Buffer.from(bytes))).toBe(true);
        } catch (err) {
          expect(err).toBeInstanceOf(CorruptDataError);
        }
      }),
      { seed: 3, numRuns: 3000 },
    );
  });
});

describe('merge rule', () => {
  const a: KvRecord = { version: v(1), value: Buffer.from('a'), tombstone: false };
  const b: KvRecord = { version: v(2), value: Buffer.alloc(0), tombstone: true };

  it('keeps the higher version, tombstones included', () => {
    expect(newerRecord(a, b)).toBe(b);
    expect(newerRecord(b, a)).toBe(b);
    expect(newerRecord(undefined, a)).toBe(a);
    expect(newerRecord(a, undefined)).toBe(a);
    expect(supersedes(b, a)).toBe(true);
    expect(supersedes(a, b)).toBe(false);
    expect(supersedes(a, a)).toBe(false);
    expect(supersedes(a, undefined)).toBe(true);
  });

  it('is commutative and associative, so replicas converge whatever the delivery order', () => {
    const arb = fc.record({
      version: fc.record({
        wall: fc.integer({ min: 0, max: 4 }),
        logical: fc.integer({ min: 0, max: 2 }),
        writer: fc.constantFrom('x', 'y'),
      }),
      value: fc.constant(Buffer.alloc(0)),
      tombstone: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(arb, { minLength: 1, maxLength: 8 }), (recs) => {
        const forward = recs.reduce<KvRecord | undefined>((acc, r) => newerRecord(acc, r), undefined);
        const backward = [...recs]
          .reverse()
          .reduce<KvRecord | undefined>((acc, r) => newerRecord(acc, r), undefined);
        expect(forward?.version).toEqual(backward?.version);
      }),
      { seed: 5, numRuns: 1000 },
    );
  });

  it('treats tombstones and expired records as absent for readers', () => {
    expect(isLive(a, 0)).toBe(true);
    expect(isLive(b, 0)).toBe(false);
    expect(isLive(undefined, 0)).toBe(false);
    expect(isLive({ ...a, expiresAt: 100 }, 99)).toBe(true);
    expect(isLive({ ...a, expiresAt: 100 }, 100)).toBe(false);
  });
});
