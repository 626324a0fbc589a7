import type client from 'prom-client';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import { nodeById, pendingReplicasOf, replicasOf, type PartitionMap } from '../common/partition-map';
import { RpcError, type RpcClient } from '../common/rpc-client';
import { decodeRecord } from '../common/record';
import type { HintWrite } from '../common/rpc-protocol';
import { HintMetrics } from './hint-metrics';
import { HintStore, type HintEnvironment, type StoredHint } from './hint-store';
import type { HintService } from './request-handler';
import type { StoredWrite } from './storage';

export const DEFAULT_HINT_REPLAY_INTERVAL_MS = 1000;
const DEFAULT_BATCH_SIZE = 256;
/** Keeps one replay request far below the frame limit and quick to flush, whatever the value sizes. */
const DEFAULT_BATCH_BYTES = 4 * 1024 * 1024;
const DEFAULT_MAX_BACKOFF_MS = 10_000;

export interface HintedHandoffOptions {
  readonly nodeId: string;
  readonly store: HintStore;
  readonly metrics: HintMetrics;
  /** this node's data, for hints whose target is this node */
  readonly storage: { apply(writes: readonly StoredWrite[]): Promise<boolean[]> };
  /** connections to the other nodes (the node's PeerPool) */
  readonly peers: { get(nodeId: string): RpcClient | undefined };
  readonly map: () => PartitionMap | undefined;
  /** a target said our map is stale (and which epoch it holds): go and fetch the newer one */
  readonly onStaleEpoch?: (theirEpoch?: number) => void;
  readonly log: Logger;
  readonly intervalMs?: number;
  /**
   * Hints for writes older than this are dropped, not replayed (Cassandra's
   * max_hint_window). It must not exceed the tombstone grace period: a tombstone
   * purged everywhere cannot stop an older hinted write from bringing a key back.
   */
  readonly maxHintAgeMs?: number;
  readonly batchSize?: number;
  readonly batchBytes?: number;
  readonly maxBackoffMs?: number;
}

interface Backoff {
  failures: number;
  /** no attempt before this time (ms) */
  until: number;
}

/**
 * Hinted handoff on a node: keeps hints coordinators leave here (HintService)
 * and replays them. Every interval, each target with hints gets its hints in
 * batches, oldest first, as ordinary `write` requests; a batch is deleted only
 * after the target acknowledged it, which a write reply means durable. A target
 * that does not answer is retried with exponential backoff, so a long outage
 * costs one connection attempt per backoff period, not a stream of failures.
 * Replays are idempotent (the merge rule), so a hint delivered twice is harmless.
 */
export class HintedHandoff implements HintService {
  private readonly backoff = new Map<string, Backoff>();
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> | undefined;
  private stopped = false;
  private readonly intervalMs: number;
  private readonly batchSize: number;
  private readonly batchBytes: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly opts: HintedHandoffOptions) {
    this.intervalMs = opts.intervalMs ?? DEFAULT_HINT_REPLAY_INTERVAL_MS;
    this.batchSize = opts.batchSize ?? DEFAULT_BATCH_SIZE;
    this.batchBytes = opts.batchBytes ?? DEFAULT_BATCH_BYTES;
    this.maxBackoffMs = opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
  }

  /** Opens the hint store in the node's environment and registers the hint metrics. */
  static open(
    env: HintEnvironment,
    opts: Omit<HintedHandoffOptions, 'store' | 'metrics'> & {
      readonly maxBytes: number;
      readonly registry: client.Registry;
    },
  ): HintedHandoff {
    // Each needs the other: the gauges read the store at scrape time, the store reports drops.
    const metrics = new HintMetrics(opts.registry, {
      count: () => store.count(),
      bytes: () => store.bytes(),
    });
    const store = HintStore.open(env, {
      maxBytes: opts.maxBytes,
      log: opts.log,
      onDropped: (target, n, reason) => metrics.onDropped(target, n, reason),
    });
    if (store.count() > 0) {
      opts.log.info(
        { hints: store.count(), bytes: store.bytes(), targets: store.targets() },
        'hints kept from before the restart',
      );
    }
    return new HintedHandoff({ ...opts, store, metrics });
  }

  get hints(): HintStore {
    return this.opts.store;
  }

  count(): number {
    return this.opts.store.count();
  }

  /** HintService: keeps hints durably. A hint for this node itself is applied here at once. */
  async store(items: readonly HintWrite[]): Promise<boolean[]> {
    const own = items.filter((h) => h.t === this.opts.nodeId);
    const others = items.filter((h) => h.t !== this.opts.nodeId);
    if (own.length > 0) {
      await this.opts.storage.apply(own.map((h) => ({ partition: h.p, key: h.k, record: h.r })));
      this.opts.metrics.received.inc({ result: 'applied_locally' }, own.length);
    }
    const stored = others.length > 0 ? await this.opts.store.add(others) : [];
    let ok = 0;
    for (const s of stored) if (s) ok++;
    if (ok > 0) this.opts.metrics.received.inc({ result: 'stored' }, ok);
    if (stored.length > ok) this.opts.metrics.received.inc({ result: 'refused' }, stored.length - ok);
    let i = 0;
    return items.map((h) => (h.t === this.opts.nodeId ? true : stored[i++]));
  }

  start(): void {
    if (this.stopped || this.timer) return;
    this.schedule();
  }

  /** Stops the loop and waits for a pass in progress (each pass checks `stopped` between batches). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.pass;
  }

  /** One replay pass over every target with hints; targets are served concurrently. */
  async replayOnce(): Promise<void> {
    const map = this.opts.map();
    if (!map) return;
    await Promise.all(
      this.opts.store.targets().map((target) =>
        this.replayTarget(map, target).catch((err: unknown) => {
          // A local failure (storage): keep the hints and try again after a backoff.
          this.fail(target, err);
        }),
      ),
    );
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pass = this.replayOnce()
        .catch((err: unknown) => this.opts.log.error({ err }, 'hint replay pass failed'))
        .finally(() => {
          this.pass = undefined;
          if (!this.stopped) this.schedule();
        });
    }, this.intervalMs);
  }

  private async replayTarget(map: PartitionMap, target: string): Promise<void> {
    if (!nodeById(map, target)) {
      await this.opts.store.dropTarget(target, 'target_left');
      this.backoff.delete(target);
      return;
    }
    const b = this.backoff.get(target);
    if (b && Date.now() < b.until) return;
    let delivered = 0;
    while (!this.stopped) {
      const batch = this.opts.store.list(target, this.batchSize, this.batchBytes);
      if (batch.length === 0) break;
      const { deliver, stale, expired } = this.sortBatch(map, target, batch);
      let gone = 0;
      for (const [hints, reason] of [
        [stale, 'not_replica'],
        [expired, 'expired'],
      ] as const) {
        if (hints.length === 0) continue;
        const n = await this.opts.store.remove(hints.map((h) => h.id));
        if (n > 0) this.opts.store.reportDropped(target, n, reason);
        gone += n;
      }
      if (deliver.length > 0 && !(await this.deliver(target, deliver))) return;
      const n = await this.opts.store.remove(deliver.map((h) => h.id));
      this.opts.metrics.replayed.inc({ target }, n);
      delivered += n;
      // Every hint of this batch was already gone (removed concurrently): next pass, not a busy loop.
      if (gone + n === 0) break;
    }
    if (b) this.opts.log.info({ target, afterFailures: b.failures }, 'hint target reachable again');
    this.backoff.delete(target);
    if (delivered > 0) {
      this.opts.log.info({ target, delivered, left: this.opts.store.count(target) }, 'hints replayed');
    }
  }

  /**
   * A hint whose target no longer holds its partition (the partition moved) is
   * not needed there: the new replica was filled from replicas that had the write.
   * A hint older than maxHintAgeMs is dropped: anti-entropy, bound by the same
   * grace period, is what repairs that old a write.
   */
  private sortBatch(
    map: PartitionMap,
    target: string,
    batch: readonly StoredHint[],
  ): { deliver: StoredHint[]; stale: StoredHint[]; expired: StoredHint[] } {
    const deliver: StoredHint[] = [];
    const stale: StoredHint[] = [];
    const expired: StoredHint[] = [];
    const oldest = this.opts.maxHintAgeMs === undefined ? -Infinity : Date.now() - this.opts.maxHintAgeMs;
    for (const h of batch) {
      const holds =
        h.p < map.partitionCount &&
        (replicasOf(map, h.p).includes(target) || pendingReplicasOf(map, h.p).includes(target));
      if (!holds) stale.push(h);
      else if (decodeRecord(h.r).version.wall < oldest) expired.push(h);
      else deliver.push(h);
    }
    return { deliver, stale, expired };
  }

  /** Sends one batch; true when done with it (acknowledged, or refused as malformed and dropped), false to retry later. */
  private async deliver(target: string, batch: readonly StoredHint[]): Promise<boolean> {
    const items = batch.map((h) => ({ p: h.p, k: h.k, r: h.r }));
    if (target === this.opts.nodeId) {
      // Never send a hint to ourselves: it is our own write, apply it here.
      await this.opts.storage.apply(items.map((i) => ({ partition: i.p, key: i.k, record: i.r })));
      return true;
    }
    const peer = this.opts.peers.get(target);
    if (!peer) {
      this.fail(target, new RpcError('unavailable', target, `no connection to ${target} yet`));
      return false;
    }
    try {
      await peer.call({ op: 'write', items });
      return true;
    } catch (err) {
      if (err instanceof RpcError && err.remote?.code === 'bad_request') {
        // The target can never accept these: keeping them would block every hint behind them.
        this.opts.log.error(
          { target, err: errorMessage(err), hints: batch.length },
          'target refused hinted writes as malformed',
        );
        const n = await this.opts.store.remove(batch.map((h) => h.id));
        if (n > 0) this.opts.store.reportDropped(target, n, 'rejected');
        return true;
      }
      if (err instanceof RpcError && err.remote?.code === 'stale_epoch')
        this.opts.onStaleEpoch?.(err.remote.epoch);
      this.fail(target, err);
      return false;
    }
  }

  private fail(target: string, err: unknown): void {
    const prev = this.backoff.get(target);
    const failures = (prev?.failures ?? 0) + 1;
    const delay = Math.min(this.maxBackoffMs, this.intervalMs * 2 ** Math.min(failures - 1, 20));
    this.backoff.set(target, { failures, until: Date.now() + delay });
    const fields = {
      target,
      hints: this.opts.store.count(target),
      failures,
      retryInMs: delay,
      err: errorMessage(err),
    };
    // The first failure is news; the following ones only while debugging.
    if (failures === 1) this.opts.log.warn(fields, 'cannot replay hints; backing off');
    else this.opts.log.debug(fields, 'cannot replay hints; backing off');
  }
}
