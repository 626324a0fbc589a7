import { partitionOf } from '../common/hash';
import { compareVersions, type HybridLogicalClock, type Version } from '../common/hlc';
import type { Logger } from '../common/logger';
import { pendingReplicasOf, replicasOf, type PartitionMap } from '../common/partition-map';
import type { PeerPool } from '../common/peer-pool';
import { decodeRecord, encodeRecord, isLive, newerRecord, type KvRecord } from '../common/record';
import { isStorageRefusal, missedNode, RpcError, staleEpochOf } from '../common/rpc-client';
import { ApiError } from './api-error';
import type { GatewayMetrics } from './metrics';
import { BatchRunner, putRecord, type BatchItem, type BatchOutcome } from './batch-runner';
import { gather, gatherStaged, type ExtraReason, type Outcome, type Shortfall } from './quorum';
import { resolveRead, staleReplicas, type ReadAnswer } from './read-resolution';
import { RangeReader, type ListOptions, type ListPage } from './range-reader';
import type { KeyRange } from '../common/key-range';
import { requiredAcks, type Consistency } from '../common/consistency';

export interface MapSource {
  current(): PartitionMap | undefined;
  /**
   * Reload from the metadata store; resolves to the newest map held afterwards.
   * `minEpoch`: the epoch a replica said it holds (read past copies behind it).
   */
  refresh(minEpoch?: number): Promise<PartitionMap | undefined>;
}

export interface OpOptions {
  readonly consistency: Consistency;
  readonly rid?: string;
}

export interface CoordinatorOptions {
  readonly now?: () => number;
  /**
   * A read that has fewer than R answers after this long asks one more replica
   * (then again after as long); undefined: only when a replica fails.
   */
  readonly readHedgeMs?: number;
}

/** Map refreshes one request may go through when replicas keep saying its epoch is stale. */
const MAX_STALE_RETRIES = 8;

type Attempt<T> = { done: true; value: T } | ({ done: false } & Shortfall);

/**
 * The quorum coordinator (Dynamo style). Writes go to every replica of the key's
 * partition, plus any replica a move is filling, and are acknowledged after W
 * durable acks (W + 1 per such pending replica); reads ask R replicas (the
 * least busy first; another one when one fails or is slow), one for the value
 * and the others for a digest (the version alone), answer with the newest
 * version (read in full from its holder when only a digest had it), and repair
 * the stale ones among them in the background. A
 * replica that says our map is stale makes us reload the map and try again (as
 * Redis Cluster's MOVED), as long as each reload brings a newer epoch.
 */
export class Coordinator {
  constructor(
    private readonly maps: MapSource,
    private readonly pool: PeerPool,
    private readonly clock: HybridLogicalClock,
    private readonly metrics: GatewayMetrics,
    private readonly log: Logger,
    options: CoordinatorOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.hedge = { hedgeAfterMs: options.readHedgeMs, onExtra: (r) => this.countExtra(r) };
    this.extraCounters = {
      failed: metrics.readExtraRequests.labels('failed'),
      slow: metrics.readExtraRequests.labels('slow'),
    };
    this.ranges = new RangeReader({
      current: () => this.maps.current(),
      refresh: (epoch) => this.refreshTo(epoch),
      order: (replicas) => this.readOrder(replicas),
      range: (node, body, rid) => this.call(node, 'range', () => this.client(node).call(body, rid)),
      read: (node, body, rid) => this.call(node, 'read', () => this.client(node).call(body, rid)),
      write: (node, body, rid) => this.call(node, 'write', () => this.client(node).call(body, rid)),
      metrics,
      log,
      now: this.now,
    });
    this.batches = new BatchRunner({
      current: () => this.maps.current(),
      refresh: (epoch) => this.refreshTo(epoch),
      order: (replicas) => this.readOrder(replicas),
      read: (node, items, rid) =>
        this.call(node, 'read', () => this.client(node).call({ op: 'read', items }, rid)),
      write: (node, items, rid) =>
        this.call(node, 'write', () => this.client(node).call({ op: 'write', items }, rid)),
      hint: (node, items, rid) => this.client(node).call({ op: 'hint', items }, rid),
      leaveHints: (p, key, encoded, outcome, rid) => this.leaveHints(p, key, encoded, outcome, rid),
      shortfall: (op, o, p, rf, need, outcome) => this.quorumFailure(op, o, p, rf, need, outcome),
      clock,
      metrics,
      log,
      now: this.now,
      ...(options.readHedgeMs === undefined ? {} : { hedgeAfterMs: options.readHedgeMs }),
    });
  }

  private readonly ranges: RangeReader;
  private readonly batches: BatchRunner;

  /** A page of a listing of `range` (gateway/range-reader.ts). */
  list(range: KeyRange, opts: ListOptions): Promise<ListPage> {
    return this.ranges.list(range, opts);
  }

  private readonly now: () => number;
  private readonly hedge: { hedgeAfterMs?: number; onExtra: (reason: ExtraReason) => void };
  private readonly extraCounters: Record<ExtraReason, { inc(): void }>;
  /** rotates ties between equally busy replicas, so reads spread over all of them */
  private rotation = 0;

  put(
    key: Buffer,
    value: Buffer,
    opts: OpOptions & { ttlSeconds?: number; contentType?: string },
  ): Promise<Version> {
    return this.write(key, putRecord(this.clock.now(), value, opts), opts, 'put');
  }

  delete(key: Buffer, opts: OpOptions): Promise<Version> {
    return this.write(
      key,
      { version: this.clock.now(), value: Buffer.alloc(0), tombstone: true },
      opts,
      'delete',
    );
  }

  /** The newest live record among R replicas, or undefined for absent, deleted or expired keys. */
  async get(key: Buffer, opts: OpOptions): Promise<KvRecord | undefined> {
    const rec = await this.withRetry((map) => this.readOnce(map, key, opts));
    return isLive(rec, this.now()) ? rec : undefined;
  }

  /**
   * Many keys at once (POST /v1/batch), not atomically (gateway/batch-runner.ts): a few RPCs per
   * node for the whole batch, each operation decided and answered as a single request would be, in
   * order. An error that is not the client's to see is thrown.
   */
  batch(items: readonly BatchItem[], opts: OpOptions): Promise<BatchOutcome[]> {
    return this.batches.run(items, opts);
  }

  private async write(key: Buffer, rec: KvRecord, opts: OpOptions, op: 'put' | 'delete'): Promise<Version> {
    const encoded = encodeRecord(rec);
    // The same version on a retry makes the retry idempotent on replicas that already took it.
    await this.withRetry((map) => this.writeOnce(map, key, encoded, opts, op));
    return rec.version;
  }

  private async withRetry<T>(attempt: (map: PartitionMap) => Promise<Attempt<T>>): Promise<T> {
    let map = this.requireMap();
    let result = await attempt(map);
    // A rebalance publishes an epoch per switch: a request may race several in a row.
    // So may a failure of a replica the map dropped meanwhile: whenever a newer map is held by
    // the time an attempt fails, the attempt is retried by it.
    for (let retry = 0; retry < MAX_STALE_RETRIES && !result.done; retry++) {
      const held = this.maps.current();
      const fresh =
        held && held.epoch > map.epoch
          ? held
          : result.staleEpoch !== undefined
            ? await this.refreshTo(result.staleEpoch)
            : undefined;
      if (!fresh || fresh.epoch <= map.epoch) break;
      map = fresh;
      result = await attempt(map);
    }
    if (result.done) return result.value;
    result.report();
    throw result.error;
  }

  private async writeOnce(
    map: PartitionMap,
    key: Buffer,
    encoded: Buffer,
    opts: OpOptions,
    op: 'put' | 'delete',
  ): Promise<Attempt<undefined>> {
    const p = partitionOf(key, map.partitionCount);
    const replicas = replicasOf(map, p);
    const pending = pendingReplicasOf(map, p);
    // A move's new replica gets every write, and each one raises the acks needed by one (as
    // Cassandra's pending ranges do): when the switch drops the old replica, a write acknowledged
    // meanwhile is still on W replicas of the new set, whichever W answered.
    const need = requiredAcks(opts.consistency, replicas.length) + pending.length;
    const targets = pending.length === 0 ? replicas : [...replicas, ...pending];
    const items = [{ p, k: key, r: encoded }];
    const send = (node: string): Promise<unknown> =>
      this.call(node, 'write', () => this.client(node).call({ op: 'write', items }, opts.rid));
    const { quorum, all } = gather(targets, need, send);
    // Hints go out once every replica has answered or failed, off the client's path,
    // whether the write met its level or not (a 503 write may still be on some replicas).
    all
      .then((o) => this.leaveHints(p, key, encoded, o, opts.rid))
      .catch((err: unknown) => this.log.error({ err, rid: opts.rid }, 'leaving hints failed'));
    const outcome = await quorum;
    if (outcome.ok.length >= need) return { done: true, value: undefined };
    return this.quorumFailure(op, opts, p, targets.length, need, outcome);
  }

  private async readOnce(
    map: PartitionMap,
    key: Buffer,
    opts: OpOptions,
  ): Promise<Attempt<KvRecord | undefined>> {
    const p = partitionOf(key, map.partitionCount);
    const replicas = replicasOf(map, p);
    const need = requiredAcks(opts.consistency, replicas.length);
    // Digest reads (Cassandra's): one replica sends the value, the others only its version, so a
    // quorum read of a large value moves one copy of it, not R. A replica is asked in full while no
    // full read is in flight or answered, so a failed full read is replaced by another.
    let fullReads = 0;
    const ask = async (node: string): Promise<ReadAnswer> => {
      const digest = fullReads > 0;
      if (!digest) fullReads++;
      try {
        return { rec: await this.readFrom(node, p, key, digest, opts.rid), digest };
      } catch (err) {
        if (!digest) fullReads--;
        throw err;
      }
    };
    const { quorum, all } = gatherStaged(this.readOrder(replicas), need, ask, this.hedge);
    const outcome = await quorum;
    if (outcome.ok.length < need) return this.quorumFailure('get', opts, p, replicas.length, need, outcome);
    const resolved = resolveRead(outcome.ok, this.now());
    let value: KvRecord | undefined;
    if (resolved.kind === 'value') value = resolved.record;
    else if (resolved.kind === 'expired') value = undefined;
    else {
      // The newest version came from digests only: read it in full from a replica that has it.
      this.metrics.readDigestMismatches.inc();
      const fetched = await this.fetchNewest(resolved.from, p, key, resolved.version, opts.rid);
      if (!fetched.ok) {
        return this.quorumFailure(
          'get',
          opts,
          p,
          replicas.length,
          need,
          { ok: outcome.ok, failed: fetched.failed },
          `the newest version of the key is on ${resolved.from.join(', ')}, which answered its version but not its value`,
        );
      }
      value = fetched.rec;
    }
    all
      .then((o) => this.repair(p, key, o, value, opts.rid))
      .catch((err: unknown) => this.log.error({ err, rid: opts.rid }, 'read repair failed'));
    return { done: true, value };
  }

  private async readFrom(
    node: string,
    p: number,
    key: Buffer,
    digest: boolean,
    rid: string | undefined,
  ): Promise<KvRecord | undefined> {
    const items = [{ p, k: key }];
    const body = digest ? { op: 'read' as const, items, digest } : { op: 'read' as const, items };
    const reply = await this.call(node, 'read', () => this.client(node).call(body, rid));
    const raw = reply.records?.[0];
    return raw ? decodeRecord(raw) : undefined;
  }

  /**
   * The value of `version`, read in full from the replicas that answered it by digest, one after
   * another; a newer version found meanwhile is as good. Fails when none of them answers with it.
   */
  private async fetchNewest(
    from: readonly string[],
    p: number,
    key: Buffer,
    version: Version,
    rid: string | undefined,
  ): Promise<{ ok: true; rec: KvRecord } | { ok: false; failed: Array<readonly [string, unknown]> }> {
    const failed: Array<readonly [string, unknown]> = [];
    for (const node of from) {
      try {
        const rec = await this.readFrom(node, p, key, false, rid);
        if (rec && compareVersions(rec.version, version) >= 0) return { ok: true, rec };
        // Older than its own digest a moment ago: its data went back (a disk swapped under it).
        failed.push([node, new Error(`answered an older version than its digest`)]);
      } catch (err) {
        failed.push([node, err]);
      }
    }
    return { ok: false, failed };
  }

  /**
   * Sends the newest version whose value is known to every replica that answered with an older
   * one or none. `known` is what the read answered with; a later answer may bring a newer full
   * record. Replicas answering a newer version only by digest are left to anti-entropy.
   */
  private async repair(
    p: number,
    key: Buffer,
    outcome: Outcome<ReadAnswer>,
    known: KvRecord | undefined,
    rid: string | undefined,
  ): Promise<void> {
    const latest = resolveRead(outcome.ok, this.now());
    const winner = latest.kind === 'value' ? newerRecord(known, latest.record) : known;
    if (!winner) return;
    const stale = staleReplicas(outcome.ok, winner.version);
    if (stale.length === 0) return;
    const items = [{ p, k: key, r: encodeRecord(winner) }];
    await Promise.all(
      stale.map(async (node) => {
        try {
          await this.client(node).call({ op: 'write', items }, rid);
          this.metrics.readRepairs.inc({ outcome: 'ok' });
        } catch (err) {
          this.metrics.readRepairs.inc({ outcome: 'failed' });
          this.log.warn({ err, node, rid }, 'read repair write failed');
        }
      }),
    );
    this.log.debug({ rid, partition: p, repaired: stale }, 'read repair');
  }

  /**
   * Hinted handoff: for each replica the write missed because it was down or
   * timed out, leave a hint with a replica that acknowledged the write, to be
   * replayed when the missed one is back. Refusals (bad_request, stale_epoch)
   * are not misses: a hint would be refused the same way. With no replica
   * holding the write there is nobody to hold a hint, and nothing to hand off.
   */
  private async leaveHints(
    p: number,
    key: Buffer,
    r: Buffer,
    outcome: Outcome<unknown>,
    rid: string | undefined,
  ): Promise<void> {
    const missed = outcome.failed.filter(([, e]) => missedNode(e)).map(([node]) => node);
    if (missed.length === 0) return;
    const acked = outcome.ok.map(([node]) => node).sort();
    if (acked.length === 0) {
      this.metrics.hintsSent.inc({ outcome: 'no_live_replica' }, missed.length);
      this.log.debug({ rid, partition: p, missed }, 'write missed replicas and no replica took it: no hint');
      return;
    }
    // Start at a partition-dependent holder so hints spread over the live replicas.
    const start = p % acked.length;
    const holders = [...acked.slice(start), ...acked.slice(0, start)];
    const items = missed.map((t) => ({ t, p, k: key, r }));
    for (const holder of holders) {
      try {
        const reply = await this.client(holder).call({ op: 'hint', items }, rid);
        const stored = reply.stored.filter(Boolean).length;
        if (stored > 0) this.metrics.hintsSent.inc({ outcome: 'stored' }, stored);
        if (items.length > stored) {
          this.metrics.hintsSent.inc({ outcome: 'refused' }, items.length - stored);
          this.log.warn({ rid, holder, partition: p, missed }, 'hint holder refused hints');
        }
        this.log.debug({ rid, holder, partition: p, missed }, 'hints left');
        return;
      } catch (err) {
        this.log.warn(
          { err, rid, holder, partition: p, missed },
          'cannot leave hint; trying another replica',
        );
      }
    }
    this.metrics.hintsSent.inc({ outcome: 'failed' }, items.length);
    this.log.warn({ rid, partition: p, missed, tried: holders }, 'no replica took the hints');
  }

  private quorumFailure(
    op: string,
    opts: OpOptions,
    partition: number,
    rf: number,
    need: number,
    outcome: Outcome<unknown>,
    /** what went wrong, when enough replicas answered but the value could not be read */
    valueMissing?: string,
  ): { done: false } & Shortfall {
    let staleEpoch: number | undefined;
    for (const [, e] of outcome.failed) {
      const claimed = staleEpochOf(e);
      if (claimed !== undefined && (staleEpoch === undefined || claimed > staleEpoch)) staleEpoch = claimed;
    }
    const reasons = outcome.failed
      .map(([node, e]) => `${node}: ${e instanceof RpcError ? e.code : 'error'}`)
      .join(', ');
    // Counted and logged only if it is the answer: an attempt retried with a newer map is not a failure.
    const report = (): void => {
      this.metrics.quorumFailures.inc({ op, consistency: opts.consistency });
      this.log.warn(
        { rid: opts.rid, op, partition, need, ok: outcome.ok.length, reasons },
        'not enough replicas',
      );
    };
    // Too few replicas had room: the client learns the disks are full (507), and which, not a vague 503.
    const full = outcome.failed.filter(([, e]) => isStorageRefusal(e)).map(([node]) => node);
    if (full.length > 0 && op !== 'get' && valueMissing === undefined) {
      const error = new ApiError(
        507,
        'insufficient_storage',
        `consistency ${opts.consistency} needs ${need} of ${rf} replicas of partition ${partition}; ${outcome.ok.length} took the write, and ${full.join(', ')} had no room for it (${reasons})`,
        { partition, need, rf, full },
      );
      return { done: false, staleEpoch, error, report };
    }
    const error = new ApiError(
      503,
      'unavailable',
      valueMissing === undefined
        ? `consistency ${opts.consistency} needs ${need} of ${rf} replicas of partition ${partition}; ${outcome.ok.length} answered (${reasons})`
        : `${valueMissing} (partition ${partition}: ${reasons})`,
      { partition, need, rf },
    );
    return { done: false, staleEpoch, error, report };
  }

  private async call<T>(node: string, op: 'read' | 'write' | 'range', fn: () => Promise<T>): Promise<T> {
    try {
      const v = await fn();
      this.metrics.replicaRequests.inc({ node, op, outcome: 'ok' });
      return v;
    } catch (err) {
      const outcome = err instanceof RpcError ? err.code : 'error';
      this.metrics.replicaRequests.inc({ node, op, outcome });
      const claimed = staleEpochOf(err);
      if (claimed !== undefined) {
        // Someone holds a newer map: start fetching it now; the retry awaits the same refresh.
        this.refreshTo(claimed).catch((e: unknown) => this.log.warn({ err: e }, 'map refresh failed'));
      }
      throw err;
    }
  }

  /** Reloads the map; `claimed` is the epoch a replica holds (0: it did not say). */
  private refreshTo(claimed: number): Promise<PartitionMap | undefined> {
    return this.maps.refresh(claimed > 0 ? claimed : undefined);
  }

  /**
   * Replicas in the order a read asks them: known-down ones last, then by
   * requests in flight (a stalled node piles them up and stops being chosen;
   * Envoy's least-request balancing), ties rotated so load spreads evenly.
   */
  private readOrder(replicas: readonly string[]): string[] {
    const n = replicas.length;
    const start = this.rotation++ % n;
    if (this.rotation > 0x3fffffff) this.rotation = 0;
    const scored = new Array<{ node: string; score: number }>(n);
    for (let i = 0; i < n; i++) {
      const node = replicas[(start + i) % n];
      const c = this.pool.get(node);
      scored[i] = {
        node,
        score: c === undefined ? 2e9 : (c.status() === 'down' ? 1e9 : 0) + c.inFlight,
      };
    }
    // Array.prototype.sort is stable: equal scores keep the rotated order.
    scored.sort((a, b) => a.score - b.score);
    return scored.map((s) => s.node);
  }

  private countExtra(reason: ExtraReason): void {
    this.extraCounters[reason].inc();
  }

  private client(node: string) {
    const c = this.pool.get(node);
    if (!c) throw new RpcError('unavailable', node, `no connection for node ${node}`);
    return c;
  }

  private requireMap(): PartitionMap {
    const map = this.maps.current();
    if (!map) throw new ApiError(503, 'not_ready', 'the gateway has no partition map yet');
    return map;
  }
}
