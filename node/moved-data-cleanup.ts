import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../common/logger';
import type { PartitionMap } from '../common/partition-map';
import type { Storage } from './storage';

/**
 * Step 5 of a move (docs/design.md, "Rebalancing"): the old replica deletes the
 * partition it gave away, but only after a grace period during which it has
 * been neither a replica nor a move's target in every map it saw. Until then
 * the copy stays: a coordinator still on the epoch before the switch may read
 * it, and an operator who sees something wrong can still move it back.
 */

export interface MovedDataCleanupOptions {
  readonly storage: Storage;
  readonly nodeId: string;
  readonly map: () => PartitionMap | undefined;
  readonly log: Logger;
  readonly registry: Registry;
  /** how long a partition stays on disk after this node stopped holding it (default 10 min) */
  readonly graceMs?: number;
  /** how often held data is checked against the map (default: half the grace, within 1..30 s) */
  readonly checkIntervalMs?: number;
  readonly now?: () => number;
}

export const DEFAULT_MOVED_DATA_GRACE_MS = 10 * 60_000;
const DROP_BATCH = 1000;

export class MovedDataCleanup {
  /** partition → when this node was first seen holding it without being its replica or receiver */
  private readonly orphanSince = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly dropped: Counter;
  private readonly graceMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: MovedDataCleanupOptions) {
    this.graceMs = opts.graceMs ?? DEFAULT_MOVED_DATA_GRACE_MS;
    this.now = opts.now ?? Date.now;
    this.dropped = new Counter({
      name: 'kvstore_node_moved_records_dropped_total',
      help: 'Records deleted from partitions this node gave away, after the clean-up grace period',
      registers: [opts.registry],
    });
  }

  start(): void {
    this.stopped = false;
    const every = this.opts.checkIntervalMs ?? Math.min(30_000, Math.max(1000, this.graceMs / 2));
    this.timer = setInterval(() => this.check(), every);
    this.timer.unref();
    this.check();
  }

  /** Runs a check now (on every map change), or right after the running one. */
  check(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.checkOnce()
      .catch((err: unknown) => this.opts.log.error({ err }, 'moved-data clean-up failed'))
      .finally(() => {
        this.running = undefined;
        if (this.again && !this.stopped) {
          this.again = false;
          this.check();
        }
      });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /** Partitions with data on disk that this node neither replicates nor receives. */
  orphans(): number[] {
    return [...this.orphanSince.keys()].sort((a, b) => a - b);
  }

  private keeps(p: number): boolean {
    const map = this.opts.map();
    // No map: we cannot tell what is ours, so everything is.
    if (!map) return true;
    const id = this.opts.nodeId;
    return (
      map.partitions[p]?.includes(id) === true || map.moves.some((m) => m.partition === p && m.to === id)
    );
  }

  private async checkOnce(): Promise<void> {
    const map = this.opts.map();
    if (!map) return;
    const now = this.now();
    for (let p = 0; p < map.partitionCount; p++) {
      if (this.stopped) return;
      if (this.keeps(p) || this.opts.storage.scan(p, { limit: 1 }).length === 0) {
        this.orphanSince.delete(p);
        continue;
      }
      const since = this.orphanSince.get(p);
      if (since === undefined) {
        this.orphanSince.set(p, now);
        this.opts.log.info(
          { partition: p, graceMs: this.graceMs },
          'holding a partition this node no longer replicates; deleting it after the grace period',
        );
        continue;
      }
      if (now - since >= this.graceMs) await this.drop(p);
    }
  }

  private async drop(p: number): Promise<void> {
    let total = 0;
    for (;;) {
      // The map may hand the partition back while we delete: stop at once, keep the rest.
      if (this.stopped || this.keeps(p)) {
        this.orphanSince.delete(p);
        this.opts.log.info({ partition: p, dropped: total }, 'clean-up of a moved partition stopped');
        return;
      }
      const batch = this.opts.storage.scan(p, { limit: DROP_BATCH });
      if (batch.length === 0) break;
      const n = await this.opts.storage.drop(p, batch);
      total += n;
      this.dropped.inc(n);
      // Every record in the batch changed under us: something writes here; look again next check.
      if (n === 0) return;
    }
    this.orphanSince.delete(p);
    this.opts.log.info({ partition: p, records: total }, 'deleted a partition this node gave away');
  }
}
