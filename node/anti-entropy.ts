import type { Registry } from 'prom-client';
import { KvError } from '../common/errors';
import { DEFAULT_LEAF_COUNT, diffLeaves, leafOf, PartitionTree, type TreeEntry } from '../common/hash-tree';
import { compareVersions } from '../common/hlc';
import type { Logger } from '../common/logger';
import type { PartitionMap } from '../common/partition-map';
import { decodeRecord, type RecordHeader } from '../common/record';
import { RpcError, type RpcClient } from '../common/rpc-client';
import type { RecordWrite, RepairStatus } from '../common/rpc-protocol';
import { AntiEntropyMetrics } from './anti-entropy-metrics';
import { LeafKeyIndex } from './leaf-index';
import { DEFAULT_TOMBSTONE_GRACE_MS, excludeAt, pastGrace, purgePartition } from './purge';
import { TokenBucket } from './rate-limiter';
import { BadRequest, type RepairService } from './request-handler';
import { MAX_PARTITIONS, type AppliedChange, type Storage, type StoredWrite } from './storage';

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
 */

export interface BucketItem {
  readonly k: Buffer;
  readonly r: Buffer;
}

/** What a pass needs of another replica; over RPC in production (rpcRepairPeer). */
export interface RepairPeer {
  readonly id: string;
  info(): Promise<{ ready: boolean }>;
  roots(partitions: readonly number[]): Promise<Buffer[]>;
  leaves(partition: number): Promise<Buffer>;
  bucket(partition: number, leaf: number): Promise<BucketItem[]>;
  /** applies records under the merge rule; true per item where it was newer */
  write(items: readonly RecordWrite[]): Promise<boolean[]>;
}

/** The node is stopping: a pass gives up where it is, and what it did not finish does not count. */
class PassAborted extends KvError {
  constructor() {
    super('aborted', 'anti-entropy is stopping');
  }
}

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

export class RepairProtocolError extends KvError {
  constructor(peer: string, message: string, context: Record<string, unknown> = {}) {
    super('repair_protocol', `${peer}: ${message}`, { peer, ...context });
  }
}

/** A RepairPeer over a node's internal RPC connection, checking the shape of every reply. */
export function rpcRepairPeer(client: RpcClient): RepairPeer {
  const id = client.nodeId;
  return {
    id,
    async info() {
      const r = await client.call({ op: 'info' });
      if (typeof r?.ready !== 'boolean') throw new RepairProtocolError(id, 'info reply lacks ready');
      return { ready: r.ready };
    },
    async roots(partitions) {
      const r = await client.call({ op: 'tree-roots', partitions });
      if (
        !Array.isArray(r?.roots) ||
        r.roots.length !== partitions.length ||
        !r.roots.every(Buffer.isBuffer)
      ) {
        throw new RepairProtocolError(id, 'malformed tree-roots reply', { partitions: partitions.length });
      }
      return r.roots;
    },
    async leaves(p) {
      const r = await client.call({ op: 'tree-leaves', p });
      if (!Buffer.isBuffer(r?.leaves)) throw new RepairProtocolError(id, 'malformed tree-leaves reply');
      return r.leaves;
    },
    async bucket(p, b) {
      const r = await client.call({ op: 'bucket', p, b });
      if (!Array.isArray(r?.items) || !r.items.every((i) => Buffer.isBuffer(i?.k) && Buffer.isBuffer(i?.r))) {
        throw new RepairProtocolError(id, 'malformed bucket reply', { partition: p, leaf: b });
      }
      return r.items;
    },
    async write(items) {
      const r = await client.call({ op: 'write', items });
      if (!Array.isArray(r?.applied) || r.applied.length !== items.length) {
        throw new RepairProtocolError(id, 'malformed write reply');
      }
      return r.applied;
    },
  };
}

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

type Which = 'all' | ReadonlySet<number>;

/** What one pass learnt of a peer: unreachable or still building its trees (both skipped); full, while refilling. */
interface PeerPassState {
  down: boolean;
  building?: boolean;
  ready?: boolean;
}

/** Leaves fetched and reconciled together: bounds the memory a differing partition costs. */
const LEAVES_PER_ROUND = 8;
/** Records per write batch, and their bytes: a batch is one LMDB transaction or one RPC frame. */
const BATCH_RECORDS = 500;
const BATCH_BYTES = 8 * 1024 * 1024;
/** Kept on disk while a refill has not finished, so a crash mid-refill resumes it. */
const REFILL_MARKER = Buffer.from('refill-pending');

const yieldTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class AntiEntropy implements RepairService {
  private readonly trees = new Map<number, PartitionTree>();
  /** partition → latest instant records left its tree while still on disk: there is something to purge */
  private readonly purgeDue = new Map<number, number>();
  private readonly index: LeafKeyIndex;
  private readonly limiter: TokenBucket;
  private readonly metrics: AntiEntropyMetrics;
  private readonly state: ReturnType<Storage['subDatabase']>;
  private readonly leafCount: number;
  private readonly graceMs: number;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private built = false;
  private building: Promise<void> | undefined;
  /** while a background build runs: partition → key (latin1) → its newest change */
  private changedDuringBuild: Map<number, Map<string, ChangedDuringBuild>> | undefined;
  private buildAborted = false;

  private pass: Promise<void> | undefined;
  private queued: Which | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopping = new AbortController();
  private started = false;
  /** a pass has run with a map: until then a map's arrival starts one */
  private hadMap = false;
  private progress = { total: 0, done: 0, failed: 0, keys: 0 };
  private lastFullRepairAt = 0;

  /** partitions a pass could not sync because a replica was still building its trees, and when to retry */
  private retryBuilding: { partitions: ReadonlySet<number>; delayMs: number } | undefined;
  /** undefined: not needed (or done); else the refill in progress */
  private refill: { startedAt: number; synced: Set<number>; keys: number; retryMs: number } | undefined;
  private refillPending: boolean;

  constructor(private readonly opts: AntiEntropyOptions) {
    this.leafCount = opts.leafCount ?? DEFAULT_LEAF_COUNT;
    this.graceMs = opts.tombstoneGraceMs ?? DEFAULT_TOMBSTONE_GRACE_MS;
    this.intervalMs = opts.intervalMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    // Throttling and cache eviction run on real time; `now` (injectable) is the clock of record versions.
    this.index = new LeafKeyIndex(opts.storage, this.leafCount);
    this.limiter = new TokenBucket(opts.maxKeysPerSecond ?? 5000);
    this.metrics = new AntiEntropyMetrics(opts.registry);
    this.state = opts.storage.subDatabase('anti-entropy');
    this.refillPending = opts.storage.freshDisk || this.state.get(REFILL_MARKER) !== undefined;
    this.metrics.refilling.set(this.refillPending ? 1 : 0);
    opts.storage.onApplied((changes) => this.onApplied(changes));
    opts.storage.onRemoved((partition, removed) => {
      if (this.changedDuringBuild) {
        for (const { key } of removed) this.noteChangedDuringBuild(partition, key, undefined);
        return;
      }
      if (!this.built) return;
      const tree = this.tree(partition, this.now());
      for (const { key, record } of removed) tree.remove(this.entry(key, record));
    });
  }

  /**
   * Builds the trees from disk, blocking: for a node that takes no writes yet
   * (tests, tools). A write committed during the scan could be counted twice.
   */
  build(partitionCount = this.opts.map()?.partitionCount ?? MAX_PARTITIONS): void {
    const started = Date.now();
    const now = this.now();
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
    partitionCount = this.opts.map()?.partitionCount ?? MAX_PARTITIONS,
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
    const now = this.now();
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
      const at = this.now();
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
        refill: this.refillPending,
        background,
        ...(background ? { partitionsWrittenMeanwhile: partitionsWritten } : {}),
      },
      'hash trees built',
    );
  }

  /** Resolves once the trees are built (building them, blocking, if nobody started a build). */
  private async whenBuilt(): Promise<void> {
    if (this.built) return;
    if (this.building) await this.building;
    else this.build();
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

  /** Starts the schedule: a pass now (the start pass), then one every interval. */
  start(): void {
    this.stopping = new AbortController();
    this.started = true;
    if (this.automatic()) this.request('all');
  }

  /** The map changed: a node that had no map yet starts now. */
  onMapChange(): void {
    if (this.started && !this.hadMap && this.automatic()) this.request('all');
  }

  async stop(): Promise<void> {
    this.started = false;
    this.buildAborted = true;
    await this.building;
    this.stopping.abort();
    clearTimeout(this.timer);
    this.queued = undefined;
    await this.pass;
  }

  /** Resolves once no pass is running or queued (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.pass) await this.pass;
  }

  /** False while an empty disk is being refilled: reads would answer from a partial replica. */
  readyForReads(): boolean {
    return !this.refillPending;
  }

  notReadyReason(): string | undefined {
    if (!this.refillPending) return undefined;
    const mine = this.myPartitions();
    const synced = this.refill ? mine.filter((p) => this.refill?.synced.has(p)).length : 0;
    return `refilling an empty disk from peers: ${synced} of ${mine.length} partitions synced`;
  }

  // ---- serving peers (tree-roots, tree-leaves, bucket, repair) ----

  roots(partitions: readonly number[]): Buffer[] {
    this.requireBuilt();
    return partitions.map((p) => this.currentTree(p).root());
  }

  leaves(partition: number): Buffer {
    this.requireBuilt();
    return this.currentTree(partition).leaves();
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

  repair(partitions?: readonly number[]): RepairStatus {
    this.request(partitions === undefined ? 'all' : new Set(partitions));
    return this.status();
  }

  status(): RepairStatus {
    return {
      running: this.pass !== undefined || this.queued !== undefined,
      partitionsTotal: this.progress.total,
      partitionsDone: this.progress.done,
      partitionsFailed: this.progress.failed,
      keysRepaired: this.progress.keys,
      lastFullRepairAt: this.lastFullRepairAt,
      refilling: this.refillPending,
    };
  }

  /** The current tree of a partition, for tests and tools. */
  treeOf(partition: number): PartitionTree {
    return this.currentTree(partition);
  }

  /**
   * Reconciles one partition with one node, whether or not the map lists either
   * as its replica: a move's new replica catching up with its source before the
   * switch (node/partition-receiver.ts). True when both trees are equal at the end.
   */
  async syncWith(partition: number, nodeId: string): Promise<boolean> {
    const peer = this.opts.peer(nodeId);
    if (!peer) throw new RepairProtocolError(nodeId, 'no connection to this node');
    await this.whenBuilt();
    const { agreed } = await this.syncWithPeer(partition, peer);
    return agreed;
  }

  // ---- passes ----

  private request(which: Which): void {
    if (!this.started) return;
    if (this.pass) {
      this.queued = merge(this.queued, which);
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    const pass = this.runPass(which)
      .catch((err: unknown) => this.opts.log.error({ err }, 'anti-entropy pass failed'))
      .finally(() => {
        this.pass = undefined;
        const next = this.queued;
        this.queued = undefined;
        if (next) this.request(next);
        else this.scheduleNext();
      });
    this.pass = pass;
  }

  private scheduleNext(): void {
    if (!this.started) return;
    let delay: number;
    let which: Which = 'all';
    if (this.retryBuilding && !this.refill) {
      delay = this.retryBuilding.delayMs;
      which = this.retryBuilding.partitions;
      this.retryBuilding.delayMs *= 2;
    } else if (this.refill) {
      delay = this.refill.retryMs;
      this.refill.retryMs = Math.min(5000, this.refill.retryMs * 2);
      which = new Set(this.myPartitions().filter((p) => !this.refill?.synced.has(p)));
    } else if (!this.automatic()) {
      return;
    } else if (!this.hadMap) {
      // No map yet: onMapChange starts the pass; retry anyway in case the map came in between.
      delay = this.opts.refillRetryMs ?? 250;
    } else {
      // Jitter keeps the nodes of a cluster from all repairing at the same moment.
      delay = Math.round(this.intervalMs * (0.9 + Math.random() * 0.2));
    }
    this.timer = setTimeout(() => this.request(which), delay);
  }

  /** Passes run by themselves: on a schedule, or until an empty disk is refilled. */
  private automatic(): boolean {
    return this.intervalMs > 0 || this.refillPending;
  }

  private async runPass(which: Which): Promise<void> {
    await this.whenBuilt();
    if (!this.built || !this.started) return;
    const map = this.opts.map();
    if (!map) return;
    this.hadMap = true;
    this.beginRefillIfNeeded(map);
    const partitions = this.myPartitions(map).filter((p) => which === 'all' || which.has(p));
    const started = Date.now();
    this.progress = { total: partitions.length, done: 0, failed: 0, keys: 0 };
    /** per pass: peers found unreachable are skipped for the rest of it; readiness of peers while refilling */
    const peers = new Map<string, PeerPassState>();
    const failed: number[] = [];
    for (const p of partitions) {
      if (this.stopping.signal.aborted) break;
      const ok = await this.syncPartition(p, peers);
      this.progress.done++;
      if (!ok) {
        this.progress.failed++;
        failed.push(p);
      }
      await yieldTurn();
    }
    // A replica that had just started (building its trees) is asked again soon, not at the next interval.
    const building = [...peers].filter(([, s]) => s.building).map(([id]) => id);
    if (building.length > 0 && failed.length > 0) {
      this.retryBuilding = {
        partitions: new Set(failed),
        delayMs: Math.min(this.intervalMs || 30_000, 30_000, this.retryBuilding?.delayMs ?? 1000),
      };
      this.opts.log.info(
        { peers: building, partitions: failed.length, retryInMs: this.retryBuilding.delayMs },
        'anti-entropy: replicas still building their hash trees; retrying their partitions soon',
      );
    } else {
      this.retryBuilding = undefined;
    }
    this.index.evictIdle();
    const complete = this.progress.done === partitions.length && this.progress.failed === 0;
    if (which === 'all' && complete) this.lastFullRepairAt = Date.now();
    this.metrics.passes.inc({ outcome: complete ? 'complete' : 'partial' });
    this.metrics.passDuration.observe((Date.now() - started) / 1000);
    const summary = {
      partitions: partitions.length,
      failed: this.progress.failed,
      keysRepaired: this.progress.keys,
      unreachable: [...peers].filter(([, s]) => s.down).map(([id]) => id),
      ms: Date.now() - started,
    };
    if (this.progress.keys > 0 || this.progress.failed > 0) this.opts.log.info(summary, 'anti-entropy pass');
    else this.opts.log.debug(summary, 'anti-entropy pass');
    if (!this.stopping.signal.aborted) this.finishRefillIfDone(map);
  }

  /** Syncs one partition with each other replica; true when every one was synced without error. */
  private async syncPartition(p: number, peers: Map<string, PeerPassState>): Promise<boolean> {
    const map = this.opts.map();
    const replicas = map?.partitions[p];
    if (!replicas || !replicas.includes(this.opts.nodeId)) return true;
    const others = replicas.filter((id) => id !== this.opts.nodeId);
    // Records out of our tree by this instant are out of it in every comparison below.
    const t0 = this.now();
    this.currentTree(p, t0);
    let complete = true;
    let agreed = true;
    let syncedWithReady = false;
    let syncedWithAll = true;
    for (const id of others) {
      const peer = this.opts.peer(id);
      let state = peers.get(id);
      if (!state) peers.set(id, (state = { down: false }));
      if (!peer || state.down) {
        complete = agreed = syncedWithAll = false;
        continue;
      }
      try {
        if (this.refill && state.ready === undefined) state.ready = (await peer.info()).ready;
        const r = await this.syncWithPeer(p, peer);
        if (!r.agreed) agreed = false;
        if (state.ready) syncedWithReady = true;
      } catch (err) {
        complete = agreed = syncedWithAll = false;
        if (err instanceof PassAborted) break;
        this.onPeerError(p, id, state, err);
      }
    }
    if (complete) this.metrics.lastFullRepair.set({ partition: String(p) }, Math.floor(Date.now() / 1000));
    // Refilled from a full replica; or every replica answered and none is full (a new cluster).
    if (this.refill && (syncedWithReady || (syncedWithAll && !others.some((id) => peers.get(id)?.ready))))
      this.refill.synced.add(p);
    if (complete && agreed) await this.purge(p, t0);
    return complete;
  }

  private onPeerError(p: number, id: string, state: PeerPassState, err: unknown): void {
    if (err instanceof KvError && err.code === 'not_ready') {
      // Just started, still building its trees: skip it for this pass, one log line for the pass (runPass).
      state.down = true;
      state.building = true;
      return;
    }
    this.metrics.peerErrors.inc({ peer: id });
    if (err instanceof RpcError && (err.failure === 'unavailable' || err.failure === 'timeout')) {
      // Down or stalled: skip it for the rest of this pass rather than wait out a timeout per partition.
      state.down = true;
      this.opts.log.warn({ peer: id, partition: p, err: err.message }, 'anti-entropy: replica unreachable');
      return;
    }
    if (err instanceof RpcError && err.remote?.code === 'stale_epoch')
      this.opts.onStaleEpoch?.(err.remote.epoch);
    this.opts.log.warn({ peer: id, partition: p, err }, 'anti-entropy: sync with replica failed');
  }

  /** Roots, then leaves, then the records of differing leaves. `agreed`: trees equal at the end. */
  private async syncWithPeer(p: number, peer: RepairPeer): Promise<{ agreed: boolean }> {
    const [theirRoot] = await peer.roots([p]);
    const equal = theirRoot.equals(this.currentTree(p).root());
    this.metrics.rangesCompared.inc({ level: 'partition', result: equal ? 'equal' : 'different' });
    if (equal) return { agreed: true };
    const theirLeaves = await peer.leaves(p);
    const differing = diffLeaves(this.currentTree(p).leaves(), theirLeaves);
    this.metrics.rangesCompared.inc({ level: 'leaf', result: 'different' }, differing.length);
    this.metrics.rangesCompared.inc({ level: 'leaf', result: 'equal' }, this.leafCount - differing.length);
    for (let i = 0; i < differing.length; i += LEAVES_PER_ROUND) {
      if (this.stopping.signal.aborted) throw new PassAborted();
      const leaves = differing.slice(i, i + LEAVES_PER_ROUND);
      const buckets = await Promise.all(leaves.map((b) => peer.bucket(p, b)));
      await this.reconcile(p, new Set(leaves), buckets.flat(), peer);
    }
    const [after] = await peer.roots([p]);
    return { agreed: after.equals(this.currentTree(p).root()) };
  }

  /**
   * Exchanges the records of some leaves with a peer: theirs that are newer are
   * applied here, ours that they lack or hold older are pushed to them. A record
   * past its grace period is never sent to, or taken from, a replica that holds
   * nothing for the key: it may have been purged there already, and sending it
   * back would undo the purge. It still beats an older version of the key.
   */
  private async reconcile(
    p: number,
    leaves: ReadonlySet<number>,
    theirs: BucketItem[],
    peer: RepairPeer,
  ): Promise<void> {
    const now = this.now();
    const seen = new Set<string>();
    const pull: StoredWrite[] = [];
    const push: RecordWrite[] = [];
    for (const { k, r } of theirs) {
      if (!leaves.has(leafOf(k, this.leafCount))) {
        throw new RepairProtocolError(peer.id, 'bucket holds a key of another leaf', { partition: p });
      }
      seen.add(k.toString('latin1'));
      const their = decodeRecord(r);
      const localRaw = this.opts.storage.getEncoded(p, k);
      if (!localRaw) {
        if (!pastGrace(their, this.graceMs, now)) pull.push({ partition: p, key: k, record: r });
        continue;
      }
      const c = compareVersions(their.version, decodeRecord(localRaw).version);
      if (c > 0) pull.push({ partition: p, key: k, record: r });
      else if (c < 0) push.push({ p, k, r: localRaw });
    }
    for (const k of this.index.keys(p, leaves)) {
      if (seen.has(k.toString('latin1'))) continue;
      const raw = this.opts.storage.getEncoded(p, k);
      if (!raw || pastGrace(decodeRecord(raw), this.graceMs, now)) continue;
      push.push({ p, k, r: raw });
    }
    for (const batch of batches(pull, (w) => w.key.length + w.record.length)) {
      await this.limiter.take(batch.length, this.stopping.signal);
      const n = count(await this.opts.storage.apply(batch));
      this.metrics.keysRepaired.inc({ direction: 'pulled' }, n);
      this.progress.keys += n;
      if (this.refill) this.refill.keys += n;
    }
    for (const batch of batches(push, (w) => w.k.length + w.r.length)) {
      await this.limiter.take(batch.length, this.stopping.signal);
      const n = count(await peer.write(batch));
      this.metrics.keysRepaired.inc({ direction: 'pushed' }, n);
      this.progress.keys += n;
    }
  }

  /** After a pass found every replica in agreement: deletes what left the tree by `upTo` from disk. */
  private async purge(p: number, upTo: number): Promise<void> {
    const due = this.purgeDue.get(p);
    if (due === undefined) return;
    const r = await purgePartition(
      this.opts.storage,
      p,
      this.graceMs,
      upTo,
      () => this.stopping.signal.aborted,
    );
    this.metrics.recordsPurged.inc({ kind: 'tombstone' }, r.tombstones);
    this.metrics.recordsPurged.inc({ kind: 'expired' }, r.expired);
    // Records that left the tree after `upTo` were not out of it when the replicas agreed: next time.
    if (r.complete && this.purgeDue.get(p) === due && due <= upTo) this.purgeDue.delete(p);
    if (r.tombstones + r.expired > 0) {
      this.opts.log.debug({ partition: p, tombstones: r.tombstones, expired: r.expired }, 'purged');
    }
  }

  // ---- refill of an empty disk ----

  private beginRefillIfNeeded(map: PartitionMap): void {
    if (!this.refillPending || this.refill) return;
    const mine = this.myPartitions(map);
    const withPeers = mine.filter((p) => map.partitions[p].length > 1);
    if (withPeers.length === 0) {
      this.endRefill('no partition of this node has another replica');
      return;
    }
    this.state.putSync(REFILL_MARKER, Buffer.from(new Date().toISOString()));
    this.refill = {
      startedAt: Date.now(),
      synced: new Set(),
      keys: 0,
      retryMs: this.opts.refillRetryMs ?? 250,
    };
    this.opts.log.info(
      { partitions: mine.length, generation: this.opts.storage.identity.generation },
      'refill started: empty disk, reads refused until every partition is synced with a peer',
    );
  }

  private finishRefillIfDone(map: PartitionMap): void {
    const refill = this.refill;
    if (!refill) return;
    const mine = this.myPartitions(map);
    if (!mine.every((p) => refill.synced.has(p) || map.partitions[p].length === 1)) return;
    this.opts.log.info(
      { partitions: mine.length, keys: refill.keys, ms: Date.now() - refill.startedAt },
      'refill finished: serving reads',
    );
    this.endRefill();
  }

  private endRefill(reason?: string): void {
    this.state.removeSync(REFILL_MARKER);
    this.refill = undefined;
    this.refillPending = false;
    this.metrics.refilling.set(0);
    if (reason) this.opts.log.info({ reason }, 'no refill needed');
  }

  // ---- trees ----

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
      const tree = this.tree(c.partition, this.now());
      if (c.previous) tree.remove(this.entry(c.key, c.previous));
      if (!tree.add(this.entry(c.key, c.next))) this.notePurgeDue(c.partition, tree.sweptUpTo);
      this.index.note(c.partition, c.key);
    }
  }

  private entry(key: Buffer, rec: RecordHeader): TreeEntry {
    const at = excludeAt(rec, this.graceMs);
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
  private currentTree(p: number, now = this.now()): PartitionTree {
    const t = this.tree(p, now);
    if (t.sweep(now) > 0) this.notePurgeDue(p, now);
    return t;
  }

  private notePurgeDue(p: number, at: number): void {
    this.purgeDue.set(p, Math.max(this.purgeDue.get(p) ?? -Infinity, at));
  }

  private myPartitions(map = this.opts.map()): number[] {
    if (!map) return [];
    const out: number[] = [];
    for (const [p, owners] of map.partitions.entries()) if (owners.includes(this.opts.nodeId)) out.push(p);
    return out;
  }
}

function merge(a: Which | undefined, b: Which): Which {
  if (a === undefined) return b;
  if (a === 'all' || b === 'all') return 'all';
  return new Set([...a, ...b]);
}

/** Consecutive slices of at most BATCH_RECORDS items and BATCH_BYTES bytes (one larger item alone). */
function* batches<T>(items: readonly T[], bytesOf: (item: T) => number): Generator<T[]> {
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const b = bytesOf(item);
    if (batch.length > 0 && (batch.length >= BATCH_RECORDS || bytes + b > BATCH_BYTES)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += b;
  }
  if (batch.length > 0) yield batch;
}

function count(flags: readonly boolean[]): number {
  let n = 0;
  for (const f of flags) if (f) n++;
  return n;
}
