import type { Logger } from '../common/logger';
import type { RequestLabels } from './api-request';
import type { GatewayMetrics } from './metrics';

/** What one answered request is recorded by. */
export interface RequestRecord {
  readonly rid: string;
  readonly method: string;
  readonly status: number;
  readonly labels: RequestLabels;
  /** process.hrtime.bigint() when the request arrived */
  readonly started: bigint;
}

/**
 * The one place the gateway records its public requests: the request counter, the latency histogram and
 * the per-request log line, for both adapters; and the log of errors nobody meant for the client.
 */
export class RequestObserver {
  // Labelled children looked up once per label set (prom-client still validates and hashes the labels on each
  // observation, ~0.5 µs: measured, not worth metric code of our own; bench/RESULTS.md).
  private readonly counters = new Map<string, { inc(): void }>();
  private readonly timers = new Map<string, { observe(v: number): void }>();

  constructor(
    private readonly metrics: Pick<GatewayMetrics, 'httpRequests' | 'httpDuration' | 'rateLimited'>,
    private readonly log: Logger,
  ) {}

  /** A request answered (or given up on) by a route: counted, timed and logged. */
  answered(r: RequestRecord): void {
    const { op, consistency } = r.labels;
    const { method, status, rid } = r;
    this.counter(op, method, status).inc();
    const outcome = status < 400 ? 'ok' : status < 500 ? 'client_error' : 'server_error';
    const tkey = `${op} ${outcome} ${consistency}`;
    let t = this.timers.get(tkey);
    if (!t) this.timers.set(tkey, (t = this.metrics.httpDuration.labels(op, outcome, consistency)));
    t.observe(Number(process.hrtime.bigint() - r.started) / 1e9);
    if (status >= 500) this.log.warn({ rid, method, op, status }, 'request failed');
    else this.log.debug({ rid, method, op, status }, 'request');
  }

  /** A request refused by the per-connection cap before any route saw it: counted (not timed) and logged. */
  connectionCapped(r: {
    rid: string;
    method: string;
    address: string | undefined;
    inFlight: number;
    max: number;
  }) {
    this.counter('other', r.method, 429).inc();
    this.metrics.rateLimited.inc({ scope: 'connection' });
    this.log.warn(
      { rid: r.rid, address: r.address, inFlight: r.inFlight, max: r.max },
      'too many requests in flight on one connection',
    );
  }

  /** An error nobody meant for the client (answered as 500): logged in full, with where it happened. */
  unexpectedError(err: unknown, where: { rid?: string; method: string | undefined; path?: string }): void {
    this.log.error({ err, ...where }, 'unexpected error');
  }

  /** What failed after express's router gave up on a request (no route could even see it). */
  unexpectedOutsideRouter(err: unknown, method: string | undefined): void {
    this.log.error({ err, method }, 'unexpected error outside the router');
  }

  private counter(op: string, method: string, status: number): { inc(): void } {
    const key = `${op} ${method} ${status}`;
    let c = this.counters.get(key);
    if (!c) this.counters.set(key, (c = this.metrics.httpRequests.labels(op, method, String(status))));
    return c;
  }
}
