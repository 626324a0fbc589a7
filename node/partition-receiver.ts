import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import type { PartitionMap, PartitionMove } from '../common/partition-map';
import { RpcError, type RpcClient } from '../common/rpc-client';
import type { IncomingMoveState, IncomingMoveStatus } from '../common/rpc-protocol';
import { TokenBucket } from './rate-limiter';
import type { Storage } from './storage';

/**
 * The receiving side of a partition move (docs/design.md, "Rebalancing", steps 3–4).
 * For every move of the map whose `to` is this node, it copies the partition
 * from the move's source by range scan, in batches, throttled in bytes per
 * second, remembering the last key copied on disk so a restart resumes there.
 * Meanwhile coordinators dual-write to this node; versions decide, so the order
 * in which a record arrives by stream or by write does not matter.
 *
 * Once copied, it reconciles the partition with the source by hash tree (the
 * anti-entropy exchange), which picks up writes that raced the scan, and
 * reports the move `ready` while the trees are equal. The map owner checks the
 * trees itself before it switches; until the switch the source keeps its copy.
 */

export interface PartitionReceiverOptions {
  readonly storage: Storage;
  readonly nodeId: string;
  readonly map: () => PartitionMap | undefined;
  readonly peer: (nodeId: string) => RpcClient | undefined;
  /** anti-entropy of one partition with one node; true when the trees are equal afterwards */
  readonly sync: (partition: number, nodeId: string) => Promise<boolean>;
  readonly log: Logger;
  readonly registry: Registry;
  /** stream bandwidth of this node, all moves together (default 32 MiB/s) */
  readonly maxBytesPerSecond?: number;
  readonly concurrency?: number;
  /** a ready move re-checks its tree against the source this often (default 2 s) */
  readonly recheckMs?: number;
  /** a peer said our map is stale: resolves once a newer map is held (or the reload failed) */
  readonly onStaleEpoch?: (theirEpoch?: number) => Promise<unknown>;
  /** streaming at once, partitions (default 2) */
}

export const DEFAULT_MOVE_MAX_BYTES_PER_SECOND = 32 * 1024 * 1024;
const BATCH_KEYS = 1000;
const BATCH_BYTES = 1024 * 1024;

/** What survives a restart, per partition being received. */
interface SavedMove {
  readonly from: string;
  /** last key copied, base64; absent before the first batch */
  readonly after?: string;
  readonly keys: number;
  readonly bytes: number;
  readonly streamed: boolean;
}

interface SlotWaiter {
  grant(): void;
  cancel(): void;
}

interface Task {
  readonly move: PartitionMove;
  saved: SavedMove;
  state: IncomingMoveState;
  error?: string;
  readonly abort: AbortController;
  done: Promise<void>;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export class PartitionReceiver {
  private readonly tasks = new Map<number, Task>();
  private readonly db: ReturnType<Storage['subDatabase']>;
  private readonly limiter: TokenBucket;
  private readonly concurrency: number;
  private readonly recheckMs: number;
  private streamingSlots: number;
  private readonly slotWaiters: SlotWaiter[] = [];
  private started = false;
  private readonly totals = { keys: 0, bytes: 0 };
  private readonly metrics: {
    moves: Gauge;
    keys: Counter;
    bytes: Counter;
    errors: Counter;
  };

  constructor(private readonly opts: PartitionReceiverOptions) {
    this.db = opts.storage.subDatabase('incoming-moves');
    const rate = opts.maxBytesPerSecond ?? DEFAULT_MOVE_MAX_BYTES_PER_SECOND;
    // A burst of one second's worth; a batch larger than that puts the bucket in debt and waits.
    this.limiter = new TokenBucket(rate);
    this.concurrency = opts.concurrency ?? 2;
    this.streamingSlots = this.concurrency;
    this.recheckMs = opts.recheckMs ?? 2000;
    const tasks = this.tasks;
    this.metrics = {
      moves: new Gauge({
        name: 'kvstore_node_moves_incoming',
        help: 'Partition moves filling a partition on this node, by state',
        labelNames: ['state'],
        registers: [opts.registry],
        collect() {
          const counts: Record<IncomingMoveState, number> = { streaming: 0, syncing: 0, ready: 0 };
          for (const t of tasks.values()) counts[t.state]++;
          for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
        },
      }),
      keys: new Counter({
        name: 'kvstore_node_move_keys_streamed_total',
        help: 'Records copied to this node by partition moves',
        registers: [opts.registry],
      }),
      bytes: new Counter({
        name: 'kvstore_node_move_bytes_streamed_total',
        help: 'Bytes (keys plus encoded records) copied to this node by partition moves',
        registers: [opts.registry],
      }),
      errors: new Counter({
        name: 'kvstore_node_move_errors_total',
        help: 'Failed stream or sync steps of incoming partition moves (retried with backoff)',
        registers: [opts.registry],
      }),
    };
  }

  start(): void {
    this.started = true;
    this.onMapChange();
  }

  /** Starts a task for each new incoming move and stops those the map no longer lists. */
  onMapChange(): void {
    if (!this.started) return;
    const map = this.opts.map();
    const wanted = new Map<number, PartitionMove>();
    for (const m of map?.moves ?? []) if (m.to === this.opts.nodeId) wanted.set(m.partition, m);
    for (const [p, task] of this.tasks) {
      const w = wanted.get(p);
      if (!w || w.from !== task.move.from) {
        task.abort.abort();
        this.tasks.delete(p);
        // Switched (we are a replica now) or cancelled: the resume point is of no use any more.
        this.db.removeSync(partitionKey(p));
      }
    }
    for (const [p, move] of [...wanted].sort((a, b) => a[0] - b[0])) {
      if (this.tasks.has(p)) continue;
      const saved = this.load(p, move.from);
      const task: Task = {
        move,
        saved,
        state: saved.streamed ? 'syncing' : 'streaming',
        abort: new AbortController(),
        done: Promise.resolve(),
      };
      this.tasks.set(p, task);
      task.done = this.run(task).catch((err: unknown) =>
        this.opts.log.error({ err, partition: p }, 'incoming move task failed'),
      );
    }
    // State of moves that ended while the node was down.
    for (const { key } of this.db.getRange({})) {
      const p = Buffer.from(key).readUInt16BE(0);
      if (!wanted.has(p)) this.db.removeSync(key);
    }
  }

  status(): IncomingMoveStatus[] {
    return [...this.tasks.values()].map((t) => ({
      partition: t.move.partition,
      from: t.move.from,
      state: t.state,
      keys: t.saved.keys,
      bytes: t.saved.bytes,
      ...(t.error ? { error: t.error } : {}),
    }));
  }

  /** Records and bytes copied by moves since this process started. */
  streamed(): { keys: number; bytes: number } {
    return { ...this.totals };
  }

  async stop(): Promise<void> {
    this.started = false;
    const tasks = [...this.tasks.values()];
    for (const t of tasks) t.abort.abort();
    for (const w of this.slotWaiters.splice(0)) w.cancel();
    await Promise.all(tasks.map((t) => t.done));
    this.tasks.clear();
  }

  private load(p: number, from: string): SavedMove {
    const raw = this.db.get(partitionKey(p));
    if (raw) {
      try {
        const saved = JSON.parse(Buffer.from(raw).toString('utf8')) as SavedMove;
        if (saved.from === from) return saved;
      } catch (err) {
        this.opts.log.warn({ err, partition: p }, 'unreadable move state: streaming the partition again');
      }
    }
    return { from, keys: 0, bytes: 0, streamed: false };
  }

  private save(p: number, saved: SavedMove): void {
    // Not synced on its own: it commits with the next write; a crash at worst copies a batch again.
    void this.db.put(partitionKey(p), Buffer.from(JSON.stringify(saved)));
  }

  private async run(task: Task): Promise<void> {
    const { partition: p, from } = task.move;
    const signal = task.abort.signal;
    let backoffMs = 250;
    while (!signal.aborted) {
      try {
        if (!task.saved.streamed) {
          await this.streamAll(task);
        } else {
          task.state = task.state === 'ready' ? 'ready' : 'syncing';
          const agreed = await this.opts.sync(p, from);
          if (signal.aborted) return;
          if (agreed && task.state !== 'ready') {
            this.opts.log.info({ partition: p, from, keys: task.saved.keys }, 'incoming move ready');
          }
          task.state = agreed ? 'ready' : 'syncing';
          await sleep(agreed ? this.recheckMs : 100, signal);
        }
        task.error = undefined;
        backoffMs = 250;
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof RpcError && err.remote?.code === 'stale_epoch') {
          // The source saw a switch before we did (one epoch per switch): reload and go on at once,
          // unless the reload brought nothing newer (then back off like any failure).
          const held = this.opts.map()?.epoch ?? 0;
          await this.opts.onStaleEpoch?.(err.remote.epoch).catch(() => undefined);
          if ((this.opts.map()?.epoch ?? 0) > held) continue;
        }
        task.error = errorMessage(err);
        this.metrics.errors.inc();
        this.opts.log.warn(
          { partition: p, from, err: task.error, retryInMs: backoffMs },
          'incoming move step failed',
        );
        await sleep(backoffMs, signal);
        backoffMs = Math.min(5000, backoffMs * 2);
      }
    }
  }

  /** Copies the rest of the partition from the source, holding one of the streaming slots. */
  private async streamAll(task: Task): Promise<void> {
    const signal = task.abort.signal;
    if (!(await this.acquireSlot(signal))) return;
    try {
      task.state = 'streaming';
      while (!task.saved.streamed && !signal.aborted) await this.streamBatch(task);
    } finally {
      this.releaseSlot();
    }
    if (task.saved.streamed) {
      task.state = 'syncing';
      this.opts.log.info(
        {
          partition: task.move.partition,
          from: task.move.from,
          keys: task.saved.keys,
          bytes: task.saved.bytes,
        },
        'partition streamed; reconciling with the source',
      );
    }
  }

  private async streamBatch(task: Task): Promise<void> {
    const { partition: p, from } = task.move;
    const client = this.opts.peer(from);
    if (!client) throw new RpcError('unavailable', from, `no connection to ${from}`);
    const after = task.saved.after === undefined ? undefined : Buffer.from(task.saved.after, 'base64');
    const reply = await client.call({
      op: 'scan',
      p,
      ...(after ? { after } : {}),
      limit: BATCH_KEYS,
      maxBytes: BATCH_BYTES,
    });
    if (
      !Array.isArray(reply?.items) ||
      typeof reply.more !== 'boolean' ||
      !reply.items.every((i) => Buffer.isBuffer(i?.k) && Buffer.isBuffer(i?.r))
    ) {
      throw new RpcError('remote', from, 'malformed scan reply');
    }
    let bytes = 0;
    for (const i of reply.items) bytes += i.k.length + i.r.length;
    await this.limiter.take(bytes, task.abort.signal);
    if (task.abort.signal.aborted) return;
    if (reply.items.length > 0) {
      await this.opts.storage.apply(reply.items.map((i) => ({ partition: p, key: i.k, record: i.r })));
    }
    const last = reply.items[reply.items.length - 1];
    task.saved = {
      from,
      after: last ? last.k.toString('base64') : task.saved.after,
      keys: task.saved.keys + reply.items.length,
      bytes: task.saved.bytes + bytes,
      streamed: !reply.more,
    };
    this.save(p, task.saved);
    this.totals.keys += reply.items.length;
    this.totals.bytes += bytes;
    this.metrics.keys.inc(reply.items.length);
    this.metrics.bytes.inc(bytes);
  }

  /** False when the task was stopped while waiting: it holds no slot then. */
  private acquireSlot(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    if (this.streamingSlots > 0) {
      this.streamingSlots--;
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve) => {
      const waiter: SlotWaiter = {
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(true);
        },
        cancel: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(false);
        },
      };
      const onAbort = (): void => {
        const i = this.slotWaiters.indexOf(waiter);
        if (i >= 0) this.slotWaiters.splice(i, 1);
        resolve(false);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.slotWaiters.push(waiter);
    });
  }

  /** Hands the slot straight to the longest waiting task, first come first served. */
  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next) next.grant();
    else this.streamingSlots++;
  }
}

function partitionKey(p: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(p);
  return b;
}
