import { KvError } from '../common/errors';
import { RpcError } from '../common/rpc-client';
import type { RepairStatus } from '../common/rpc-protocol';
import type { AntiEntropyOptions } from './anti-entropy';
import type { AntiEntropyMetrics } from './anti-entropy-metrics';
import type { HashTrees } from './hash-trees';
import { PassAborted, PeerSync } from './peer-sync';
import { purgePartition } from './purge';
import { TokenBucket } from './rate-limiter';
import { StorageError } from './storage';
import { partitionsOf, type Refill } from './refill';
import type { RepairPeer } from './repair-peer';

/**
 * Repair passes: on start, every `intervalMs` and on `repair` (`kvctl repair`),
 * a pass goes through the partitions this node replicates and syncs each with
 * every other replica (node/peer-sync.ts), yielding between partitions; its
 * progress is the `status` kvctl shows. A partition every replica agreed on is
 * purged of what left its tree (node/purge.ts). While an empty disk refills
 * (node/refill.ts), passes repeat for the partitions not synced yet.
 */

/** The node's side of a pass as the facade got it (AntiEntropyOptions), plus the parts it shares. */
export interface RepairPassesOptions extends Pick<
  AntiEntropyOptions,
  'storage' | 'nodeId' | 'map' | 'peer' | 'log' | 'refillRetryMs' | 'onStaleEpoch'
> {
  readonly metrics: AntiEntropyMetrics;
  readonly trees: HashTrees;
  readonly refill: Refill;
  /** resolves once the trees are built (building them if nobody started a build) */
  readonly whenBuilt: () => Promise<void>;
  /** 0: no start or scheduled passes, only `repair` (and the passes that refill an empty disk) */
  readonly intervalMs: number;
  readonly maxKeysPerSecond: number;
  readonly graceMs: number;
  readonly now: () => number;
}

type Which = 'all' | ReadonlySet<number>;

/** What one pass learnt of a peer: unreachable or still building its trees (both skipped); full, while refilling. */
interface PeerPassState {
  down: boolean;
  building?: boolean;
  ready?: boolean;
}

const yieldTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class RepairPasses {
  private readonly sync: PeerSync;
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

  constructor(private readonly opts: RepairPassesOptions) {
    this.sync = new PeerSync({
      storage: opts.storage,
      trees: opts.trees,
      limiter: new TokenBucket(opts.maxKeysPerSecond),
      metrics: opts.metrics,
      graceMs: opts.graceMs,
      now: opts.now,
      signal: () => this.stopping.signal,
      onRepaired: (direction, n) => {
        this.progress.keys += n;
        if (direction === 'pulled') opts.refill.addKeys(n);
      },
    });
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

  /** No new pass; `abortBuild` runs before the running pass is told to stop, which is then awaited. */
  async stop(abortBuild: () => Promise<void>): Promise<void> {
    this.started = false;
    await abortBuild();
    this.stopping.abort();
    clearTimeout(this.timer);
    this.queued = undefined;
    await this.pass;
  }

  /** Resolves once no pass is running or queued (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.pass) await this.pass;
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
      refilling: this.opts.refill.pending,
    };
  }

  /** One partition with one peer, outside any pass (a move's new replica and its source). */
  async syncWith(partition: number, peer: RepairPeer): Promise<boolean> {
    await this.opts.whenBuilt();
    const { agreed } = await this.sync.syncWithPeer(partition, peer);
    return agreed;
  }

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
    const refill = this.opts.refill;
    let delay: number;
    let which: Which = 'all';
    if (this.retryBuilding && !refill.active) {
      delay = this.retryBuilding.delayMs;
      which = this.retryBuilding.partitions;
      this.retryBuilding.delayMs *= 2;
    } else if (refill.active) {
      const retry = refill.nextRetry(this.opts.map());
      delay = retry?.delayMs ?? this.opts.refillRetryMs ?? 250;
      which = retry?.partitions ?? 'all';
    } else if (!this.automatic()) {
      return;
    } else if (!this.hadMap) {
      // No map yet: onMapChange starts the pass; retry anyway in case the map came in between.
      delay = this.opts.refillRetryMs ?? 250;
    } else {
      // Jitter keeps the nodes of a cluster from all repairing at the same moment.
      delay = Math.round(this.opts.intervalMs * (0.9 + Math.random() * 0.2));
    }
    this.timer = setTimeout(() => this.request(which), delay);
  }

  /** Passes run by themselves: on a schedule, or until an empty disk is refilled. */
  private automatic(): boolean {
    return this.opts.intervalMs > 0 || this.opts.refill.pending;
  }

  private async runPass(which: Which): Promise<void> {
    await this.opts.whenBuilt();
    if (!this.opts.trees.isBuilt || !this.started) return;
    const map = this.opts.map();
    if (!map) return;
    this.hadMap = true;
    this.opts.refill.beginIfNeeded(map);
    const partitions = partitionsOf(map, this.opts.nodeId).filter((p) => which === 'all' || which.has(p));
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
        delayMs: Math.min(this.opts.intervalMs || 30_000, 30_000, this.retryBuilding?.delayMs ?? 1000),
      };
      this.opts.log.info(
        { peers: building, partitions: failed.length, retryInMs: this.retryBuilding.delayMs },
        'anti-entropy: replicas still building their hash trees; retrying their partitions soon',
      );
    } else {
      this.retryBuilding = undefined;
    }
    this.opts.trees.index.evictIdle();
    const complete = this.progress.done === partitions.length && this.progress.failed === 0;
    if (which === 'all' && complete) this.lastFullRepairAt = Date.now();
    this.opts.metrics.passes.inc({ outcome: complete ? 'complete' : 'partial' });
    this.opts.metrics.passDuration.observe((Date.now() - started) / 1000);
    const summary = {
      partitions: partitions.length,
      failed: this.progress.failed,
      keysRepaired: this.progress.keys,
      unreachable: [...peers].filter(([, s]) => s.down).map(([id]) => id),
      ms: Date.now() - started,
    };
    if (this.progress.keys > 0 || this.progress.failed > 0) this.opts.log.info(summary, 'anti-entropy pass');
    else this.opts.log.debug(summary, 'anti-entropy pass');
    if (!this.stopping.signal.aborted) this.opts.refill.finishIfDone(map);
  }

  /** Syncs one partition with each other replica; true when every one was synced without error. */
  private async syncPartition(p: number, peers: Map<string, PeerPassState>): Promise<boolean> {
    const map = this.opts.map();
    const replicas = map?.partitions[p];
    if (!replicas || !replicas.includes(this.opts.nodeId)) return true;
    const others = replicas.filter((id) => id !== this.opts.nodeId);
    const refill = this.opts.refill;
    // Records out of our tree by this instant are out of it in every comparison below.
    const t0 = this.opts.now();
    this.opts.trees.current(p, t0);
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
        if (refill.active && state.ready === undefined) state.ready = (await peer.info()).ready;
        const r = await this.sync.syncWithPeer(p, peer);
        if (!r.agreed) agreed = false;
        if (state.ready) syncedWithReady = true;
      } catch (err) {
        complete = agreed = syncedWithAll = false;
        if (err instanceof PassAborted) break;
        this.onPeerError(p, id, state, err);
      }
    }
    if (complete)
      this.opts.metrics.lastFullRepair.set({ partition: String(p) }, Math.floor(Date.now() / 1000));
    // Refilled from a full replica; or every replica answered and none is full (a new cluster).
    if (refill.active && (syncedWithReady || (syncedWithAll && !others.some((id) => peers.get(id)?.ready))))
      refill.markSynced(p);
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
    if (err instanceof StorageError && (err.code === 'insufficient_storage' || err.code === 'write_failed')) {
      // Our own disk refused the repair (node/disk-guard.ts logs the episode): this pass is done with
      // the peer, the next one tries again.
      state.down = true;
      this.opts.log.debug(
        { peer: id, partition: p, err: err.message },
        'anti-entropy: repair refused by this disk',
      );
      return;
    }
    this.opts.metrics.peerErrors.inc({ peer: id });
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

  /** After a pass found every replica in agreement: deletes what left the tree by `upTo` from disk. */
  private async purge(p: number, upTo: number): Promise<void> {
    const due = this.opts.trees.purgeDueAt(p);
    if (due === undefined) return;
    const r = await purgePartition(
      this.opts.storage,
      p,
      this.opts.graceMs,
      upTo,
      () => this.stopping.signal.aborted,
    );
    this.opts.metrics.recordsPurged.inc({ kind: 'tombstone' }, r.tombstones);
    this.opts.metrics.recordsPurged.inc({ kind: 'expired' }, r.expired);
    // Records that left the tree after `upTo` were not out of it when the replicas agreed: next time.
    if (r.complete && due <= upTo) this.opts.trees.purged(p, due);
    if (r.tombstones + r.expired > 0) {
      this.opts.log.debug({ partition: p, tombstones: r.tombstones, expired: r.expired }, 'purged');
    }
  }
}

function merge(a: Which | undefined, b: Which): Which {
  if (a === undefined) return b;
  if (a === 'all' || b === 'all') return 'all';
  return new Set([...a, ...b]);
}
