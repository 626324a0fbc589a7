import { CorruptDataError } from './errors';
import { compareVersions, MAX_WRITER_ID_BYTES, type Version } from './hlc';

/**
 * A stored value with its version. A delete is a tombstone record (empty value)
 * that wins like any write; an expired record reads as absent but keeps its
 * version so an older write cannot resurrect the key.
 */
export interface KvRecord {
  readonly version: Version;
  readonly value: Buffer;
  readonly tombstone: boolean;
  /** Milliseconds since the epoch after which the record reads as absent. */
  readonly expiresAt?: number;
  /**
   * The Content-Type the value was written with (absent: application/octet-stream). Part of the
   * write, so it travels, is stored and is repaired with the record; not part of its version.
   */
  readonly contentType?: string;
}

/** Merge rule used everywhere: the higher version wins; equal versions are the same write. */
export function newerRecord(a: KvRecord | undefined, b: KvRecord | undefined): KvRecord | undefined {
  if (!a) return b;
  if (!b) return a;
  return compareVersions(a.version, b.version) >= 0 ? a : b;
}

/** True when `candidate` must replace `current` under the merge rule. */
export function supersedes(candidate: RecordHeader, current: RecordHeader | undefined): boolean {
  return !current || compareVersions(candidate.version, current.version) > 0;
}

/** What a reader sees: absent for tombstones and records past their expiry. */
export function isLive(rec: KvRecord | undefined, nowMs: number): rec is KvRecord {
  return !!rec && !rec.tombstone && (rec.expiresAt === undefined || rec.expiresAt > nowMs);
}

/*
 * On-disk and on-wire layout, frozen by tests (format byte 1):
 *   u8 format | u8 flags (1 tombstone, 2 expiry, 4 content type) | f64 wall | u32 logical |
 *   u8 writerLen | writer bytes | [f64 expiresAt] | [u8 typeLen | type bytes] | value bytes
 * Fixed binary instead of a generic serializer: it is stable across library
 * versions and costs one copy of the value. Flag 4 came later: a node from before it refuses
 * such a record, so a record goes to a peer that has not said it reads flag 4 without its
 * content type (withoutContentType; common/record-format.ts says who reads what).
 */
const FORMAT_V1 = 1;
const FLAG_TOMBSTONE = 1;
const FLAG_EXPIRY = 2;
const FLAG_CONTENT_TYPE = 4;
const KNOWN_FLAGS = FLAG_TOMBSTONE | FLAG_EXPIRY | FLAG_CONTENT_TYPE;

/** A content type as a record holds it: 1-255 bytes of visible ASCII and spaces (RFC 9110 field value). */
export const MAX_CONTENT_TYPE_BYTES = 255;

export function isValidContentType(type: string): boolean {
  return type.length > 0 && type.length <= MAX_CONTENT_TYPE_BYTES && /^[\x21-\x7e][\x20-\x7e]*$/.test(type);
}

export function encodeRecord(rec: KvRecord): Buffer {
  return encodeRecordFrom(rec, Buffer.from(rec.version.writer, 'utf8'), rec.value, 0, rec.value.length);
}

/**
 * encodeRecord for a header whose writer id is already bytes and a value that is bytes
 * [valueStart, valueEnd) of `src`: what a node sends of a record it stores in another form,
 * without building the value or the writer id first.
 */
export function encodeRecordFrom(
  header: RecordHeader,
  writer: Buffer,
  src: Buffer,
  valueStart: number,
  valueEnd: number,
): Buffer {
  if (writer.length === 0 || writer.length > MAX_WRITER_ID_BYTES) {
    throw new CorruptDataError(`writer id of ${writer.length} bytes cannot be encoded`);
  }
  const hasExpiry = header.expiresAt !== undefined;
  const type = header.contentType;
  if (type !== undefined && !isValidContentType(type)) {
    throw new CorruptDataError(`content type ${JSON.stringify(type)} cannot be encoded`);
  }
  const size =
    1 + 1 + 8 + 4 + 1 + writer.length + (hasExpiry ? 8 : 0) + (type === undefined ? 0 : 1 + type.length);
  const out = Buffer.allocUnsafe(size + valueEnd - valueStart);
  let o = 0;
  out[o++] = FORMAT_V1;
  out[o++] =
    (header.tombstone ? FLAG_TOMBSTONE : 0) |
    (hasExpiry ? FLAG_EXPIRY : 0) |
    (type === undefined ? 0 : FLAG_CONTENT_TYPE);
  out.writeDoubleBE(header.version.wall, o);
  o += 8;
  out.writeUInt32BE(header.version.logical, o);
  o += 4;
  out[o++] = writer.length;
  o += writer.copy(out, o);
  if (hasExpiry) {
    out.writeDoubleBE(header.expiresAt as number, o);
    o += 8;
  }
  if (type !== undefined) {
    out[o++] = type.length;
    o += out.write(type, o, 'latin1');
  }
  // Through a view: lmdb-js read buffers report a `length` shorter than the memory behind them,
  // and a native copy of the whole buffer (Buffer#copy from 0 to its length) takes all of it.
  out.set(src.subarray(valueStart, valueEnd), o);
  return out;
}

/** A record without its value: what hash trees and purge decisions read. */
export type RecordHeader = Omit<KvRecord, 'value'>;

function decodeHeader(buf: Uint8Array): {
  header: RecordHeader;
  b: Buffer;
  valueOffset: number;
  /** where the content type field starts (its length byte), when the record has one */
  typeOffset?: number;
} {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 15) throw new CorruptDataError(`record of ${b.length} bytes is too short`);
  if (b[0] !== FORMAT_V1) throw new CorruptDataError(`unknown record format ${b[0]}`);
  const flags = b[1];
  if (flags & ~KNOWN_FLAGS) throw new CorruptDataError(`unknown record flags ${flags}`);
  let o = 2;
  const wall = b.readDoubleBE(o);
  o += 8;
  const logical = b.readUInt32BE(o);
  o += 4;
  const wlen = b[o++];
  const hasExpiry = (flags & FLAG_EXPIRY) !== 0;
  if (wlen === 0 || o + wlen + (hasExpiry ? 8 : 0) > b.length) {
    throw new CorruptDataError('record header overruns its buffer');
  }
  const writer = b.toString('utf8', o, o + wlen);
  o += wlen;
  const version = { wall, logical, writer };
  const tombstone = (flags & FLAG_TOMBSTONE) !== 0;
  let expiresAt: number | undefined;
  if (hasExpiry) {
    expiresAt = b.readDoubleBE(o);
    o += 8;
  }
  let contentType: string | undefined;
  let typeOffset: number | undefined;
  if (flags & FLAG_CONTENT_TYPE) {
    typeOffset = o;
    const tlen = o < b.length ? b[o] : 0;
    if (tlen === 0 || o + 1 + tlen > b.length)
      throw new CorruptDataError('record content type overruns its buffer');
    contentType = b.toString('latin1', o + 1, o + 1 + tlen);
    if (!isValidContentType(contentType)) throw new CorruptDataError('record content type is malformed');
    o += 1 + tlen;
  }
  const header: RecordHeader = {
    version,
    tombstone,
    ...(expiresAt === undefined ? {} : { expiresAt }),
    ...(contentType === undefined ? {} : { contentType }),
  };
  return typeOffset === undefined ? { header, b, valueOffset: o } : { header, b, valueOffset: o, typeOffset };
}

export function decodeRecord(buf: Uint8Array): KvRecord {
  const { header, b, valueOffset } = decodeHeader(buf);
  // Copy: LMDB and socket buffers are reused after this call returns.
  return { ...header, value: Buffer.from(b.subarray(valueOffset)) };
}

/**
 * The same record without its content type, for a peer that predates flag 4 (it would refuse the
 * record): the buffer itself when it has none.
 */
export function withoutContentType(buf: Buffer): Buffer {
  const { b, typeOffset, valueOffset } = decodeHeader(buf);
  if (typeOffset === undefined) return buf;
  const out = Buffer.allocUnsafe(b.length - (valueOffset - typeOffset));
  out.set(b.subarray(0, typeOffset), 0);
  out[1] = b[1] & ~FLAG_CONTENT_TYPE;
  out.set(b.subarray(valueOffset), typeOffset);
  return out;
}

/**
 * The record's header alone, as the encoding of the same record with an empty value (a view, no
 * copy): what a digest read answers. A tombstone's digest is the whole tombstone.
 */
export function recordDigest(buf: Uint8Array): Buffer {
  const { b, valueOffset } = decodeHeader(buf);
  return b.subarray(0, valueOffset);
}

/** The record's version, tombstone flag and expiry, without copying its value (building hash trees). */
export function decodeRecordHeader(buf: Uint8Array): RecordHeader {
  return decodeHeader(buf).header;
}

/** The header and where the value starts, without copying anything (re-encoding for disk). */
export function decodeRecordLayout(buf: Uint8Array): { header: RecordHeader; valueOffset: number } {
  const { header, valueOffset } = decodeHeader(buf);
  return { header, valueOffset };
}
