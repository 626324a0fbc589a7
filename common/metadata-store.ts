import { EventEmitter } from 'node:events';
import { errorMessage, KvError } from './errors';
import { createLogger, type Logger } from './logger';
import { validatePartitionMap, type PartitionMap } from './partition-map';

/**
 * Where the partition map lives (docs/design.md, "Metadata: ConfigMap and Redis"):
 * a file on one machine, Redis as the fast copy, the ConfigMap as the
 * authoritative one. Every implementation validates what it reads, so a reader
 * never acts on a malformed map.
 */
export interface MetadataStore {
  /**
   * The current map, or undefined when none was ever written. `minEpoch` is an
   * epoch a peer says it holds: a store with more than one copy reads past a
   * copy older than that (a single copy has nothing else to read).
   */
  load(minEpoch?: number): Promise<PartitionMap | undefined>;
  /**
   * Writes `map` if the stored epoch equals `expectedEpoch` (undefined/0 = nothing
   * stored yet). Returns false on a lost race (someone else wrote first), throws
   * typed errors on I/O failure. Publishes a change notification on success.
   * After a MetadataError of kind 'unavailable' or 'timeout' the outcome is
   * unknown: load() before retrying.
   */
  compareAndSet(map: PartitionMap, expectedEpoch: number | undefined): Promise<boolean>;
  /**
   * Calls listener with each new map seen (from notifications, and from a
   * periodic poll as a safety net against lost notifications); returns an
   * unsubscribe function. A listener may receive the current map soon after
   * subscribing, and never receives an epoch lower than or equal to one it was
   * already given.
   */
  watch(listener: (map: PartitionMap) => void): () => void;
  close(): Promise<void>;
}

/**
 * unavailable: the backend cannot be reached; timeout: no answer in time;
 * corrupt: what is stored does not decode to a valid map; io: a file system
 * error; lock_timeout: another writer held the lock too long; closed: the store
 * was closed; invalid: the caller passed arguments that can never succeed.
 */
export type MetadataFailure =
  'unavailable' | 'timeout' | 'corrupt' | 'io' | 'lock_timeout' | 'closed' | 'invalid';

export class MetadataError extends KvError {
  constructor(
    readonly failure: MetadataFailure,
    message: string,
    context: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(`metadata_${failure}`, message, { ...context, failure }, options);
  }
}

/**
 * Checks compareAndSet arguments shared by every store: the map must be valid,
 * belong to the store's cluster, and move the epoch forward, so the stored
 * epoch only ever grows. Returns the validated copy to write.
 */
export function checkCompareAndSetArgs(
  map: PartitionMap,
  expectedEpoch: number | undefined,
  cluster?: string,
): PartitionMap {
  const expected = expectedEpoch ?? 0;
  if (!Number.isSafeInteger(expected) || expected < 0) {
    throw new MetadataError('invalid', 'expectedEpoch must be a non-negative integer', { expectedEpoch });
  }
  const clean = validatePartitionMap(map);
  if (clean.epoch <= expected) {
    throw new MetadataError('invalid', `new epoch ${clean.epoch} must be greater than expected ${expected}`, {
      epoch: clean.epoch,
      expectedEpoch: expected,
    });
  }
  if (cluster !== undefined && clean.cluster !== cluster) {
    throw new MetadataError('invalid', `map of cluster ${clean.cluster} cannot be stored for ${cluster}`, {
      cluster,
      mapCluster: clean.cluster,
    });
  }
  return clean;
}

interface WatchEntry {
  readonly listener: (map: PartitionMap) => void;
  /** highest epoch given to this listener */
  lastEpoch: number;
}

export interface MapWatchHubOptions {
  /** reads and validates the stored map */
  readonly load: () => Promise<PartitionMap | undefined>;
  readonly pollIntervalMs: number;
  /** names the store in logs */
  readonly source: string;
  /** required: load and listener failures are logged here, never dropped */
  readonly log: Logger;
  /** called when the first listener subscribes: open the notification source */
  readonly onStart?: () => void;
  /** called when the last listener leaves or on close: release it */
  readonly onStop?: () => void;
  /** called on each poll tick, before the check (e.g. to re-open a failed fs watcher) */
  readonly onPoll?: () => void;
}

/**
 * The watch() machinery every store shares: listeners, a poll timer as the
 * safety net, and coalesced checks, so a burst of notifications costs one load
 * and a load never overlaps another. Stores call trigger() when notified.
 * Errors never escape: a failing load or listener is logged, and the next
 * notification or poll tries again.
 */
export class MapWatchHub {
  private readonly entries = new Set<WatchEntry>();
  private pollTimer: NodeJS.Timeout | undefined;
  private scheduled: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private closed = false;
  /** the last load failure, logged once until it changes or clears */
  private lastFailure: string | undefined;
  private highestSeen = 0;
  /** the older stored epoch last warned about, so a poll does not repeat the warning */
  private warnedBackwards = 0;

  constructor(private readonly opts: MapWatchHubOptions) {}

  get size(): number {
    return this.entries.size;
  }

  add(listener: (map: PartitionMap) => void): () => void {
    if (this.closed) throw new MetadataError('closed', `${this.opts.source}: store is closed`);
    const entry: WatchEntry = { listener, lastEpoch: 0 };
    this.entries.add(entry);
    if (this.entries.size === 1) this.start();
    // A new listener learns the current map without waiting for the next poll.
    this.trigger();
    return () => {
      if (!this.entries.delete(entry)) return;
      if (this.entries.size === 0) this.stop();
    };
  }

  /**
   * Schedules a check. `epochHint` (from a notification) skips the load when
   * every listener already has that epoch.
   */
  trigger(epochHint?: number): void {
    if (this.closed || this.entries.size === 0) return;
    if (epochHint !== undefined && [...this.entries].every((e) => e.lastEpoch >= epochHint)) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.scheduled) return;
    // A macrotask later, so the several fs events of one rename cost one load.
    this.scheduled = setTimeout(() => {
      this.scheduled = undefined;
      void this.check();
    }, 0);
    this.scheduled.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const hadListeners = this.entries.size > 0;
    this.entries.clear();
    if (hadListeners) this.stop();
  }

  private start(): void {
    this.pollTimer = setInterval(() => {
      this.opts.onPoll?.();
      this.trigger();
    }, this.opts.pollIntervalMs);
    // Watching must never keep a process (or jest) alive on its own.
    this.pollTimer.unref();
    this.opts.onStart?.();
  }

  private stop(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    if (this.scheduled) clearTimeout(this.scheduled);
    this.scheduled = undefined;
    this.opts.onStop?.();
  }

  private async check(): Promise<void> {
    this.running = true;
    try {
      do {
        this.again = false;
        await this.checkOnce();
      } while (this.again && !this.closed && this.entries.size > 0);
    } finally {
      this.running = false;
    }
  }

  private async checkOnce(): Promise<void> {
    let map: PartitionMap | undefined;
    try {
      map = await this.opts.load();
    } catch (err) {
      // After close() the store ends its calls in flight on purpose: nothing to report.
      if (this.closed) return;
      const failure = errorMessage(err);
      if (failure !== this.lastFailure) {
        this.opts.log.warn(
          { err, source: this.opts.source },
          'partition map watch: cannot load the stored map; will retry',
        );
      }
      this.lastFailure = failure;
      return;
    }
    if (this.lastFailure !== undefined) {
      this.opts.log.info({ source: this.opts.source }, 'partition map watch: stored map readable again');
      this.lastFailure = undefined;
    }
    if (!map || this.closed) return;
    if (map.epoch < this.highestSeen && map.epoch !== this.warnedBackwards) {
      this.warnedBackwards = map.epoch;
      // Someone replaced the stored map with an older one (e.g. restored a backup); listeners ignore it.
      this.opts.log.warn(
        { source: this.opts.source, storedEpoch: map.epoch, highestSeen: this.highestSeen },
        'partition map watch: stored epoch went backwards; ignoring',
      );
    }
    this.highestSeen = Math.max(this.highestSeen, map.epoch);
    for (const entry of [...this.entries]) {
      if (map.epoch <= entry.lastEpoch || !this.entries.has(entry)) continue;
      entry.lastEpoch = map.epoch;
      try {
        entry.listener(map);
      } catch (err) {
        // A faulty listener must not stop the others nor the watcher.
        this.opts.log.error(
          { err, source: this.opts.source, epoch: map.epoch },
          'partition map watch: listener threw',
        );
      }
    }
  }
}

/** A store in memory: for tests and single-process setups. Same contract as the others. */
export class MemoryMetadataStore implements MetadataStore {
  private map: PartitionMap | undefined;
  private closed = false;
  private readonly hub: MapWatchHub;
  private readonly cluster: string | undefined;

  constructor(opts: { cluster?: string; pollIntervalMs?: number; log?: Logger } = {}) {
    this.cluster = opts.cluster;
    this.hub = new MapWatchHub({
      load: () => this.load(),
      pollIntervalMs: opts.pollIntervalMs ?? 1000,
      source: 'memory',
      log: opts.log ?? createLogger('metadata-store'),
    });
  }

  async load(): Promise<PartitionMap | undefined> {
    this.ensureOpen();
    return this.map;
  }

  async compareAndSet(map: PartitionMap, expectedEpoch: number | undefined): Promise<boolean> {
    this.ensureOpen();
    const clean = checkCompareAndSetArgs(map, expectedEpoch, this.cluster);
    if ((this.map?.epoch ?? 0) !== (expectedEpoch ?? 0)) return false;
    this.map = clean;
    this.hub.trigger(clean.epoch);
    return true;
  }

  watch(listener: (map: PartitionMap) => void): () => void {
    return this.hub.add(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.hub.close();
  }

  private ensureOpen(): void {
    if (this.closed) throw new MetadataError('closed', 'memory metadata store is closed');
  }
}

export interface PartitionMapHolderEvents {
  change: [map: PartitionMap, previous: PartitionMap | undefined];
}

export interface PartitionMapHolderOptions {
  /** where refresh() and start() load from */
  readonly store?: MetadataStore;
  readonly log?: Logger;
  /** refuse maps of another cluster; when absent, the first map accepted fixes the cluster */
  readonly cluster?: string;
}

/**
 * Holds the newest map seen; accept() ignores maps whose epoch is not newer
 * than the one held, so a component never goes back (docs/design.md, "Metadata: ConfigMap and Redis": nobody acts on
 * an epoch older than the one it holds). Emits 'change' with (map, previous).
 *
 * Typical use: `const maps = await PartitionMapHolder.follow(store, log)`, then
 * `maps.on('change', ...)`, `maps.current()`, and `maps.refresh(theirEpoch)`
 * when a peer refuses a request with a newer epoch.
 */
export class PartitionMapHolder extends EventEmitter<PartitionMapHolderEvents> {
  private map: PartitionMap | undefined;
  private readonly store: MetadataStore | undefined;
  private readonly log: Logger | undefined;
  private readonly cluster: string | undefined;
  private unsubscribe: (() => void) | undefined;
  private inflight: Promise<PartitionMap | undefined> | undefined;
  private queued: Promise<PartitionMap | undefined> | undefined;
  /** the newest epoch a refresh was asked to reach, for the next load */
  private wanted = 0;

  constructor(opts: PartitionMapHolderOptions = {}) {
    super();
    this.store = opts.store;
    this.log = opts.log;
    this.cluster = opts.cluster;
  }

  /** Loads from the store and subscribes; rejects (and unsubscribes) when the first load fails. */
  static async follow(store: MetadataStore, log?: Logger): Promise<PartitionMapHolder> {
    const holder = new PartitionMapHolder({ store, log });
    await holder.start();
    return holder;
  }

  current(): PartitionMap | undefined {
    return this.map;
  }

  /** The held epoch, 0 when no map is held: what requests carry. */
  epoch(): number {
    return this.map?.epoch ?? 0;
  }

  /** Takes `map` if it is newer than the one held; returns whether it did. */
  accept(map: PartitionMap): boolean {
    const previous = this.map;
    const cluster = this.cluster ?? previous?.cluster;
    if (cluster !== undefined && map.cluster !== cluster) {
      this.log?.warn(
        { cluster, mapCluster: map.cluster, epoch: map.epoch },
        'ignoring a map of another cluster',
      );
      return false;
    }
    if (previous && map.epoch <= previous.epoch) {
      if (map.epoch < previous.epoch) {
        this.log?.debug({ epoch: map.epoch, held: previous.epoch }, 'ignoring an older partition map');
      }
      return false;
    }
    this.map = map;
    this.log?.info({ epoch: map.epoch, previousEpoch: previous?.epoch ?? 0 }, 'partition map changed');
    this.emit('change', map, previous);
    return true;
  }

  /**
   * Subscribes to the store, then loads, so no change between the two is
   * missed. Idempotent. Rejects and unsubscribes when the load fails.
   */
  async start(): Promise<PartitionMap | undefined> {
    const store = this.requireStore();
    const subscribing = !this.unsubscribe;
    if (subscribing) this.unsubscribe = store.watch((map) => this.accept(map));
    try {
      return await this.refresh();
    } catch (err) {
      if (subscribing) this.stop();
      throw err;
    }
  }

  /** Stops following the store; the held map stays. */
  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /**
   * Reloads from the store and returns the newest map held (which may be newer
   * than the one loaded). With `minEpoch` (the epoch a peer claims), no I/O
   * happens when that epoch is already held, and otherwise the store is told
   * to read past a copy older than it. Concurrent calls share loads: at
   * most one runs and one waits, so a burst of stale-epoch replies costs two
   * loads, and every caller sees a load that started after its call.
   */
  refresh(minEpoch?: number): Promise<PartitionMap | undefined> {
    if (minEpoch !== undefined && this.epoch() >= minEpoch) return Promise.resolve(this.map);
    if (minEpoch !== undefined && minEpoch > this.wanted) this.wanted = minEpoch;
    if (!this.inflight) {
      this.inflight = this.loadOnce().finally(() => {
        this.inflight = undefined;
      });
      return this.inflight;
    }
    if (!this.queued) {
      // The running load may have started before the caller's news: run one more after it.
      // Its outcome (value or error) belongs to its own callers; this one only waits for it to end.
      const next = (): Promise<PartitionMap | undefined> => {
        this.queued = undefined;
        return this.refresh();
      };
      this.queued = this.inflight.then(next, next);
    }
    return this.queued;
  }

  /** Resolves with the held map once its epoch reaches `minEpoch`; rejects with MetadataError('timeout') after timeoutMs. */
  waitForEpoch(minEpoch: number, timeoutMs: number): Promise<PartitionMap> {
    const held = this.map;
    if (held && held.epoch >= minEpoch) return Promise.resolve(held);
    return new Promise<PartitionMap>((resolve, reject) => {
      const onChange = (map: PartitionMap): void => {
        if (map.epoch < minEpoch) return;
        clearTimeout(timer);
        this.off('change', onChange);
        resolve(map);
      };
      const timer = setTimeout(() => {
        this.off('change', onChange);
        reject(
          new MetadataError('timeout', `no partition map of epoch >= ${minEpoch} within ${timeoutMs} ms`, {
            minEpoch,
            held: this.epoch(),
            timeoutMs,
          }),
        );
      }, timeoutMs);
      this.on('change', onChange);
    });
  }

  private async loadOnce(): Promise<PartitionMap | undefined> {
    // The epoch a peer claimed tells a mirrored store its fast copy is behind (docs/design.md, "Metadata: ConfigMap and Redis": nodes
    // follow both copies, so one may hold an epoch the fast copy has not got yet).
    const wanted = this.wanted > this.epoch() ? this.wanted : undefined;
    this.wanted = 0;
    const loaded = await this.requireStore().load(wanted);
    if (loaded) this.accept(loaded);
    return this.map;
  }

  private requireStore(): MetadataStore {
    if (!this.store) throw new MetadataError('invalid', 'this PartitionMapHolder has no store to load from');
    return this.store;
  }
}
