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
 *   u8 (0x20 | flags) | u48 wall ms | varint logical | varint writer number | [u48 expiresAt ms] |
 *   [varint content type number] | value
 * where the writer and content type numbers are this node's own interning of the writer id and the
 * content type (WriterNames; a content type is interned as its text after a space, which no writer id
 * holds, so one table numbers both). Flags: 1 tombstone, 2 expiry, 4 content type. The value
 * bytes are the wire record's, so a record converts between the two without parsing the value.
 * A record whose times are not whole milliseconds in u48 range is stored in its wire format
 * unchanged, and records written before this format existed are read as they are: both formats
 * are read everywhere, so nothing is rewritten on upgrade.
 */
const FORMAT_COMPACT = 0x20;
const FORMAT_MASK = 0xf0;
const FLAG_TOMBSTONE = 1;
const FLAG_EXPIRY = 2;
const FLAG_CONTENT_TYPE = 4;
const FORMAT_WIRE = 1;

/** A content type's name in the node's table of numbered names: no writer id starts with a space. */
export function contentTypeName(type: string): string {
  return ` ${type}`;
}
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
 * The on-disk form of a record given as its header and value, with `writerId` the writer's number
 * and `typeId` its content type's (when it has one); undefined when the compact form cannot hold its
 * times (the wire form is stored then).
 */
export function encodeStoredRecord(
  header: RecordHeader,
  writerId: number,
  value: Uint8Array,
  typeId?: number,
): Buffer | undefined {
  const { wall, logical } = header.version;
  const hasExpiry = header.expiresAt !== undefined;
  if (!isU48(wall) || (hasExpiry && !isU48(header.expiresAt as number))) return undefined;
  checkNumber(writerId, 'writer');
  const hasType = header.contentType !== undefined;
  if (hasType !== (typeId !== undefined)) {
    throw new CorruptDataError(
      'a stored record has a content type number exactly when it has a content type',
    );
  }
  if (hasType) checkNumber(typeId as number, 'content type');
  const size =
    1 +
    6 +
    varintSize(logical) +
    varintSize(writerId) +
    (hasExpiry ? 6 : 0) +
    (hasType ? varintSize(typeId as number) : 0) +
    value.length;
  const out = Buffer.allocUnsafe(size);
  out[0] =
    FORMAT_COMPACT |
    (header.tombstone ? FLAG_TOMBSTONE : 0) |
    (hasExpiry ? FLAG_EXPIRY : 0) |
    (hasType ? FLAG_CONTENT_TYPE : 0);
  out.writeUIntBE(wall, 1, 6);
  let o = writeVarint(out, 7, logical);
  o = writeVarint(out, o, writerId);
  if (hasExpiry) {
    out.writeUIntBE(header.expiresAt as number, o, 6);
    o += 6;
  }
  if (hasType) o = writeVarint(out, o, typeId as number);
  out.set(value, o);
  return out;
}

function checkNumber(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new CorruptDataError(`${what} number ${n} cannot be stored`);
  }
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
  if (flags & ~(FLAG_TOMBSTONE | FLAG_EXPIRY | FLAG_CONTENT_TYPE))
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
  let expiresAt: number | undefined;
  if (flags & FLAG_EXPIRY) {
    if (o + 6 > buf.length) throw new CorruptDataError('stored record header overruns its buffer');
    expiresAt = buf.readUIntBE(o, 6);
    o += 6;
  }
  let contentType: string | undefined;
  if (flags & FLAG_CONTENT_TYPE) {
    const typeId = readVarint(buf, o);
    o = typeId.o;
    const name = names.nameOf(typeId.n);
    if (name === undefined || !name.startsWith(' '))
      throw new CorruptDataError(`stored record names unknown content type number ${typeId.n}`);
    contentType = name.slice(1);
  }
  const header: RecordHeader = {
    version,
    tombstone,
    ...(expiresAt === undefined ? {} : { expiresAt }),
    ...(contentType === undefined ? {} : { contentType }),
  };
  return { header, valueOffset: o, writerId: writerId.n };
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
