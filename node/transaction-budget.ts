/**
 * How many records the node's LMDB write transactions may hold between them. LMDB keeps every
 * page a transaction rewrote on its free list until two later transactions have committed, and
 * lmdb-js merges all transactions issued while one commits: a bulk load (a partition streamed in,
 * hints replayed, 1,000-record RPCs eight at a time) made 8,000-record transactions whose freed
 * pages were a fifth of the file. Under the budget a transaction holds at most `max` records
 * (a larger batch is split by the caller), so the free list stays a few MiB. Client writes, tens
 * of records in flight per node, never wait on it.
 */
export class TransactionBudget {
  private inFlight = 0;
  private readonly queue: { n: number; go: () => void }[] = [];

  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1)
      throw new RangeError(`transaction budget ${max} must be a positive integer`);
  }

  /** Takes room for `n` records at once if there is some and nobody waits before; else false. */
  tryAcquire(n: number): boolean {
    if (this.queue.length > 0 || !this.fits(n)) return false;
    this.inFlight += n;
    return true;
  }

  /** Resolves once room for `n` records is taken, after those who asked before (first come, first served). */
  acquire(n: number): Promise<void> {
    if (this.tryAcquire(n)) return Promise.resolve();
    return new Promise<void>((go) => this.queue.push({ n, go }));
  }

  /** Gives back room taken for `n` records (their transaction committed or failed). */
  release(n: number): void {
    this.inFlight -= n;
    while (this.queue.length > 0 && this.fits(this.queue[0].n)) {
      const next = this.queue.shift() as { n: number; go: () => void };
      this.inFlight += next.n;
      next.go();
    }
  }

  /** Records in transactions not yet committed. */
  get used(): number {
    return this.inFlight;
  }

  // An idle budget admits any batch, so one larger than `max` cannot wait forever.
  private fits(n: number): boolean {
    return this.inFlight === 0 || this.inFlight + n <= this.max;
  }
}
