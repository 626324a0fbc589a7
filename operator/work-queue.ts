import { errorMessage, KvError } from '../common/errors';
import type { Logger } from '../common/logger';

/**
 * The controller's work queue, as client-go's: keys, not events (a burst of changes to one
 * KVCluster costs one reconcile); one handler at a time per key (a reconcile never races another
 * of the same cluster), several keys in parallel; a failed key comes back after an exponential
 * backoff, a succeeding one after the delay it asks for.
 */

export interface HandlerResult {
  /** run the key again after this long (e.g. to look at something that changes by itself) */
  readonly requeueAfterMs?: number;
}

export interface WorkQueueOptions {
  readonly handler: (key: string) => Promise<HandlerResult | void>;
  readonly log: Logger;
  /** keys handled at once (default 4) */
  readonly concurrency?: number;
  /** first retry delay after a failure (default 200 ms), doubled per consecutive failure */
  readonly backoffBaseMs?: number;
  /** cap of the retry delay (default 60 s) */
  readonly backoffMaxMs?: number;
  /** called with the new depth whenever it changes (the queue-depth gauge) */
  readonly onDepthChange?: (depth: number) => void;
}

export class WorkQueue {
  /** keys waiting to run, in arrival order */
  private readonly pending = new Set<string>();
  /** keys whose handler is running */
  private readonly running = new Set<string>();
  /** keys added while running: run again when the current run ends */
  private readonly dirty = new Set<string>();
  private readonly delayed = new Map<string, NodeJS.Timeout>();
  private readonly failures = new Map<string, number>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly concurrency: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private stopped = false;
  private reportedDepth = 0;

  constructor(private readonly opts: WorkQueueOptions) {
    this.concurrency = opts.concurrency ?? 4;
    this.backoffBaseMs = opts.backoffBaseMs ?? 200;
    this.backoffMaxMs = opts.backoffMaxMs ?? 60_000;
  }

  /** Queues a key to run as soon as a worker is free (and no run of it is in progress). */
  add(key: string): void {
    if (this.stopped) return;
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    this.pending.add(key);
    this.pump();
    this.reportDepth();
  }

  /** Queues a key after a delay; an earlier delayed add of the key is replaced. */
  addAfter(key: string, delayMs: number): void {
    if (this.stopped) return;
    if (delayMs <= 0) return this.add(key);
    clearTimeout(this.delayed.get(key));
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    // The queue never keeps a process alive by itself: the controller's watches do.
    timer.unref();
    this.delayed.set(key, timer);
  }

  /** Stops taking work and waits for the handlers running now. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.pending.clear();
    this.dirty.clear();
    this.reportDepth();
    await Promise.all([...this.inFlight]);
  }

  /** Keys waiting or running: for tests. */
  get length(): number {
    return this.pending.size + this.running.size;
  }

  /**
   * Keys waiting for a worker, as client-go's workqueue depth: not those running (a change to one
   * of them is one more run once it ends, counted then), nor those whose retry or requeue is
   * scheduled for later (they come in when it is due). A depth that stays up means reconciles
   * cannot keep up with the changes.
   */
  get depth(): number {
    return this.pending.size;
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.concurrency) {
      const key = this.pending.values().next().value;
      if (key === undefined) return;
      this.pending.delete(key);
      this.running.add(key);
      const run = this.run(key).finally(() => {
        this.inFlight.delete(run);
        this.running.delete(key);
        if (this.dirty.delete(key)) this.pending.add(key);
        this.pump();
        this.reportDepth();
      });
      this.inFlight.add(run);
    }
  }

  private reportDepth(): void {
    const depth = this.depth;
    if (depth === this.reportedDepth) return;
    this.reportedDepth = depth;
    this.opts.onDepthChange?.(depth);
  }

  private async run(key: string): Promise<void> {
    try {
      const result = await this.opts.handler(key);
      this.failures.delete(key);
      const after = result?.requeueAfterMs;
      if (after !== undefined) this.addAfter(key, after);
    } catch (err) {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      const delay = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** Math.min(failures - 1, 30));
      // Reported here, once per failure, with the retry it leads to; the handler does not log it again.
      // A KvError (a failed API call) says all in its message, code and context: its cause, the
      // client's exception, carries the whole HTTP response twice over. Anything else is a bug: stack.
      const detail = err instanceof KvError ? { code: err.code, context: err.context } : { err };
      this.opts.log.warn(
        { key, ...detail, failures, retryInMs: delay },
        `reconcile failed: ${errorMessage(err)}; will retry`,
      );
      this.addAfter(key, delay);
    }
  }
}
