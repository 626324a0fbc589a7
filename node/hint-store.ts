import type { Database } from 'lmdb';
import { CorruptDataError, KvError } from '../common/errors';
import type { Logger } from '../common/logger';
import { decodeRecord } from '../common/record';
import type { HintWrite } from '../common/rpc-protocol';
import { storageKey } from './storage';

/**
 * Durable hints (hinted handoff): writes that missed a replica, kept here until
 * that replica is back. They live in an LMDB sub-database of the node's own
 * environment, so a hint is as crash-safe as the data and is acknowledged only
 * once flushed.
 *
 * Key:   u8 targetLen | target id bytes | u64 BE seq
 * Value: u8 format (1) | u16 BE partition | u16 BE keyLen | key bytes | encoded record
 *
 * The target prefix makes one target's hints a contiguous range in arrival
 * order; `seq` is one counter for the whole store, so the globally oldest hint
 * is the lowest head among the (few) targets. The store is bounded in bytes:
 * when a write takes it over the bound, the oldest hints go first.
 */
export const DEFAULT_MAX_HINT_BYTES = 256 * 1024 * 1024;

const FORMAT_V1 = 1;
const SEQ_BYTES = 8;
const MAX_TARGET_BYTES = 255;

export class HintStoreError extends KvError {}

/**
 * overflow: pushed out by newer hints over the bound; too_large: one hint bigger than the bound;
 * target_left: its node left the map; not_replica: its node no longer holds the partition;
 * rejected: the target refused it as malformed.
 */
export type HintDropReason =
  'overflow' | 'too_large' | 'target_left' | 'not_replica' | 'rejected' | 'expired';

export interface StoredHint {
  /** the hint's key in the store, used to delete it once delivered */
  readonly id: Buffer;
  readonly seq: number;
  readonly target: string;
  readonly p: number;
  readonly k: Buffer;
  /** encoded record */
  readonly r: Buffer;
  /** key plus value bytes, what counts toward the bound */
  readonly bytes: number;
}

/** The part of Storage the hint store needs: its own sub-database in the node's environment. */
export interface HintEnvironment {
  subDatabase(name: string): Database<Buffer, Buffer>;
  flushed(): Promise<void>;
  /** throws when the disk has no room for `bytes` more (node/disk-guard.ts) */
  admitWrite(bytes: number, shrinking: boolean): void;
}

export interface HintStoreOptions {
  readonly maxBytes: number;
  readonly log: Logger;
  /** called for every group of hints dropped without delivery */
  readonly onDropped?: (target: string, count: number, reason: HintDropReason) => void;
}

interface TargetTotals {
  count: number;
  bytes: number;
}

function targetPrefix(target: string): Buffer {
  const t = Buffer.from(target, 'utf8');
  if (t.length === 0 || t.length > MAX_TARGET_BYTES) {
    throw new HintStoreError('bad_target', `hint target id of ${t.length} bytes`, { target });
  }
  return Buffer.concat([Buffer.from([t.length]), t]);
}

/** Exclusive end of a target's range: seq never reaches 2^64 - 1. */
function targetEnd(prefix: Buffer): Buffer {
  return Buffer.concat([prefix, Buffer.alloc(SEQ_BYTES, 0xff)]);
}

function hintKey(prefix: Buffer, seq: number): Buffer {
  const out = Buffer.allocUnsafe(prefix.length + SEQ_BYTES);
  prefix.copy(out, 0);
  out.writeBigUInt64BE(BigInt(seq), prefix.length);
  return out;
}

function parseKey(key: Buffer): { target: string; seq: number } {
  const len = key[0];
  if (key.length !== 1 + len + SEQ_BYTES || len === 0) {
    throw new CorruptDataError(`hint key of ${key.length} bytes is malformed`);
  }
  return {
    target: key.toString('utf8', 1, 1 + len),
    seq: Number(key.readBigUInt64BE(1 + len)),
  };
}

function encodeValue(h: HintWrite): Buffer {
  const out = Buffer.allocUnsafe(5 + h.k.length + h.r.length);
  out[0] = FORMAT_V1;
  out.writeUInt16BE(h.p, 1);
  out.writeUInt16BE(h.k.length, 3);
  h.k.copy(out, 5);
  h.r.copy(out, 5 + h.k.length);
  return out;
}

function decodeValue(v: Buffer): { p: number; k: Buffer; r: Buffer } {
  if (v.length < 5 || v[0] !== FORMAT_V1) throw new CorruptDataError('hint value is malformed');
  const p = v.readUInt16BE(1);
  const klen = v.readUInt16BE(3);
  if (v.length < 5 + klen) throw new CorruptDataError('hint value is shorter than its key');
  return { p, k: Buffer.from(v.subarray(5, 5 + klen)), r: Buffer.from(v.subarray(5 + klen)) };
}

export class HintStore {
  private readonly totals = new Map<string, TargetTotals>();
  private totalCount = 0;
  private totalBytes = 0;
  private nextSeq = 1;

  private constructor(
    private readonly db: Database<Buffer, Buffer>,
    private readonly env: HintEnvironment,
    private readonly opts: HintStoreOptions,
  ) {}

  /** Opens the store and rebuilds its counts from disk (hints survive restarts). */
  static open(env: HintEnvironment, opts: HintStoreOptions): HintStore {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 1) {
      throw new HintStoreError(
        'bad_bound',
        `max hint bytes must be a positive integer, got ${opts.maxBytes}`,
      );
    }
    const s = new HintStore(env.subDatabase('hints'), env, opts);
    s.recount();
    return s;
  }

  count(target?: string): number {
    return target === undefined ? this.totalCount : (this.totals.get(target)?.count ?? 0);
  }

  bytes(): number {
    return this.totalBytes;
  }

  get maxBytes(): number {
    return this.opts.maxBytes;
  }

  /** Targets that have hints waiting. */
  targets(): string[] {
    return [...this.totals.keys()];
  }

  /**
   * Stores hints durably; resolves once they are flushed. Per item: true when
   * stored, false when refused (a hint larger than the whole bound) or pushed
   * out again by the rest of its own batch. Malformed items throw before
   * anything is written.
   */
  async add(items: readonly HintWrite[]): Promise<boolean[]> {
    const prepared = items.map((h) => {
      storageKey(h.p, h.k); // same partition and key limits as the data: a hint must be deliverable
      decodeRecord(h.r);
      const prefix = targetPrefix(h.t);
      const value = encodeValue(h);
      return { target: h.t, prefix, value, bytes: prefix.length + SEQ_BYTES + value.length };
    });
    // A full disk takes no hints: the writer leaves them with another replica.
    this.env.admitWrite(
      prepared.reduce((n, h) => n + h.bytes, 0),
      false,
    );
    let stored: boolean[];
    try {
      stored = await this.db.transaction(() => {
        const ids = prepared.map((h) => {
          if (h.bytes > this.opts.maxBytes) return undefined;
          const id = hintKey(h.prefix, this.nextSeq++);
          this.db.putSync(id, h.value);
          this.adjust(h.target, 1, h.bytes);
          return id;
        });
        const evicted = this.evictOverBound();
        return ids.map((id) => id !== undefined && !evicted.has(id.toString('hex')));
      });
    } catch (err) {
      // The in-memory totals were moved inside the failed transaction: take them from disk again.
      this.recount();
      throw err;
    }
    await this.env.flushed();
    const tooLarge = new Map<string, number>();
    for (const h of prepared) {
      if (h.bytes > this.opts.maxBytes) tooLarge.set(h.target, (tooLarge.get(h.target) ?? 0) + 1);
    }
    for (const [target, n] of tooLarge) this.reportDropped(target, n, 'too_large');
    return stored;
  }

  /** Up to `limit` hints for `target`, oldest first, stopping once `maxBytes` is reached (at least one). */
  list(target: string, limit: number, maxBytes = Number.POSITIVE_INFINITY): StoredHint[] {
    const prefix = targetPrefix(target);
    const out: StoredHint[] = [];
    let bytes = 0;
    for (const { key, value } of this.db.getRange({ start: prefix, end: targetEnd(prefix), limit })) {
      const size = key.length + value.length;
      if (out.length > 0 && bytes + size > maxBytes) break;
      bytes += size;
      const { seq } = parseKey(key);
      out.push({ id: Buffer.from(key), seq, target, ...decodeValue(value), bytes: size });
    }
    return out;
  }

  /** Deletes delivered (or discarded) hints; ids already gone are skipped. Resolves to how many were removed. */
  async remove(ids: readonly Buffer[]): Promise<number> {
    return this.db.transaction(() => {
      let removed = 0;
      for (const id of ids) {
        const v = this.db.getBinary(id);
        if (!v) continue;
        this.db.removeSync(id);
        this.adjust(parseKey(id).target, -1, -(id.length + v.length));
        removed++;
      }
      return removed;
    });
  }

  /** Drops every hint for a target (it left the cluster); logs and reports them. */
  async dropTarget(target: string, reason: HintDropReason): Promise<number> {
    const prefix = targetPrefix(target);
    const n = await this.db.transaction(() => {
      let removed = 0;
      for (const { key, value } of this.db.getRange({ start: prefix, end: targetEnd(prefix) })) {
        this.db.removeSync(key);
        this.adjust(target, -1, -(key.length + value.length));
        removed++;
      }
      return removed;
    });
    if (n > 0) this.reportDropped(target, n, reason);
    return n;
  }

  /** Reports hints dropped by a caller (e.g. replay refusing a hint), with the same log line and metric. */
  reportDropped(target: string, count: number, reason: HintDropReason): void {
    this.opts.log.warn(
      { target, dropped: count, reason, storedHints: this.totalCount, storedBytes: this.totalBytes },
      `dropped ${count} hint${count === 1 ? '' : 's'} for ${target} (${reason})`,
    );
    this.opts.onDropped?.(target, count, reason);
  }

  /**
   * Inside a write transaction: deletes the globally oldest hints until the
   * store is within its bound. Returns the ids dropped (hex), to tell a batch
   * which of its own items did not survive.
   */
  private evictOverBound(): Set<string> {
    const dropped = new Set<string>();
    const perTarget = new Map<string, number>();
    while (this.totalBytes > this.opts.maxBytes) {
      let oldest: { key: Buffer; size: number; target: string; seq: number } | undefined;
      for (const target of this.totals.keys()) {
        const prefix = targetPrefix(target);
        for (const { key, value } of this.db.getRange({ start: prefix, end: targetEnd(prefix), limit: 1 })) {
          const { seq } = parseKey(key);
          if (!oldest || seq < oldest.seq) {
            oldest = { key: Buffer.from(key), size: key.length + value.length, target, seq };
          }
        }
      }
      if (!oldest) break; // totals say bytes but no hint is left: recount fixes it below
      this.db.removeSync(oldest.key);
      this.adjust(oldest.target, -1, -oldest.size);
      dropped.add(oldest.key.toString('hex'));
      perTarget.set(oldest.target, (perTarget.get(oldest.target) ?? 0) + 1);
    }
    if (this.totalBytes > this.opts.maxBytes) this.recount();
    for (const [target, n] of perTarget) this.reportDropped(target, n, 'overflow');
    return dropped;
  }

  private adjust(target: string, count: number, bytes: number): void {
    const t = this.totals.get(target) ?? { count: 0, bytes: 0 };
    t.count += count;
    t.bytes += bytes;
    if (t.count <= 0) this.totals.delete(target);
    else this.totals.set(target, t);
    this.totalCount += count;
    this.totalBytes += bytes;
  }

  /** Rebuilds counts, bytes and the next sequence number from what is on disk. */
  private recount(): void {
    this.totals.clear();
    this.totalCount = 0;
    this.totalBytes = 0;
    let maxSeq = 0;
    for (const { key, value } of this.db.getRange({ snapshot: false })) {
      const { target, seq } = parseKey(key);
      this.adjust(target, 1, key.length + value.length);
      if (seq > maxSeq) maxSeq = seq;
    }
    this.nextSeq = Math.max(this.nextSeq, maxSeq + 1);
  }
}
