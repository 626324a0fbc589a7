import type { Registry } from 'prom-client';
import type { Logger } from '../common/logger';
import type { PartitionMap } from '../common/partition-map';
import type { PartitionTree } from '../common/hash-tree';
import type { RepairStatus } from '../common/rpc-protocol';
import { AntiEntropyMetrics } from './anti-entropy-metrics';
import { HashTrees } from './hash-trees';
import { DEFAULT_TOMBSTONE_GRACE_MS } from './purge';
import { Refill } from './refill';
import { RepairPasses } from './repair-passes';
import { RepairProtocolError, type BucketItem, type RepairPeer } from './repair-peer';
import type { RepairService } from './request-handler';
import { MAX_PARTITIONS, type Storage } from './storage';

/**
 * Anti-entropy (docs/design.md, "Replication and consistency"): replicas compare
 * per-partition hash trees (common/hash-tree.ts) and exchange only the records
 * of differing leaves, so a node that was down, cut off or rebuilt from an
 * empty disk converges with its peers without anyone reading its keys.
 *
 * - Trees are built from disk once at start, in the background while the node
 *   already serves reads and writes (from a snapshot, then corrected for the
 *   keys written meanwhile), and kept up to date from every applied write
 *   (`Storage.onApplied`). Until they are built, peers asking for them are told
 *   `not_ready` and passes wait.
 * - A pass, on start, every `intervalMs` and on `repair`, goes through the
 *   partitions this node replicates and, with each other replica: roots, then
 *   leaves, then the records of each differing leaf. The peer's newer records
 *   are applied here under the merge rule; ours that it lacks or holds older are
 *   pushed to it with a `write`. Newer versions win, so order does not matter.
 * - Throttled by a keys-per-second token bucket, yielding between partitions.
 * - A node with an empty disk (its volume lost) that the map lists with peers
 *   refuses reads until each of its partitions has been synced with a peer.
 * - Tombstones and expired records leave the trees after the grace period and
 *   are purged once a pass found every replica's tree equal (node/purge.ts).
 *
 * This class is the facade the node and its request handler use; the jobs are in files of their own:
 * node/hash-trees.ts (building and upkeep of the trees), node/peer-sync.ts (one
 * partition with one replica), node/repair-passes.ts (scheduled and `kvctl repair`
 * passes, status), node/refill.ts (an empty disk refilled from peers) and
 * node/repair-peer.ts (the RepairPeer over RPC).
 */

export interface AntiEntropyOptions {
  readonly storage: Storage;
  readonly nodeId: string;
  readonly map: () => PartitionMap | undefined;
  readonly peer: (nodeId: string) => RepairPeer | undefined;
  readonly log: Logger;
  readonly registry: Registry;
  /**
   * between the end of one scheduled pass and the start of the next (default 60 s); 0: no start or
   * scheduled passes, only `repair` (and the passes that refill an empty disk)
   */
  readonly intervalMs?: number;
  /** records pulled plus pushed per second, all partitions together (default 5000) */
  readonly maxKeysPerSecond?: number;
  readonly tombstoneGraceMs?: number;
  readonly leafCount?: number;
  /** while refilling, retry unsynced partitions after this long (default 250 ms, doubling to 5 s) */
  readonly refillRetryMs?: number;
  /** a peer refused our map epoch as stale (and said which it holds): fetch the newer map */
  readonly onStaleEpoch?: (theirEpoch?: number) => void;
  /** the clock record versions are compared with, for grace periods (default Date.now) */
  readonly now?: () => number;
}

export class AntiEntropy implements RepairService {
  private readonly trees: HashTrees;
  private readonly refill: Refill;
  private readonly passes: RepairPasses;

  constructor(private readonly opts: AntiEntropyOptions) {
    const graceMs = opts.tombstoneGraceMs ?? DEFAULT_TOMBSTONE_GRACE_MS;
    const now = opts.now ?? Date.now;
    // Throttling and cache eviction run on real time; `now` (injectable) is the clock of record versions.
    const metrics = new AntiEntropyMetrics(opts.registry);
    const refill = new Refill({
      storage: opts.storage,
      nodeId: opts.nodeId,
      log: opts.log,
      metrics,
      retryMs: opts.refillRetryMs,
    });
    const trees = new HashTrees({
      storage: opts.storage,
      nodeId: opts.nodeId,
      log: opts.log,
      graceMs,
      now,
      leafCount: opts.leafCount,
      refilling: () => refill.pending,
    });
    this.refill = refill;
    this.trees = trees;
    this.passes = new RepairPasses({
      storage: opts.storage,
      nodeId: opts.nodeId,
      map: opts.map,
      peer: opts.peer,
      log: opts.log,
      metrics,
      trees,
      refill,
      whenBuilt: () => trees.whenBuilt(this.partitionCount()),
      intervalMs: opts.intervalMs ?? 60_000,
      maxKeysPerSecond: opts.maxKeysPerSecond ?? 5000,
      graceMs,
      now,
      refillRetryMs: opts.refillRetryMs,
      onStaleEpoch: opts.onStaleEpoch,
    });
  }

  private partitionCount(): number {
    return this.opts.map()?.partitionCount ?? MAX_PARTITIONS;
  }

  /**
   * Builds the trees from disk, blocking: for a node that takes no writes yet
   * (tests, tools). A write committed during the scan could be counted twice.
   */
  build(partitionCount = this.partitionCount()): void {
    this.trees.build(partitionCount);
  }

  /** Builds the trees while the node serves (HashTrees.buildInBackground). */
  buildInBackground(
    partitionCount = this.partitionCount(),
    slices: Parameters<HashTrees['buildInBackground']>[1] = {},
  ): Promise<void> {
    return this.trees.buildInBackground(partitionCount, slices);
  }

  /** Starts the schedule: a pass now (the start pass), then one every interval. */
  start(): void {
    this.passes.start();
  }

  /** The map changed: a node that had no map yet starts now. */
  onMapChange(): void {
    this.passes.onMapChange();
  }

  async stop(): Promise<void> {
    await this.passes.stop(() => this.trees.abortBuild());
  }

  /** Resolves once no pass is running or queued (tests, shutdown). */
  idle(): Promise<void> {
    return this.passes.idle();
  }

  /** False while an empty disk is being refilled: reads would answer from a partial replica. */
  readyForReads(): boolean {
    return !this.refill.pending;
  }

  notReadyReason(): string | undefined {
    return this.refill.notReadyReason(this.opts.map());
  }

  // ---- serving peers (tree-roots, tree-leaves, bucket, repair) ----

  roots(partitions: readonly number[]): Buffer[] {
    return this.trees.roots(partitions);
  }

  leaves(partition: number): Buffer {
    return this.trees.leaves(partition);
  }

  bucket(partition: number, leaf: number): BucketItem[] {
    return this.trees.bucket(partition, leaf);
  }

  repair(partitions?: readonly number[]): RepairStatus {
    return this.passes.repair(partitions);
  }

  status(): RepairStatus {
    return this.passes.status();
  }

  /** The current tree of a partition, for tests and tools. */
  treeOf(partition: number): PartitionTree {
    return this.trees.current(partition);
  }

  /**
   * Reconciles one partition with one node, whether or not the map lists either
   * as its replica: a move's new replica catching up with its source before the
   * switch (node/partition-receiver.ts). True when both trees are equal at the end.
   */
  async syncWith(partition: number, nodeId: string): Promise<boolean> {
    const peer = this.opts.peer(nodeId);
    if (!peer) throw new RepairProtocolError(nodeId, 'no connection to this node');
    return this.passes.syncWith(partition, peer);
  }
}
