import { leafOf } from '../common/hash-tree';
import type { Storage } from './storage';

const SCAN_BATCH = 1000;

interface Entry {
  readonly byLeaf: Map<number, Map<string, Buffer>>;
  usedAt: number;
}

/**
 * The keys of a partition grouped by hash-tree leaf. A leaf's keys are spread
 * over the whole partition range, so finding them takes a scan; a repair asks
 * for several leaves of the same partition in a row (and a refill for all 64),
 * so one scan serves them all. Kept for a few recently used partitions only,
 * and told of every new key (`note`), so it is always a superset of the keys on
 * disk: a key purged since reads back as absent and is skipped by the caller.
 */
export class LeafKeyIndex {
  private readonly entries = new Map<number, Entry>();

  constructor(
    private readonly storage: Storage,
    private readonly leafCount: number,
    private readonly opts: { maxPartitions?: number; idleMs?: number; now?: () => number } = {},
  ) {}

  /** Keys of `partition` in the given leaves. */
  keys(partition: number, leaves: Iterable<number>): Buffer[] {
    const entry = this.entry(partition);
    const out: Buffer[] = [];
    for (const leaf of leaves) {
      const keys = entry.byLeaf.get(leaf);
      if (keys) for (const k of keys.values()) out.push(k);
    }
    return out;
  }

  /** A key was written: keeps a cached partition complete. */
  note(partition: number, key: Buffer): void {
    const entry = this.entries.get(partition);
    if (entry) add(entry.byLeaf, leafOf(key, this.leafCount), key);
  }

  /** Drops partitions nobody asked about for a while (their keys can be many). */
  evictIdle(): void {
    const cutoff = this.now() - (this.opts.idleMs ?? 30_000);
    for (const [p, e] of this.entries) if (e.usedAt < cutoff) this.entries.delete(p);
  }

  private entry(partition: number): Entry {
    let entry = this.entries.get(partition);
    if (entry) {
      entry.usedAt = this.now();
      // Map order is insertion order: re-inserting keeps the least recently used first.
      this.entries.delete(partition);
      this.entries.set(partition, entry);
      return entry;
    }
    const byLeaf = new Map<number, Map<string, Buffer>>();
    let after: Buffer | undefined;
    for (;;) {
      const batch = this.storage.scan(partition, { afterKey: after, limit: SCAN_BATCH });
      for (const { key } of batch) add(byLeaf, leafOf(key, this.leafCount), key);
      if (batch.length < SCAN_BATCH) break;
      after = batch[batch.length - 1].key;
    }
    entry = { byLeaf, usedAt: this.now() };
    this.entries.set(partition, entry);
    const max = this.opts.maxPartitions ?? 4;
    for (const p of this.entries.keys()) {
      if (this.entries.size <= max) break;
      this.entries.delete(p);
    }
    return entry;
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }
}

function add(byLeaf: Map<number, Map<string, Buffer>>, leaf: number, key: Buffer): void {
  let keys = byLeaf.get(leaf);
  if (!keys) byLeaf.set(leaf, (keys = new Map()));
  // latin1 maps each byte to one char: a cheap exact string form of arbitrary bytes.
  const id = key.toString('latin1');
  if (!keys.has(id)) keys.set(id, key);
}
