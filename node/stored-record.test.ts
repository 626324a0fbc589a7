import fc from 'fast-check';
import { CorruptDataError } from '../common/errors';
import { encodeRecord, recordDigest, type KvRecord } from '../common/record';
import {
  decodeStoredHeader,
  decodeStoredRecord,
  encodeStoredRecord,
  storedDigest,
  contentTypeName,
  storedToWire,
  type WriterNames,
} from './stored-record';

/**
 * A fixed numbering (the real one is node/writer-ids.ts, on disk): writer n is `w${n}`, and from
 * TYPES on, n is the content type `type/${n}` (interned after a space, as contentTypeName does).
 */
const TYPES = 2 ** 31;
const nameOf = (id: number): string | undefined =>
  id >= TYPES ? contentTypeName(`type/${id}`) : id >= 1 ? `w${id}` : undefined;
const names: WriterNames = {
  nameOf,
  bytesOf: (id) => {
    const name = nameOf(id);
    return name === undefined ? undefined : Buffer.from(name);
  },
};

function stored(rec: KvRecord, writerId: number, typeId?: number): Buffer {
  const out = encodeStoredRecord(rec, writerId, rec.value, typeId);
  if (!out) throw new Error('expected the compact form');
  return out;
}

const arbRecord = (walls: fc.Arbitrary<number>) =>
  fc
    .record(
      {
        wall: walls,
        logical: fc.integer({ min: 0, max: 0xffffffff }),
        writerId: fc.integer({ min: 1, max: TYPES - 1 }),
        typeId: fc.integer({ min: TYPES, max: 0xffffffff }),
        value: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
        tombstone: fc.boolean(),
        expiresAt: walls,
      },
      { requiredKeys: ['wall', 'logical', 'writerId', 'value', 'tombstone'] },
    )
    .map(({ wall, logical, writerId, typeId, value, tombstone, expiresAt }) => {
      const rec: KvRecord = {
        version: { wall, logical, writer: `w${writerId}` },
        value: tombstone ? Buffer.alloc(0) : value,
        tombstone,
        ...(expiresAt === undefined ? {} : { expiresAt }),
        ...(typeId === undefined ? {} : { contentType: `type/${typeId}` }),
      };
      return { rec, writerId, typeId };
    });

describe('stored record codec', () => {
  it('has a frozen layout: 9 header bytes where the wire spends 23', () => {
    const rec: KvRecord = {
      version: { wall: 1000, logical: 2, writer: 'w5' },
      value: Buffer.from('hi'),
      tombstone: false,
    };
    // 0x20 | flags 0 | u48 1000 | varint 2 | varint 5 | value "hi"
    expect(stored(rec, 5).toString('hex')).toBe('20' + '0000000003e8' + '02' + '05' + '6869');
    const tomb: KvRecord = {
      version: { wall: 1000, logical: 300, writer: 'w200' },
      value: Buffer.alloc(0),
      tombstone: true,
      expiresAt: 2000,
    };
    // flags tombstone|expiry, varints of two bytes, u48 expiry, no value
    expect(stored(tomb, 200).toString('hex')).toBe('23' + '0000000003e8' + 'ac02' + 'c801' + '0000000007d0');
    const gateway: KvRecord = {
      version: { wall: Date.now(), logical: 0, writer: 'gw-local' },
      value: Buffer.alloc(100),
      tombstone: false,
    };
    expect(stored(gateway, 1).length).toBe(109);
    expect(encodeRecord(gateway).length).toBe(123);
    // A content type costs its number (one byte for the first 127 a node sees), where the wire spells it out.
    const typed: KvRecord = { ...gateway, contentType: 'application/json' };
    expect(stored(typed, 1, 3).length).toBe(110);
    expect(stored(typed, 1, 3).toString('hex', 0, 1)).toBe('24');
    expect(encodeRecord(typed).length).toBe(123 + 1 + 'application/json'.length);
    // The number names a content type, not a writer: a writer's name there is corrupt data.
    const wrong = stored({ ...gateway, contentType: 'w1' }, 1, 1);
    expect(() => decodeStoredRecord(wrong, names)).toThrow(/unknown content type number 1/);
    // A header says it has a content type exactly when it is given one's number.
    expect(() => encodeStoredRecord(typed, 1, typed.value)).toThrow(CorruptDataError);
    expect(() => encodeStoredRecord(gateway, 1, gateway.value, 3)).toThrow(CorruptDataError);
  });

  it('converts any record to its wire form, digest and value exactly', () => {
    fc.assert(
      fc.property(arbRecord(fc.integer({ min: 0, max: 2 ** 48 - 1 })), ({ rec, writerId, typeId }) => {
        const b = stored(rec, writerId, typeId);
        const wire = encodeRecord(rec);
        expect(storedToWire(b, names).equals(wire)).toBe(true);
        expect(storedDigest(b, names).equals(recordDigest(wire))).toBe(true);
        expect(decodeStoredRecord(b, names)).toEqual(rec);
        const header = decodeStoredHeader(b, names);
        expect({ ...header, value: rec.value }).toEqual(rec);
        expect('value' in header).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('leaves a record whose times are not whole milliseconds below 2^48 to the wire form, which it reads as well', () => {
    const odd = fc.oneof(
      fc.integer({ min: 2 ** 48, max: 10 ** 16 }),
      fc.double({ min: 0, max: 2 ** 40, noNaN: true }).filter((d) => !Number.isInteger(d)),
    );
    fc.assert(
      fc.property(arbRecord(odd), ({ rec, writerId, typeId }) => {
        expect(encodeStoredRecord(rec, writerId, rec.value, typeId)).toBeUndefined();
        // Storage keeps the wire bytes then (and records written before the compact form existed).
        const wire = encodeRecord(rec);
        expect(storedToWire(wire, names).equals(wire)).toBe(true);
        expect(storedDigest(wire, names).equals(recordDigest(wire))).toBe(true);
        expect(decodeStoredRecord(wire, names)).toEqual(rec);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses corrupt bytes and unknown writer numbers with a typed error', () => {
    const good = stored(
      { version: { wall: 5, logical: 1, writer: 'w1' }, value: Buffer.from('v'), tombstone: false },
      1,
    );
    const bad: Buffer[] = [
      Buffer.alloc(0),
      Buffer.from([0x99]),
      Buffer.from([0x28, ...good.subarray(1)]), // unknown flag
      Buffer.from([0x24, ...good.subarray(1, 9)]), // content type flag, its number runs off the end
      good.subarray(0, 8), // too short
      Buffer.from('20000000000005ffffffffff01', 'hex'), // logical varint of six bytes
      Buffer.from('200000000000058080808010' + '01', 'hex'), // logical above 32 bits
      Buffer.from('2000000000000501ff', 'hex'), // writer varint runs off the end
      Buffer.from('22000000000005010100', 'hex'), // expiry cut short
    ];
    for (const b of bad) expect(() => storedToWire(b, names)).toThrow(CorruptDataError);
    const unknownWriter = stored(
      { version: { wall: 5, logical: 0, writer: 'x' }, value: Buffer.alloc(0), tombstone: false },
      1,
    );
    expect(() =>
      decodeStoredHeader(unknownWriter, { nameOf: () => undefined, bytesOf: () => undefined }),
    ).toThrow(/unknown writer number 1/);
  });
});
