import { xxh64 } from '@node-rs/xxhash';
import { KvError } from './errors';
import type { Version } from './hlc';

/**
 * The per-partition hash tree of anti-entropy: two levels, B leaves and a root.
 * A key belongs to one leaf (a hash of the key); a leaf's hash is the XOR of
 * xxh64(key ‖ version) over the records in it, so adding, replacing or removing
 * a record costs O(1) and the hash does not depend on the order records
 * arrived in. The root is xxh64 of the leaf hashes. Two replicas holding the
 * same records have equal roots; a root mismatch is narrowed to leaves, and
 * only the records of differing leaves travel.
 *
 * Records that die (tombstones, records with an expiry) carry the instant
 * `excludeAt` at which they leave the tree (the tombstone grace period,
 * node/purge.ts). Their hashes are also kept per instant, so `sweep(now)`
 * drops every record due by `now` without touching the disk, and every replica
 * drops the same records at the same instants: a tombstone purged on one node
 * and not yet on another does not make their trees differ.
 *
 * Pure: no I/O, time is passed in.
 */

export const DEFAULT_LEAF_COUNT = 64;
export const LEAF_HASH_BYTES = 8;
/**
 * Seed of the key → leaf hash. Not the partition hash's seed (0): with the same
 * hash, the keys of one partition share `hash mod P`, hence `hash mod B` for any
 * B dividing P, and would all land in one leaf. Part of the protocol between
 * nodes: every node must use the same seed and leaf count.
 */
export const LEAF_SEED = 0x6b7673746f7265n; // "kvstore"

export class HashTreeError extends KvError {}

const LEAF_COUNT_BIGINT = new Map<number, bigint>();

export function leafOf(key: Uint8Array, leafCount: number): number {
  let n = LEAF_COUNT_BIGINT.get(leafCount);
  if (n === undefined) LEAF_COUNT_BIGINT.set(leafCount, (n = BigInt(leafCount)));
  return Number(xxh64(key, LEAF_SEED) % n);
}

/** Reused by recordHash (synchronous, so never shared by two calls): one allocation less per record. */
let hashScratch = Buffer.allocUnsafe(1024);

/** xxh64 of an unambiguous encoding of (key, version): u32 key length, key, f64 wall, u32 logical, writer. */
export function recordHash(key: Uint8Array, version: Version): bigint {
  const writerBytes = Buffer.byteLength(version.writer, 'utf8');
  const size = 4 + key.length + 8 + 4 + writerBytes;
  if (hashScratch.length < size) hashScratch = Buffer.allocUnsafe(Math.max(size, hashScratch.length * 2));
  const buf = hashScratch;
  let o = buf.writeUInt32BE(key.length, 0);
  buf.set(key, o);
  o += key.length;
  o = buf.writeDoubleBE(version.wall, o);
  o = buf.writeUInt32BE(version.logical, o);
  buf.write(version.writer, o, 'utf8');
  return xxh64(buf.subarray(0, size), 0n);
}

/** What the tree needs to know of a record. */
export interface TreeEntry {
  readonly key: Uint8Array;
  readonly version: Version;
  /** ms since the epoch at which the record leaves the tree; undefined: never */
  readonly excludeAt?: number;
}

export class PartitionTree {
  private readonly leafHashes: BigUint64Array;
  /** excludeAt → leaf → XOR of the hashes of the records leaving the tree at that instant */
  private readonly leaving = new Map<number, Map<number, bigint>>();
  private nextExclusion = Infinity;
  private swept = -Infinity;
  private leavesCache: Buffer | undefined;
  private rootCache: Buffer | undefined;

  constructor(readonly leafCount: number = DEFAULT_LEAF_COUNT) {
    if (!Number.isInteger(leafCount) || leafCount < 1 || leafCount > 65536) {
      throw new HashTreeError('bad_leaf_count', `leaf count must be in [1, 65536], got ${leafCount}`, {
        leafCount,
      });
    }
    this.leafHashes = new BigUint64Array(leafCount);
  }

  /** Every record with excludeAt at or before this instant is out of the tree. */
  get sweptUpTo(): number {
    return this.swept;
  }

  /** True when a record with this exclusion instant counts in the tree now. */
  includes(excludeAt: number | undefined): boolean {
    return excludeAt === undefined || excludeAt > this.swept;
  }

  /**
   * Adds a record; returns whether it counts (false when it is already past its
   * exclusion instant). The caller keeps at most one record per key in the tree:
   * adding the same record twice cancels it out, as XOR does.
   */
  add(entry: TreeEntry): boolean {
    return this.toggle(entry);
  }

  /** Removes a record added before (same key, version and excludeAt). */
  remove(entry: TreeEntry): boolean {
    return this.toggle(entry);
  }

  /** A record of `key` replaced another (or none): the incremental update on each write. */
  replace(previous: TreeEntry | undefined, next: TreeEntry | undefined): void {
    if (previous) this.remove(previous);
    if (next) this.add(next);
  }

  /**
   * Drops every record whose exclusion instant is at or before `now`. Returns
   * the number of (instant, leaf) groups dropped: non-zero means records left
   * the tree and may now be purged from disk.
   */
  sweep(now: number): number {
    if (now <= this.swept) return 0;
    this.swept = now;
    if (now < this.nextExclusion) return 0;
    let dropped = 0;
    let next = Infinity;
    for (const [at, byLeaf] of this.leaving) {
      if (at > now) {
        if (at < next) next = at;
        continue;
      }
      for (const [leaf, h] of byLeaf) {
        this.leafHashes[leaf] ^= h;
        dropped++;
      }
      this.leaving.delete(at);
    }
    this.nextExclusion = next;
    if (dropped > 0) this.invalidate();
    return dropped;
  }

  leafHash(leaf: number): bigint {
    return this.leafHashes[leaf];
  }

  /** The leaf hashes, 8 bytes big-endian each, leaf i at offset 8*i (the `tree-leaves` reply). */
  leaves(): Buffer {
    if (!this.leavesCache) {
      const buf = Buffer.allocUnsafe(this.leafCount * LEAF_HASH_BYTES);
      for (let i = 0; i < this.leafCount; i++) buf.writeBigUInt64BE(this.leafHashes[i], i * LEAF_HASH_BYTES);
      this.leavesCache = buf;
    }
    return this.leavesCache;
  }

  /** 8 bytes: xxh64 of the leaf hashes. */
  root(): Buffer {
    if (!this.rootCache) {
      const buf = Buffer.allocUnsafe(8);
      buf.writeBigUInt64BE(xxh64(this.leaves(), 0n), 0);
      this.rootCache = buf;
    }
    return this.rootCache;
  }

  private toggle(entry: TreeEntry): boolean {
    const { excludeAt } = entry;
    if (!this.includes(excludeAt)) return false;
    const leaf = leafOf(entry.key, this.leafCount);
    const h = recordHash(entry.key, entry.version);
    this.leafHashes[leaf] ^= h;
    if (excludeAt !== undefined) {
      let byLeaf = this.leaving.get(excludeAt);
      if (!byLeaf) {
        byLeaf = new Map();
        this.leaving.set(excludeAt, byLeaf);
        if (excludeAt < this.nextExclusion) this.nextExclusion = excludeAt;
      }
      const x = (byLeaf.get(leaf) ?? 0n) ^ h;
      // A record added then removed before its instant leaves nothing to drop.
      if (x === 0n) byLeaf.delete(leaf);
      else byLeaf.set(leaf, x);
      if (byLeaf.size === 0) this.leaving.delete(excludeAt);
    }
    this.invalidate();
    return true;
  }

  private invalidate(): void {
    this.leavesCache = undefined;
    this.rootCache = undefined;
  }
}

/** A tree of `entries` as of `now` (records due by `now` are left out). */
export function buildTree(
  entries: Iterable<TreeEntry>,
  leafCount: number = DEFAULT_LEAF_COUNT,
  now = -Infinity,
): PartitionTree {
  const tree = new PartitionTree(leafCount);
  tree.sweep(now);
  for (const e of entries) tree.add(e);
  return tree;
}

/** Indices of the leaves whose hashes differ between two `leaves()` buffers of the same leaf count. */
export function diffLeaves(a: Buffer, b: Buffer): number[] {
  if (a.length !== b.length || a.length % LEAF_HASH_BYTES !== 0) {
    throw new HashTreeError(
      'leaf_count_mismatch',
      `cannot compare trees of ${a.length / LEAF_HASH_BYTES} and ${b.length / LEAF_HASH_BYTES} leaves`,
      { a: a.length, b: b.length },
    );
  }
  const out: number[] = [];
  for (let o = 0; o < a.length; o += LEAF_HASH_BYTES) {
    if (a.compare(b, o, o + LEAF_HASH_BYTES, o, o + LEAF_HASH_BYTES) !== 0) out.push(o / LEAF_HASH_BYTES);
  }
  return out;
}
