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
 *   u8 format | u8 flags (1 tombstone, 2 expiry) | f64 wall | u32 logical |
 *   u8 writerLen | writer bytes | [f64 expiresAt] | value bytes
 * Fixed binary instead of a generic serializer: it is stable across library
 * versions and costs one copy of the value.
 */
const FORMAT_V1 = 1;
const FLAG_TOMBSTONE = 1;
const FLAG_EXPIRY = 2;

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
  const size = 1 + 1 + 8 + 4 + 1 + writer.length + (hasExpiry ? 8 : 0);
  const out = Buffer.allocUnsafe(size + valueEnd - valueStart);
  let o = 0;
  out[o++] = FORMAT_V1;
  out[o++] = (header.tombstone ? FLAG_TOMBSTONE : 0) | (hasExpiry ? FLAG_EXPIRY : 0);
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
  // Through a view: lmdb-js read buffers report a `length` shorter than the memory behind them,
  // and a native copy of the whole buffer (Buffer#copy from 0 to its length) takes all of it.
  out.set(src.subarray(valueStart, valueEnd), o);
  return out;
}

/** A record without its value: what hash trees and purge decisions read. */
export type RecordHeader = Omit<KvRecord, 'value'>;

function decodeHeader(buf: Uint8Array): { header: RecordHeader; b: Buffer; valueOffset: number } {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 15) throw new CorruptDataError(`record of ${b.length} bytes is too short`);
  if (b[0] !== FORMAT_V1) throw new CorruptDataError(`unknown record format ${b[0]}`);
  const flags = b[1];
  if (flags & ~(FLAG_TOMBSTONE | FLAG_EXPIRY)) throw new CorruptDataError(`unknown record flags ${flags}`);
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
  if (!hasExpiry) return { header: { version, tombstone }, b, valueOffset: o };
  const expiresAt = b.readDoubleBE(o);
  return { header: { version, tombstone, expiresAt }, b, valueOffset: o + 8 };
}

export function decodeRecord(buf: Uint8Array): KvRecord {
  const { header: h, b, valueOffset } = decodeHeader(buf);
  // Copy: LMDB and socket buffers are reused after this call returns.
  const value = Buffer.from(b.subarray(valueOffset));
  return h.expiresAt === undefined
    ? { version: h.version, value, tombstone: h.tombstone }
    : { version: h.version, value, tombstone: h.tombstone, expiresAt: h.expiresAt };
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
