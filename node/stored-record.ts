import { CorruptDataError } from '../common/errors';
import {
  decodeRecordLayout,
  encodeRecordFrom,
  recordDigest,
  type KvRecord,
  type RecordHeader,
} from '../common/record';

/*
 * How a record sits on the node's disk. The wire format (common/record.ts, format 1) spends 23 B
 * of header on a 100 B value: an f64 wall clock, a u32 logical counter and the writer id spelled
 * out (a gateway pod name in Kubernetes: ~30 B). On disk the same header is 9 B:
 *   u8 (0x20 | flags) | u48 wall ms | varint logical | varint writer number | [u48 expiresAt ms] | value
 * where the writer number is this node's own interning of the writer id (WriterNames). The value
 * bytes are the wire record's, so a record converts between the two without parsing the value.
 * A record whose times are not whole milliseconds in u48 range is stored in its wire format
 * unchanged, and records written before this format existed are read as they are: both formats
 * are read everywhere, so nothing is rewritten on upgrade.
 */
const FORMAT_COMPACT = 0x20;
const FORMAT_MASK = 0xf0;
const FLAG_TOMBSTONE = 1;
const FLAG_EXPIRY = 2;
const FORMAT_WIRE = 1;
const MAX_U48 = 2 ** 48;

/** The node's table of writer numbers (node/writer-ids.ts): numbers to writer ids, as text and as bytes. */
export interface WriterNames {
  nameOf(id: number): string | undefined;
  bytesOf(id: number): Buffer | undefined;
}

function isU48(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n < MAX_U48;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

function writeVarint(out: Buffer, o: number, n: number): number {
  while (n >= 0x80) {
    out[o++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[o++] = n;
  return o;
}

/** A u32 as LEB128 (at most 5 bytes); throws on overrun or a larger number. */
function readVarint(b: Buffer, o: number): { n: number; o: number } {
  let n = 0;
  let scale = 1;
  for (let i = 0; i < 5; i++) {
    if (o >= b.length) throw new CorruptDataError('stored record header overruns its buffer');
    const byte = b[o++];
    n += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) {
      if (n > 0xffffffff) throw new CorruptDataError(`stored record number ${n} exceeds 32 bits`);
      return { n, o };
    }
    scale *= 0x80;
  }
  throw new CorruptDataError('stored record number is longer than 5 bytes');
}

/**
 * The on-disk form of a record given as its header and value, with `writerId` the writer's number;
 * undefined when the compact form cannot hold its times (the wire form is stored then).
 */
export function encodeStoredRecord(
  header: RecordHeader,
  writerId: number,
  value: Uint8Array,
): Buffer | undefined {
  const { wall, logical } = header.version;
  const hasExpiry = header.expiresAt !== undefined;
  if (!isU48(wall) || (hasExpiry && !isU48(header.expiresAt as number))) return undefined;
  if (!Number.isInteger(writerId) || writerId < 0 || writerId > 0xffffffff) {
    throw new CorruptDataError(`writer number ${writerId} cannot be stored`);
  }
  const size = 1 + 6 + varintSize(logical) + varintSize(writerId) + (hasExpiry ? 6 : 0) + value.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = FORMAT_COMPACT | (header.tombstone ? FLAG_TOMBSTONE : 0) | (hasExpiry ? FLAG_EXPIRY : 0);
  out.writeUIntBE(wall, 1, 6);
  let o = writeVarint(out, 7, logical);
  o = writeVarint(out, o, writerId);
  if (hasExpiry) {
    out.writeUIntBE(header.expiresAt as number, o, 6);
    o += 6;
  }
  out.set(value, o);
  return out;
}

/**
 * The header of a stored record (either format), where its value starts and, in the compact form,
 * its writer's number; copies nothing.
 */
export function decodeStoredLayout(
  buf: Buffer,
  names: WriterNames,
): { header: RecordHeader; valueOffset: number; writerId?: number } {
  if (buf.length === 0) throw new CorruptDataError('stored record is empty');
  if (buf[0] === FORMAT_WIRE) return decodeRecordLayout(buf);
  if ((buf[0] & FORMAT_MASK) !== FORMAT_COMPACT)
    throw new CorruptDataError(`unknown stored record format ${buf[0]}`);
  const flags = buf[0] & ~FORMAT_MASK;
  if (flags & ~(FLAG_TOMBSTONE | FLAG_EXPIRY))
    throw new CorruptDataError(`unknown stored record flags ${flags}`);
  if (buf.length < 9) throw new CorruptDataError(`stored record of ${buf.length} bytes is too short`);
  const wall = buf.readUIntBE(1, 6);
  const logical = readVarint(buf, 7);
  const writerId = readVarint(buf, logical.o);
  let o = writerId.o;
  const writer = names.nameOf(writerId.n);
  if (writer === undefined)
    throw new CorruptDataError(`stored record names unknown writer number ${writerId.n}`);
  const version = { wall, logical: logical.n, writer };
  const tombstone = (flags & FLAG_TOMBSTONE) !== 0;
  if ((flags & FLAG_EXPIRY) === 0)
    return { header: { version, tombstone }, valueOffset: o, writerId: writerId.n };
  if (o + 6 > buf.length) throw new CorruptDataError('stored record header overruns its buffer');
  const expiresAt = buf.readUIntBE(o, 6);
  o += 6;
  return { header: { version, tombstone, expiresAt }, valueOffset: o, writerId: writerId.n };
}

export function decodeStoredHeader(buf: Buffer, names: WriterNames): RecordHeader {
  return decodeStoredLayout(buf, names).header;
}

/*
 * Copies below go through views (subarray): lmdb-js's read buffer reports the value's `length`
 * over a larger, reused memory, and a native copy of the whole buffer would take all of it.
 */

/** The record in its wire format, in a buffer of its own (what is sent and what is kept). */
export function storedToWire(buf: Buffer, names: WriterNames): Buffer {
  if (buf[0] === FORMAT_WIRE) {
    decodeRecordLayout(buf);
    return Buffer.from(buf.subarray(0, buf.length));
  }
  const { header, valueOffset, writerId } = decodeStoredLayout(buf, names);
  return encodeRecordFrom(header, writerBytes(names, writerId), buf, valueOffset, buf.length);
}

/** The wire digest of a stored record: its wire encoding with an empty value (common/record.ts recordDigest). */
export function storedDigest(buf: Buffer, names: WriterNames): Buffer {
  if (buf[0] === FORMAT_WIRE) return Buffer.from(recordDigest(buf));
  const { header, writerId } = decodeStoredLayout(buf, names);
  return encodeRecordFrom(header, writerBytes(names, writerId), buf, 0, 0);
}

/** The record itself, its value copied out of `buf`. */
export function decodeStoredRecord(buf: Buffer, names: WriterNames): KvRecord {
  const { header, valueOffset } = decodeStoredLayout(buf, names);
  return { ...header, value: Buffer.from(buf.subarray(valueOffset, buf.length)) };
}

function writerBytes(names: WriterNames, id: number | undefined): Buffer {
  const bytes = id === undefined ? undefined : names.bytesOf(id);
  if (!bytes) throw new CorruptDataError(`stored record names unknown writer number ${id}`);
  return bytes;
}
