import { KvError } from '../common/errors';
import { diffLeaves, leafOf } from '../common/hash-tree';
import { compareVersions } from '../common/hlc';
import { decodeRecord } from '../common/record';
import type { RecordWrite } from '../common/rpc-protocol';
import type { AntiEntropyMetrics } from './anti-entropy-metrics';
import type { HashTrees } from './hash-trees';
import { pastGrace } from './purge';
import type { TokenBucket } from './rate-limiter';
import { RepairProtocolError, type BucketItem, type RepairPeer } from './repair-peer';
import type { Storage, StoredWrite } from './storage';

/**
 * One partition reconciled with one other replica: roots, then leaves, then the
 * records of each differing leaf. The peer's newer records are applied here
 * under the merge rule; ours that it lacks or holds older are pushed to it with
 * a `write`. Newer versions win, so order does not matter. Throttled by the
 * node's keys-per-second token bucket.
 */

/** The node is stopping: a pass gives up where it is, and what it did not finish does not count. */
export class PassAborted extends KvError {
  constructor() {
    super('aborted', 'anti-entropy is stopping');
  }
}

export interface PeerSyncOptions {
  readonly storage: Storage;
  readonly trees: HashTrees;
  readonly limiter: TokenBucket;
  readonly metrics: AntiEntropyMetrics;
  readonly graceMs: number;
  readonly now: () => number;
  /** aborted when the node stops (a fresh signal per start) */
  readonly signal: () => AbortSignal;
  /** records applied here (pulled) or at the peer (pushed), as each batch lands */
  readonly onRepaired: (direction: 'pulled' | 'pushed', records: number) => void;
}

/** Leaves fetched and reconciled together: bounds the memory a differing partition costs. */
const LEAVES_PER_ROUND = 8;
/** Records per write batch, and their bytes: a batch is one LMDB transaction or one RPC frame. */
const BATCH_RECORDS = 500;
const BATCH_BYTES = 8 * 1024 * 1024;

export class PeerSync {
  constructor(private readonly opts: PeerSyncOptions) {}

  /** Roots, then leaves, then the records of differing leaves. `agreed`: trees equal at the end. */
  async syncWithPeer(p: number, peer: RepairPeer): Promise<{ agreed: boolean }> {
    const { trees, metrics } = this.opts;
    const [theirRoot] = await peer.roots([p]);
    const equal = theirRoot.equals(trees.current(p).root());
    metrics.rangesCompared.inc({ level: 'partition', result: equal ? 'equal' : 'different' });
    if (equal) return { agreed: true };
    const theirLeaves = await peer.leaves(p);
    const differing = diffLeaves(trees.current(p).leaves(), theirLeaves);
    metrics.rangesCompared.inc({ level: 'leaf', result: 'different' }, differing.length);
    metrics.rangesCompared.inc({ level: 'leaf', result: 'equal' }, trees.leafCount - differing.length);
    for (let i = 0; i < differing.length; i += LEAVES_PER_ROUND) {
      if (this.opts.signal().aborted) throw new PassAborted();
      const leaves = differing.slice(i, i + LEAVES_PER_ROUND);
      const buckets = await Promise.all(leaves.map((b) => peer.bucket(p, b)));
      await this.reconcile(p, new Set(leaves), buckets.flat(), peer);
    }
    const [after] = await peer.roots([p]);
    return { agreed: after.equals(trees.current(p).root()) };
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
    const { storage, trees, graceMs, limiter, metrics } = this.opts;
    const now = this.opts.now();
    const seen = new Set<string>();
    const pull: StoredWrite[] = [];
    const push: RecordWrite[] = [];
    for (const { k, r } of theirs) {
      if (!leaves.has(leafOf(k, trees.leafCount))) {
        throw new RepairProtocolError(peer.id, 'bucket holds a key of another leaf', { partition: p });
      }
      seen.add(k.toString('latin1'));
      const their = decodeRecord(r);
      const localRaw = storage.getEncoded(p, k);
      if (!localRaw) {
        if (!pastGrace(their, graceMs, now)) pull.push({ partition: p, key: k, record: r });
        continue;
      }
      const c = compareVersions(their.version, decodeRecord(localRaw).version);
      if (c > 0) pull.push({ partition: p, key: k, record: r });
      else if (c < 0) push.push({ p, k, r: localRaw });
    }
    for (const k of trees.index.keys(p, leaves)) {
      if (seen.has(k.toString('latin1'))) continue;
      const raw = storage.getEncoded(p, k);
      if (!raw || pastGrace(decodeRecord(raw), graceMs, now)) continue;
      push.push({ p, k, r: raw });
    }
    for (const batch of batches(pull, (w) => w.key.length + w.record.length)) {
      await limiter.take(batch.length, this.opts.signal());
      const n = count(await storage.apply(batch));
      metrics.keysRepaired.inc({ direction: 'pulled' }, n);
      this.opts.onRepaired('pulled', n);
    }
    for (const batch of batches(push, (w) => w.k.length + w.r.length)) {
      await limiter.take(batch.length, this.opts.signal());
      const n = count(await peer.write(batch));
      metrics.keysRepaired.inc({ direction: 'pushed' }, n);
      this.opts.onRepaired('pushed', n);
    }
  }
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
