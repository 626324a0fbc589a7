import { decodeRecord, type KvRecord, type RecordHeader } from '../common/record';
import type { Storage } from './storage';

/**
 * Tombstone and expiry purge. A tombstone, or a record past its `expiresAt`,
 * must stay on disk long enough for every replica to learn of it, or an older
 * value on a replica that missed it would come back (a "zombie"). So:
 *
 * 1. A dying record leaves the hash trees at a fixed instant, `excludeAt`: the
 *    grace period after it died, rounded up to a quantum. Every replica
 *    computes the same instant from the record alone, so trees stay equal while
 *    replicas drop it one after the other, and a purged tombstone is not sent
 *    back by a replica that has not purged it yet (no ping-pong).
 * 2. It is purged from disk only after a pass of anti-entropy found every other
 *    replica's tree equal to ours *after* it left our tree (node/anti-entropy.ts):
 *    equal trees then mean no replica holds a live (or younger dead) record of
 *    that key which the tombstone would have to beat.
 * 3. Until then, anti-entropy still pushes it to a replica holding an older
 *    version of the key, and applies it over an older local one.
 *
 * The pure part (instants) is separate from the disk part (the purger).
 */

export const DEFAULT_TOMBSTONE_GRACE_MS = 10 * 24 * 60 * 60 * 1000;

/** Exclusion instants are multiples of this, so replicas drop records in the same few steps. */
export function exclusionQuantumMs(graceMs: number): number {
  return Math.min(60 * 60 * 1000, Math.max(1, Math.floor(graceMs / 8)));
}

/** When the record died: a tombstone when written, an expiring record at its expiry; undefined: alive. */
export function diedAt(rec: RecordHeader): number | undefined {
  return rec.tombstone ? rec.version.wall : rec.expiresAt;
}

/** The instant the record leaves the hash trees and may be purged; undefined for records that never die. */
export function excludeAt(rec: RecordHeader, graceMs: number): number | undefined {
  const died = diedAt(rec);
  if (died === undefined) return undefined;
  const q = exclusionQuantumMs(graceMs);
  return Math.ceil((died + graceMs) / q) * q;
}

/** True when the record is past its grace period at `now`. */
export function pastGrace(rec: RecordHeader, graceMs: number, now: number): boolean {
  const at = excludeAt(rec, graceMs);
  return at !== undefined && at <= now;
}

export interface PurgeResult {
  readonly scanned: number;
  readonly tombstones: number;
  readonly expired: number;
}

const SCAN_BATCH = 500;

/**
 * Deletes from disk the records of one partition that left the tree by `upTo`.
 * Each delete is guarded by the record's version (Storage.purge), so a write
 * racing the purge is never lost; purged records are out of the tree already,
 * so the tree needs no update.
 */
export async function purgePartition(
  storage: Storage,
  partition: number,
  graceMs: number,
  upTo: number,
  shouldStop: () => boolean = () => false,
): Promise<PurgeResult & { complete: boolean }> {
  let scanned = 0;
  let tombstones = 0;
  let expired = 0;
  let after: Buffer | undefined;
  for (;;) {
    if (shouldStop()) return { scanned, tombstones, expired, complete: false };
    const batch = storage.scan(partition, { afterKey: after, limit: SCAN_BATCH });
    if (batch.length === 0) break;
    after = batch[batch.length - 1].key;
    scanned += batch.length;
    const due: { key: Buffer; rec: KvRecord }[] = [];
    for (const { key, raw } of batch) {
      const rec = decodeRecord(raw);
      const at = excludeAt(rec, graceMs);
      if (at !== undefined && at <= upTo) due.push({ key, rec });
    }
    const results = await Promise.all(due.map(({ key, rec }) => storage.purge(partition, key, rec)));
    for (const [i, purged] of results.entries()) {
      if (!purged) continue;
      if (due[i].rec.tombstone) tombstones++;
      else expired++;
    }
    if (batch.length < SCAN_BATCH) break;
    // Let client traffic in between batches.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return { scanned, tombstones, expired, complete: true };
}
