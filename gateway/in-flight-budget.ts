/**
 * What the gateway holds at once (docs/design.md, "Overload"): request bodies in flight, in bytes,
 * and requests in flight. Every request takes its share before it is read (its declared length, or
 * its route's limit when it streams chunks, plus a fixed overhead) and gives it back when its
 * response is done. Past the bound a request waits in line for a short while, and is shed with a
 * 503 and Retry-After if room does not come: an overload is answered at once, not by timeouts once
 * memory is gone. Pure bookkeeping, no I/O: the listener does the answering.
 */
export interface InFlightLimits {
  /** request bodies held at once, in bytes (each costs about four times that in memory: copies per replica) */
  readonly maxBytes: number;
  readonly maxRequests: number;
  /** how long a request waits for room before it is shed */
  readonly queueMs: number;
}

export const DEFAULT_IN_FLIGHT_LIMITS: InFlightLimits = {
  maxBytes: 64 * 1024 * 1024,
  maxRequests: 4096,
  queueMs: 100,
};

/** What any request costs besides its body: headers, parsing, the reply. */
export const REQUEST_OVERHEAD_BYTES = 4 * 1024;

interface Waiter {
  readonly bytes: number;
  readonly resolve: (admitted: boolean) => void;
  timer: NodeJS.Timeout | undefined;
}

export class InFlightBudget {
  private bytes = 0;
  private requests = 0;
  private readonly line: Waiter[] = [];

  constructor(readonly limits: InFlightLimits) {}

  /** Bytes and requests held now, for the metrics. */
  held(): { bytes: number; requests: number; waiting: number } {
    return { bytes: this.bytes, requests: this.requests, waiting: this.line.length };
  }

  /**
   * Takes `bytes` now if they fit (and nobody waits ahead); otherwise waits up to queueMs in line.
   * Resolves true once taken (give them back with release), false when shed. A request larger than
   * the whole budget is taken only when nothing else is held, so it is never refused outright.
   */
  acquire(bytes: number): Promise<boolean> | boolean {
    if (this.line.length === 0 && this.fits(bytes)) {
      this.take(bytes);
      return true;
    }
    if (this.limits.queueMs <= 0) return false;
    return new Promise<boolean>((resolve) => {
      const w: Waiter = { bytes, resolve, timer: undefined };
      w.timer = setTimeout(() => {
        const i = this.line.indexOf(w);
        if (i >= 0) this.line.splice(i, 1);
        resolve(false);
        // The head of the line may fit now that this one left it.
        this.admitWaiting();
      }, this.limits.queueMs);
      this.line.push(w);
    });
  }

  release(bytes: number): void {
    this.bytes -= bytes;
    this.requests--;
    this.admitWaiting();
  }

  private fits(bytes: number): boolean {
    if (this.requests >= this.limits.maxRequests) return false;
    return this.bytes + bytes <= this.limits.maxBytes || this.bytes === 0;
  }

  private take(bytes: number): void {
    this.bytes += bytes;
    this.requests++;
  }

  /** In order: the first that does not fit holds the others back, so a large body is not starved. */
  private admitWaiting(): void {
    while (this.line.length > 0 && this.fits(this.line[0].bytes)) {
      const w = this.line.shift() as Waiter;
      clearTimeout(w.timer);
      this.take(w.bytes);
      w.resolve(true);
    }
  }
}
