import type { Logger } from '../common/logger';
import type { PartitionMap } from '../common/partition-map';
import type { AntiEntropyMetrics } from './anti-entropy-metrics';
import type { Storage } from './storage';

/**
 * The refill of an empty disk (its volume lost): a node the map lists with
 * peers refuses reads until each of its partitions has been synced with a peer
 * (the passes of node/repair-passes.ts do the syncing and report here). A
 * marker on disk keeps a refill that did not finish pending across a crash.
 */

/** Kept on disk while a refill has not finished, so a crash mid-refill resumes it. */
const REFILL_MARKER = Buffer.from('refill-pending');

export interface RefillOptions {
  readonly storage: Storage;
  readonly nodeId: string;
  readonly log: Logger;
  readonly metrics: AntiEntropyMetrics;
  /** retry unsynced partitions after this long (default 250 ms, doubling to 5 s) */
  readonly retryMs?: number;
}

/** The partitions `nodeId` replicates in `map`. */
export function partitionsOf(map: PartitionMap | undefined, nodeId: string): number[] {
  if (!map) return [];
  const out: number[] = [];
  for (const [p, owners] of map.partitions.entries()) if (owners.includes(nodeId)) out.push(p);
  return out;
}

export class Refill {
  private readonly state: ReturnType<Storage['subDatabase']>;
  /** undefined: not needed (or done); else the refill in progress */
  private refill: { startedAt: number; synced: Set<number>; keys: number; retryMs: number } | undefined;
  private refillPending: boolean;

  constructor(private readonly opts: RefillOptions) {
    this.state = opts.storage.subDatabase('anti-entropy');
    this.refillPending = opts.storage.freshDisk || this.state.get(REFILL_MARKER) !== undefined;
    opts.metrics.refilling.set(this.refillPending ? 1 : 0);
  }

  /** The disk is (still) to be refilled: reads are refused. */
  get pending(): boolean {
    return this.refillPending;
  }

  /** A refill has begun and not finished. */
  get active(): boolean {
    return this.refill !== undefined;
  }

  isSynced(p: number): boolean {
    return this.refill?.synced.has(p) ?? false;
  }

  markSynced(p: number): void {
    this.refill?.synced.add(p);
  }

  /** Records pulled from peers by the refill. */
  addKeys(n: number): void {
    if (this.refill) this.refill.keys += n;
  }

  /** When to retry, and which partitions: those not synced yet. Undefined when no refill is active. */
  nextRetry(map: PartitionMap | undefined): { delayMs: number; partitions: Set<number> } | undefined {
    const refill = this.refill;
    if (!refill) return undefined;
    const delayMs = refill.retryMs;
    refill.retryMs = Math.min(5000, refill.retryMs * 2);
    return {
      delayMs,
      partitions: new Set(partitionsOf(map, this.opts.nodeId).filter((p) => !refill.synced.has(p))),
    };
  }

  notReadyReason(map: PartitionMap | undefined): string | undefined {
    if (!this.refillPending) return undefined;
    const mine = partitionsOf(map, this.opts.nodeId);
    const synced = this.refill ? mine.filter((p) => this.refill?.synced.has(p)).length : 0;
    return `refilling an empty disk from peers: ${synced} of ${mine.length} partitions synced`;
  }

  beginIfNeeded(map: PartitionMap): void {
    if (!this.refillPending || this.refill) return;
    const mine = partitionsOf(map, this.opts.nodeId);
    const withPeers = mine.filter((p) => map.partitions[p].length > 1);
    if (withPeers.length === 0) {
      this.end('no partition of this node has another replica');
      return;
    }
    this.state.putSync(REFILL_MARKER, Buffer.from(new Date().toISOString()));
    this.refill = {
      startedAt: Date.now(),
      synced: new Set(),
      keys: 0,
      retryMs: this.opts.retryMs ?? 250,
    };
    this.opts.log.info(
      { partitions: mine.length, generation: this.opts.storage.identity.generation },
      'refill started: empty disk, reads refused until every partition is synced with a peer',
    );
  }

  finishIfDone(map: PartitionMap): void {
    const refill = this.refill;
    if (!refill) return;
    const mine = partitionsOf(map, this.opts.nodeId);
    if (!mine.every((p) => refill.synced.has(p) || map.partitions[p].length === 1)) return;
    this.opts.log.info(
      { partitions: mine.length, keys: refill.keys, ms: Date.now() - refill.startedAt },
      'refill finished: serving reads',
    );
    this.end();
  }

  private end(reason?: string): void {
    this.state.removeSync(REFILL_MARKER);
    this.refill = undefined;
    this.refillPending = false;
    this.opts.metrics.refilling.set(0);
    if (reason) this.opts.log.info({ reason }, 'no refill needed');
  }
}
