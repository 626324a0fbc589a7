import { KvError } from '../common/errors';
import { DEFAULT_LEAF_COUNT, PartitionTree, type TreeEntry } from '../common/hash-tree';
import type { Logger } from '../common/logger';
import type { RecordHeader } from '../common/record';
import { LeafKeyIndex } from './leaf-index';
import { excludeAt } from './purge';
import type { BucketItem } from './repair-peer';
import { BadRequest } from './request-handler';
import { MAX_PARTITIONS, type AppliedChange, type Storage } from './storage';

/**
 * The per-partition hash trees of a node (common/hash-tree.ts), built from disk
 * once at start and kept up to date from every applied write and removal
 * (`Storage.onApplied`, `onRemoved`), plus which partitions hold records that
 * left their tree (past the grace period) and are due for purging.
 *
 * - Built in the background while the node already serves reads and writes
 *   (from a snapshot, then corrected for the keys written meanwhile). Until
 *   they are built, peers asking for them are told `not_ready`.
 * - Tombstones and expired records leave the trees after the grace period.
 */

/** Asked for a hash tree before the trees are built (the node has just started). */
export class TreesNotBuiltError extends KvError {
  constructor(nodeId: string) {
    super('not_ready', `${nodeId} is still building its hash trees`, { nodeId });
  }
}

/** The newest record the write stream gave a key while the trees were being built (undefined: removed). */
interface ChangedDuringBuild {
  readonly key: Buffer;
  rec: RecordHeader | undefined;
}

export interface HashTreesOptions {
  readonly storage: Storage;
  readonly nodeId: string;
  readonly log: Logger;
  readonly graceMs: number;
  /** the clock record versions are compared with, for grace periods */
  readonly now: () => number;
  readonly leafCount?: number;
  /** for the log line at the end of a build: the node is refilling an empty disk */
  readonly refilling: () => boolean;
}

const yieldTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class HashTrees {
  readonly leafCount: number;
  /** partition → the keys of each leaf, for buckets and reconciliation */
  readonly index: LeafKeyIndex;
  private readonly trees = new Map<number, PartitionTree>();
  /** partition → latest instant records left its tree while still on disk: there is something to purge */
  private readonly purgeDue = new Map<number, number>();
  private built = false;
  private building: Promise<void> | undefined;
  /** while a background build runs: partition → key (latin1) → its newest change */
  private changedDuringBuild: Map<number, Map<string, ChangedDuringBuild>> | undefined;
  private buildAborted = false;

  constructor(private readonly opts: HashTreesOptions) {
    this.leafCount = opts.leafCount ?? DEFAULT_LEAF_COUNT;
    this.index = new LeafKeyIndex(opts.storage, this.leafCount);
    opts.storage.onApplied((changes) => this.onApplied(changes));
    opts.storage.onRemoved((partition, removed) => {
      if (this.changedDuringBuild) {
        for (const { key } of removed) this.noteChangedDuringBuild(partition, key, undefined);
        return;
      }
      if (!this.built) return;
      const tree = this.tree(partition, this.opts.now());
      for (const { key, record } of removed) tree.remove(this.entry(key, record));
    });
  }

  get isBuilt(): boolean {
    return this.built;
  }

  /**
   * Builds the trees from disk, blocking: for a node that takes no writes yet
   * (tests, tools). A write committed during the scan could be counted twice.
   */
  build(partitionCount: number): void {
    const started = Date.now();
    const now = this.opts.now();
    let records = 0;
    // One pass over the whole database, reading each record's header in place (a per-partition
    // scan copying every value took twice as long).
    const snapshot = this.opts.storage.snapshot();
    try {
      for (const { partition: p, key, header } of snapshot.records()) {
        if (p >= partitionCount) continue;
        records++;
        this.addFromDisk(p, key, header, now);
      }
    } finally {
      snapshot.done();
    }
    this.built = true;
    this.logBuilt(records, started, false);
  }

  /**
   * Builds the trees while the node serves: one pass over a snapshot, yielding
   * to the event loop every `sliceMs` of work, then, for each key written or
   * removed since (seen through the apply and remove listeners, registered
   * before the snapshot was taken), the snapshot's record is taken out of its
   * tree and the newest one put in. XOR trees make that exact: the result is
   * the tree of what is on disk now, whatever the interleaving.
   * A node with a million keys takes requests within a fraction of a second of
   * start instead of after the whole scan (bench/RESULTS.md).
   */
  buildInBackground(
    partitionCount = MAX_PARTITIONS,
    /**
     * yield once a slice has run this long, checking the time every `checkEvery` records;
     * `pause` replaces the yield (tests run writes there, to interleave them with the scan)
     */
    slices: { sliceMs?: number; checkEvery?: number; pause?: () => Promise<void> } = {},
  ): Promise<void> {
    if (this.built) return Promise.resolve();
    if (!this.building) this.buildAborted = false;
    this.building ??= this.backgroundBuild(
      partitionCount,
      slices.sliceMs ?? 8,
      slices.checkEvery ?? 1024,
      slices.pause ?? yieldTurn,
    ).finally(() => {
      this.building = undefined;
    });
    return this.building;
  }

  private async backgroundBuild(
    partitionCount: number,
    sliceMs: number,
    checkEvery: number,
    pause: () => Promise<void>,
  ): Promise<void> {
    const started = Date.now();
    const now = this.opts.now();
    const changed = new Map<number, Map<string, ChangedDuringBuild>>();
    // Listening first: a write committed after the snapshot is then always seen by the listener.
    this.changedDuringBuild = changed;
    const snapshot = this.opts.storage.snapshot();
    let records = 0;
    try {
      let sliceStart = performance.now();
      let visited = 0;
      for (const { partition: p, key, header } of snapshot.records()) {
        if (p < partitionCount) {
          records++;
          this.addFromDisk(p, key, header, now);
        }
        if (++visited % checkEvery === 0 && performance.now() - sliceStart >= sliceMs) {
          await pause();
          if (this.buildAborted) return;
          sliceStart = performance.now();
        }
      }
      // No await from here on: listeners run on this thread, so none interleaves with the correction.
      const at = this.opts.now();
      for (const [p, keys] of changed) {
        if (p >= partitionCount) continue;
        const tree = this.tree(p, at);
        for (const c of keys.values()) {
          const old = snapshot.get(p, c.key);
          if (old) tree.remove(this.entry(c.key, old));
          if (c.rec && !tree.add(this.entry(c.key, c.rec))) this.notePurgeDue(p, tree.sweptUpTo);
        }
      }
      this.built = true;
    } finally {
      this.changedDuringBuild = undefined;
      snapshot.done();
    }
    this.logBuilt(records, started, true, changed.size);
  }

  /** A record read from disk goes into its partition's tree (or is due for purge if past its grace). */
  private addFromDisk(p: number, key: Buffer, header: RecordHeader, now: number): void {
    if (!this.tree(p, now).add(this.entry(key, header))) this.notePurgeDue(p, now);
  }

  private logBuilt(records: number, started: number, background: boolean, partitionsWritten = 0): void {
    this.opts.log.info(
      {
        partitions: this.trees.size,
        records,
        ms: Date.now() - started,
        refill: this.opts.refilling(),
        background,
        ...(background ? { partitionsWrittenMeanwhile: partitionsWritten } : {}),
      },
      'hash trees built',
    );
  }

  /** Resolves once the trees are built (building them, blocking, if nobody started a build). */
  async whenBuilt(partitionCount: number): Promise<void> {
    if (this.built) return;
    if (this.building) await this.building;
    else this.build(partitionCount);
  }

  /** Stops a background build at its next pause and waits for it. */
  async abortBuild(): Promise<void> {
    this.buildAborted = true;
    await this.building;
  }

  private requireBuilt(): void {
    if (!this.built) throw new TreesNotBuiltError(this.opts.nodeId);
  }

  private noteChangedDuringBuild(p: number, key: Buffer, rec: RecordHeader | undefined): void {
    const changed = this.changedDuringBuild;
    if (!changed) return;
    let keys = changed.get(p);
    if (!keys) changed.set(p, (keys = new Map()));
    const id = key.toString('latin1');
    const c = keys.get(id);
    if (c) c.rec = rec;
    else keys.set(id, { key: Buffer.from(key), rec });
  }

  // ---- serving peers (tree-roots, tree-leaves, bucket) ----

  roots(partitions: readonly number[]): Buffer[] {
    this.requireBuilt();
    return partitions.map((p) => this.current(p).root());
  }

  leaves(partition: number): Buffer {
    this.requireBuilt();
    return this.current(partition).leaves();
  }

  /** Every record on disk in one leaf, those past grace included (the peer decides: see reconcile). */
  bucket(partition: number, leaf: number): BucketItem[] {
    if (leaf >= this.leafCount) throw new BadRequest(`leaf ${leaf} out of range 0..${this.leafCount - 1}`);
    this.requireBuilt();
    const out: BucketItem[] = [];
    for (const k of this.index.keys(partition, [leaf])) {
      const r = this.opts.storage.getEncoded(partition, k);
      if (r) out.push({ k, r });
    }
    return out;
  }

  // ---- upkeep ----

  private onApplied(changes: readonly AppliedChange[]): void {
    if (this.changedDuringBuild) {
      for (const c of changes) {
        this.noteChangedDuringBuild(c.partition, c.key, c.next);
        this.index.note(c.partition, c.key);
      }
      return;
    }
    if (!this.built) return;
    for (const c of changes) {
      const tree = this.tree(c.partition, this.opts.now());
      if (c.previous) tree.remove(this.entry(c.key, c.previous));
      if (!tree.add(this.entry(c.key, c.next))) this.notePurgeDue(c.partition, tree.sweptUpTo);
      this.index.note(c.partition, c.key);
    }
  }

  private entry(key: Buffer, rec: RecordHeader): TreeEntry {
    const at = excludeAt(rec, this.opts.graceMs);
    return at === undefined ? { key, version: rec.version } : { key, version: rec.version, excludeAt: at };
  }

  /** The tree of a partition, created empty (and swept to now) when the partition had nothing at build. */
  private tree(p: number, now: number): PartitionTree {
    let t = this.trees.get(p);
    if (!t) {
      t = new PartitionTree(this.leafCount);
      t.sweep(now);
      this.trees.set(p, t);
    }
    return t;
  }

  /** The tree as of now: records whose grace ran out leave it first. */
  current(p: number, now = this.opts.now()): PartitionTree {
    const t = this.tree(p, now);
    if (t.sweep(now) > 0) this.notePurgeDue(p, now);
    return t;
  }

  private notePurgeDue(p: number, at: number): void {
    this.purgeDue.set(p, Math.max(this.purgeDue.get(p) ?? -Infinity, at));
  }

  /** The latest instant records of `p` left its tree while still on disk; undefined: nothing to purge. */
  purgeDueAt(p: number): number | undefined {
    return this.purgeDue.get(p);
  }

  /** A purge removed everything due by `due` (and nothing left the tree since). */
  purged(p: number, due: number): void {
    if (this.purgeDue.get(p) === due) this.purgeDue.delete(p);
  }
}
