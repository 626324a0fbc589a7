import { errorMessage } from './errors';
import { createLogger, type Logger } from './logger';
import {
  checkCompareAndSetArgs,
  MetadataError,
  type MetadataFailure,
  type MetadataStore,
} from './metadata-store';
import { serializePartitionMap, type PartitionMap } from './partition-map';

export interface MirroredMetadataStoreOptions {
  /** the truth, written first (the ConfigMap store) */
  readonly authoritative: MetadataStore;
  /** the copy readers load from and subscribe to (the Redis store) */
  readonly fast: MetadataStore;
  /**
   * This process owns the map (the operator). A writer loads from the authoritative copy (it
   * is about to compare-and-set against it, and a lagging fast copy would make every attempt
   * lose), and keeps the fast copy up to date: after each write, and every repairIntervalMs,
   * so a Redis that restarted empty is refilled without waiting for the next change.
   * Readers (nodes, gateways) never write either copy. Default false.
   */
  readonly writer?: boolean;
  /** writer only: how often repairFastCopy() runs in the background (default 5000 ms; 0: never) */
  readonly repairIntervalMs?: number;
  readonly log?: Logger;
}

/**
 * What repairFastCopy() found and did:
 * written: the fast copy was missing or older and now holds the authoritative map;
 * current: it already held that epoch; ahead: it holds a newer epoch than the authoritative
 * copy (someone wrote Redis directly, or the ConfigMap was restored from a backup), left alone
 * since an epoch never goes back; diverged: same epoch, different content, left alone (an epoch
 * cannot be rewritten; the next write fixes it); nothing: no authoritative map to copy yet.
 */
export type FastCopyRepair = 'written' | 'current' | 'ahead' | 'diverged' | 'nothing';

/** Fast-copy failures a reader survives by reading the authoritative copy instead. */
const FALLBACK_FAILURES: ReadonlySet<MetadataFailure> = new Set(['unavailable', 'timeout', 'corrupt', 'io']);

/** Rounds of load-then-CAS on the fast copy before giving up: each lost round means someone else moved it. */
const PUBLISH_ATTEMPTS = 5;

/**
 * The partition map as docs/design.md, "Metadata: ConfigMap and Redis", lays it out: the authoritative copy (a ConfigMap, optimistic
 * concurrency) and the fast copy (Redis key and channel).
 *
 * - compareAndSet writes the authoritative copy; only when that wins is the map published to
 *   the fast copy, best effort: a failure is logged and repaired later, never reported as a
 *   lost write (the write happened). When the fast copy's CAS refuses (it missed a write, or
 *   lost its data), it is brought to the new map from whatever epoch it holds.
 * - load() (readers) reads the fast copy; it reads the authoritative copy when the fast one
 *   fails (unavailable, timeout, corrupt), holds nothing, or is older than the epoch the caller
 *   knows exists (a node that followed the ConfigMap refused its request as stale while the
 *   writer had not published to Redis yet, or died before it could). It does not read both on every call:
 *   that would put every node's and gateway's refresh on the API server, which the fast copy
 *   exists to avoid. A fast copy lagging behind is caught by watch() (which follows both) and
 *   repaired by the writer.
 * - Neither load() nor watch() ever goes back in epoch: this store remembers the newest map it
 *   has seen from either copy and returns that rather than an older copy.
 */
export class MirroredMetadataStore implements MetadataStore {
  private readonly authoritative: MetadataStore;
  private readonly fast: MetadataStore;
  private readonly writer: boolean;
  private readonly log: Logger;
  private readonly repairTimer: NodeJS.Timeout | undefined;
  private repairing: Promise<FastCopyRepair> | undefined;
  /** the newest map seen from either copy */
  private newest: PartitionMap | undefined;
  /** the last fast-copy failure load() reported, so a long outage is logged once */
  private fastFailure: string | undefined;
  private closed = false;

  constructor(opts: MirroredMetadataStoreOptions) {
    this.authoritative = opts.authoritative;
    this.fast = opts.fast;
    this.writer = opts.writer ?? false;
    this.log = opts.log ?? createLogger('metadata-store');
    const interval = opts.repairIntervalMs ?? 5000;
    if (this.writer && interval > 0) {
      this.repairTimer = setInterval(() => void this.repairLogged('periodic'), interval);
      // Repairing must never keep a process (or jest) alive on its own.
      this.repairTimer.unref();
    }
  }

  async load(minEpoch?: number): Promise<PartitionMap | undefined> {
    this.ensureOpen();
    if (this.writer) return this.remember(await this.authoritative.load());
    let fastError: MetadataError | undefined;
    let map: PartitionMap | undefined;
    try {
      map = await this.fast.load();
      if (this.fastFailure !== undefined) {
        this.log.info('partition map fast copy readable again');
        this.fastFailure = undefined;
      }
    } catch (err) {
      if (!(err instanceof MetadataError) || !FALLBACK_FAILURES.has(err.failure)) throw err;
      fastError = err;
      if (err.message !== this.fastFailure) {
        this.log.warn({ err }, 'cannot read the partition map fast copy; reading the authoritative copy');
      }
      this.fastFailure = err.message;
    }
    if (map === undefined) {
      try {
        map = await this.authoritative.load();
      } catch (err) {
        throw bothFailed(fastError, err);
      }
      if (map !== undefined && fastError === undefined) {
        this.log.debug({ epoch: map.epoch }, 'partition map fast copy is empty; read the authoritative copy');
      }
    } else if (minEpoch !== undefined && map.epoch < minEpoch) {
      map = await this.readPastLaggingFastCopy(map, minEpoch);
    }
    return this.remember(map);
  }

  async compareAndSet(map: PartitionMap, expectedEpoch: number | undefined): Promise<boolean> {
    this.ensureOpen();
    // Refuse bad arguments before any I/O; the stores check them (and the cluster) again.
    const clean = checkCompareAndSetArgs(map, expectedEpoch);
    if (!(await this.authoritative.compareAndSet(clean, expectedEpoch))) return false;
    this.remember(clean);
    try {
      const outcome = await this.publish(clean, expectedEpoch ?? 0);
      if (outcome !== 'written' && outcome !== 'current') {
        this.log.warn({ epoch: clean.epoch, outcome }, 'partition map fast copy not updated after a write');
      }
    } catch (err) {
      // The write itself succeeded: readers fall back to the authoritative copy, and repair retries.
      this.log.warn(
        { err, epoch: clean.epoch },
        'partition map written, but its fast copy could not be updated; readers follow the authoritative copy until repaired',
      );
    }
    return true;
  }

  /**
   * Brings the fast copy up to the authoritative map: the writer runs it after each write and
   * periodically; call it directly e.g. after learning Redis restarted. Throws typed errors when
   * either copy cannot be read or the fast copy cannot be written.
   */
  repairFastCopy(): Promise<FastCopyRepair> {
    this.ensureOpen();
    // One repair at a time: a slow Redis must not pile up periodic runs.
    this.repairing ??= (async () => {
      const map = await this.authoritative.load();
      if (!map) return 'nothing';
      this.remember(map);
      return this.publish(map, undefined);
    })().finally(() => {
      this.repairing = undefined;
    });
    return this.repairing;
  }

  /**
   * The fast copy answered with an epoch older than one a peer holds: the authoritative copy
   * has the newer one. If it cannot be read now, the fast copy's map is still an answer (the
   * caller retries or its request fails as it would have), so that failure is logged, not thrown.
   */
  private async readPastLaggingFastCopy(fast: PartitionMap, minEpoch: number): Promise<PartitionMap> {
    try {
      const truth = await this.authoritative.load();
      this.log.info(
        { fastEpoch: fast.epoch, minEpoch, authoritativeEpoch: truth?.epoch },
        'partition map fast copy is behind an epoch a peer holds; read the authoritative copy',
      );
      return truth && truth.epoch > fast.epoch ? truth : fast;
    } catch (err) {
      this.log.warn(
        { err, fastEpoch: fast.epoch, minEpoch },
        'partition map fast copy is behind an epoch a peer holds, and the authoritative copy cannot be read',
      );
      return fast;
    }
  }

  /** Follows both copies; passes a map on only when its epoch is newer than the last one given. */
  watch(listener: (map: PartitionMap) => void): () => void {
    this.ensureOpen();
    let last = 0;
    const deliver = (map: PartitionMap): void => {
      if (map.epoch <= last) return;
      last = map.epoch;
      this.remember(map);
      // A throwing listener is caught and logged by the sub-store's watch hub.
      listener(map);
    };
    const stopFast = this.fast.watch(deliver);
    let stopAuthoritative: () => void;
    try {
      stopAuthoritative = this.authoritative.watch(deliver);
    } catch (err) {
      stopFast();
      throw err;
    }
    return () => {
      stopFast();
      stopAuthoritative();
    };
  }

  /** Closes both copies (this store owns them); rejects with the first failure after trying both. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.repairTimer) clearInterval(this.repairTimer);
    const results = await Promise.allSettled([this.fast.close(), this.authoritative.close()]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Writes `map` to the fast copy unless it already holds that epoch or a newer one. `guess` is
   * the epoch the fast copy probably holds (the previous authoritative epoch), saving a read when
   * it is in step; when its CAS refuses, the epoch it really holds is read and the map written
   * over that, so a fast copy that missed writes or lost its data catches up in one go.
   */
  private async publish(map: PartitionMap, guess: number | undefined): Promise<FastCopyRepair> {
    if (guess !== undefined && (await this.fast.compareAndSet(map, guess))) return 'written';
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      const current = await this.fast.load();
      const epoch = current?.epoch ?? 0;
      if (current && epoch === map.epoch) {
        if (serializePartitionMap(current) === serializePartitionMap(map)) return 'current';
        this.log.error(
          { epoch },
          'partition map fast copy holds different content under the same epoch; the next write replaces it',
        );
        return 'diverged';
      }
      if (epoch > map.epoch) {
        this.log.warn(
          { fastEpoch: epoch, authoritativeEpoch: map.epoch },
          'partition map fast copy is ahead of the authoritative copy; leaving it (epochs never go back)',
        );
        return 'ahead';
      }
      if (await this.fast.compareAndSet(map, epoch)) {
        if (guess === undefined || guess !== epoch) {
          this.log.info({ epoch: map.epoch, fastEpoch: epoch }, 'partition map fast copy refilled');
        }
        return 'written';
      }
    }
    throw new MetadataError(
      'timeout',
      `fast copy kept changing during ${PUBLISH_ATTEMPTS} attempts to publish`,
      {
        epoch: map.epoch,
      },
    );
  }

  private async repairLogged(why: string): Promise<void> {
    if (this.closed) return;
    try {
      const outcome = await this.repairFastCopy();
      this.log.debug({ why, outcome }, 'partition map fast copy checked');
    } catch (err) {
      // Closing ends the calls in flight on purpose: nothing to report.
      if (this.closed) return;
      this.log.warn({ err, why }, 'cannot repair the partition map fast copy; will retry');
    }
  }

  /** Keeps the newest map seen and returns it, so no caller is handed an older one. */
  private remember(map: PartitionMap | undefined): PartitionMap | undefined {
    if (map && (!this.newest || map.epoch > this.newest.epoch)) this.newest = map;
    else if (map && this.newest && map.epoch < this.newest.epoch) {
      this.log.debug(
        { loaded: map.epoch, newest: this.newest.epoch },
        'a copy is behind; keeping the newer map',
      );
    }
    return this.newest ?? map;
  }

  private ensureOpen(): void {
    if (this.closed) throw new MetadataError('closed', 'mirrored metadata store is closed');
  }
}

/** Both copies failed: the authoritative failure decides the kind, both are in the context. */
function bothFailed(fastError: MetadataError | undefined, err: unknown): unknown {
  if (!(err instanceof MetadataError)) return err;
  if (!fastError) return err;
  return new MetadataError(
    err.failure,
    `cannot read the partition map: fast copy: ${fastError.message}; authoritative copy: ${errorMessage(err)}`,
    { fast: fastError.context, authoritative: err.context },
    { cause: err },
  );
}
