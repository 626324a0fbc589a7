import Redis from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { KvError, errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import { ApiError } from './api-error';
import type { GatewayMetrics } from './metrics';

/** Which limit refused a request: the one per API key or the one per client address. */
export type RateLimitScope = 'key' | 'address';

/** Where the counts live: Redis (shared by every gateway of the cluster) or this process's memory. */
export type RateLimitBackend = 'redis' | 'memory';

export type RateLimitDecision =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly scope: RateLimitScope; readonly retryAfterMs: number };

/** The metrics the limiter reports to (GatewayMetrics has them). */
export type RateLimitMetrics = Pick<
  GatewayMetrics,
  'rateLimited' | 'rateLimitBackend' | 'rateLimitFallbacks'
>;

export interface RequestRateLimiterOptions {
  /** namespaces the Redis keys (`kvstore:<cluster>:rl:key:<id>`), so clusters can share one Redis */
  readonly cluster: string;
  /** requests per window per API key id; 0 turns this limit off */
  readonly perKey: number;
  /** requests per window per client address; 0 turns this limit off */
  readonly perAddress: number;
  /** the window in whole seconds (rate-limiter-flexible's Redis store counts in whole seconds) */
  readonly windowSeconds: number;
  /**
   * Redis to share the counts through: a URL (the limiter opens and closes its own client) or a
   * client the caller owns (it should have `enableOfflineQueue: false`, or a call made while Redis
   * is away waits for it instead of falling back). Absent: memory only, per gateway.
   */
  readonly redis?: Redis | string;
  /** how long one Redis call may take before the memory limits answer instead (default 500 ms) */
  readonly redisTimeoutMs?: number;
  /** after a Redis error, how long to answer from memory before trying Redis again (default 1000 ms) */
  readonly redisRetryMs?: number;
  readonly metrics?: RateLimitMetrics;
  readonly log: Logger;
}

/** A limiter misconfigured by its caller (a bad flag value reaches here only through a bug in main). */
export class RateLimitConfigError extends KvError {
  constructor(message: string, context: Record<string, unknown> = {}) {
    super('rate_limit_config', message, context);
  }
}

/** One scope's limiters: the shared one (when there is Redis) and the per-process one. */
interface ScopeLimiters {
  readonly scope: RateLimitScope;
  readonly redis: RateLimiterRedis | undefined;
  readonly memory: RateLimiterMemory;
}

/**
 * The gateway's request rate limiter: fixed windows of `windowSeconds`, one bucket per API key
 * id and one per client address, counted in Redis so all gateway replicas share them.
 *
 * When a Redis call fails (unreachable, timed out, or refused, e.g. READONLY after a failover)
 * the same limits are counted in this process's memory until Redis answers again: during an
 * outage each gateway allows up to the limit on its own. That is what rate-limiter-flexible's
 * `insuranceLimiter` does; it is done here by hand because the insurance hides the Redis error
 * and which store answered, and both are logged and counted.
 */
export class RequestRateLimiter {
  private readonly key: ScopeLimiters | undefined;
  private readonly address: ScopeLimiters | undefined;
  private readonly client: Redis | undefined;
  private readonly ownsClient: boolean;
  private readonly log: Logger;
  private readonly metrics: RateLimitMetrics | undefined;
  private readonly windowMs: number;
  private readonly redisRetryMs: number;
  private backendNow: RateLimitBackend;
  /** while Date.now() is below this, Redis is not tried (it just failed): no wait per request */
  private redisRetryAt = 0;
  /** Redis calls that failed so far: a call that started before the latest failure proves nothing */
  private redisFailures = 0;
  /** the last connection error the client reported, for the outage log line */
  private lastClientError: unknown;
  private closed = false;
  private readonly onClientError = (err: unknown): void => {
    this.lastClientError = err;
    this.log.debug({ err: errorMessage(err) }, 'rate limit Redis connection error');
  };

  constructor(opts: RequestRateLimiterOptions) {
    const { perKey, perAddress, windowSeconds } = opts;
    for (const [name, v] of [
      ['perKey', perKey],
      ['perAddress', perAddress],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0)
        throw new RateLimitConfigError(`${name} must be a whole number ≥ 0 (0: off), not ${v}`, {
          [name]: v,
        });
    }
    if (!Number.isSafeInteger(windowSeconds) || windowSeconds < 1)
      throw new RateLimitConfigError(`windowSeconds must be a whole number ≥ 1, not ${windowSeconds}`, {
        windowSeconds,
      });
    this.log = opts.log;
    this.metrics = opts.metrics;
    this.windowMs = windowSeconds * 1000;
    this.redisRetryMs = opts.redisRetryMs ?? 1000;
    const enabled = perKey > 0 || perAddress > 0;

    if (enabled && opts.redis !== undefined) {
      this.ownsClient = typeof opts.redis === 'string';
      this.client =
        typeof opts.redis === 'string'
          ? new Redis(opts.redis, {
              // Fail at once while disconnected (rate-limiter-flexible's advice for RateLimiterRedis):
              // a queued consume would hold the request until Redis is back.
              enableOfflineQueue: false,
              // Calls in flight when the connection drops fail then, and are not re-sent on reconnect
              // (a late re-send would count a request twice).
              maxRetriesPerRequest: 0,
              autoResendUnfulfilledCommands: false,
              // A Redis that accepts the connection but hangs must not hang requests.
              commandTimeout: opts.redisTimeoutMs ?? 500,
            })
          : opts.redis;
      // Without a listener ioredis prints every reconnect failure; they repeat every ≤ 2 s while
      // Redis is away, so they go to debug and the outage is logged once, at warn, on first use.
      this.client.on('error', this.onClientError);
    } else {
      this.ownsClient = false;
    }
    this.backendNow = this.client ? 'redis' : 'memory';

    const make = (scope: RateLimitScope, points: number, prefix: string): ScopeLimiters | undefined => {
      if (points === 0) return undefined;
      const keyPrefix = `kvstore:${opts.cluster}:rl:${prefix}`;
      return {
        scope,
        redis: this.client
          ? new RateLimiterRedis({
              storeClient: this.client,
              keyPrefix,
              points,
              duration: windowSeconds,
              // While the client is not connected, fail at once instead of trying to send.
              rejectIfRedisNotReady: true,
            })
          : undefined,
        memory: new RateLimiterMemory({ keyPrefix, points, duration: windowSeconds }),
      };
    };
    this.key = make('key', perKey, 'key');
    this.address = make('address', perAddress, 'addr');

    if (enabled) this.setBackend(this.backendNow, true);
    else {
      // Off: no backend answers.
      this.metrics?.rateLimitBackend.set({ backend: 'redis' }, 0);
      this.metrics?.rateLimitBackend.set({ backend: 'memory' }, 0);
    }
  }

  /** True when at least one limit is on. */
  get enabled(): boolean {
    return this.key !== undefined || this.address !== undefined;
  }

  /** True when the counts are meant to be shared through Redis (they may be in memory during an outage). */
  get shared(): boolean {
    return this.client !== undefined;
  }

  /** The store that answered the latest check (before any: redis when configured, else memory). */
  get backend(): RateLimitBackend {
    return this.backendNow;
  }

  /**
   * Waits up to `timeoutMs` for the Redis connection (a gateway calls it at start, so the first
   * requests do not fall back while the client is still connecting). True when connected or when
   * there is no Redis; false otherwise (checks then use memory until Redis answers).
   */
  async waitForRedis(timeoutMs: number): Promise<boolean> {
    const client = this.client;
    if (!client) return true;
    const deadline = Date.now() + timeoutMs;
    while (client.status !== 'ready') {
      if (Date.now() >= deadline || this.closed) return false;
      await new Promise((r) => setTimeout(r, 25));
    }
    return true;
  }

  /**
   * Counts one request of `address` (and of `keyId`, when the request carried an API key), or
   * `points` of them (the operations of a batch beyond its first), and says whether it may go on. Never rejects because of Redis: the memory limits answer then.
   */
  async check(address: string, keyId: string | undefined, points = 1): Promise<RateLimitDecision> {
    if (this.closed) throw new KvError('rate_limit_closed', 'check() after close(): a bug in the caller');
    const pending: Array<Promise<RateLimitDecision>> = [];
    // Both buckets count every request, refused ones too: a client hammering past its limit
    // does not earn the next window's allowance by being refused.
    if (this.address) pending.push(this.consume(this.address, address, points));
    if (this.key && keyId !== undefined) pending.push(this.consume(this.key, keyId, points));
    const decisions = await Promise.all(pending);
    let refused: Extract<RateLimitDecision, { allowed: false }> | undefined;
    for (const d of decisions) {
      // Both refused: the longer wait is the one that matters to the client.
      if (!d.allowed && (!refused || d.retryAfterMs > refused.retryAfterMs)) refused = d;
    }
    if (!refused) return { allowed: true };
    this.metrics?.rateLimited.inc({ scope: refused.scope });
    return refused;
  }

  /** Closes the Redis client when the limiter opened it. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.client) return;
    if (!this.ownsClient) {
      this.client.off('error', this.onClientError);
      return;
    }
    try {
      await this.client.quit();
    } catch (err) {
      // Not connected: nothing to say goodbye to; drop the socket and the reconnect timer.
      this.log.debug({ err: errorMessage(err) }, 'rate limit Redis client did not quit cleanly');
      this.client.disconnect();
    }
  }

  private async consume(limiters: ScopeLimiters, id: string, points: number): Promise<RateLimitDecision> {
    const { redis, memory, scope } = limiters;
    if (redis && Date.now() >= this.redisRetryAt) {
      const failuresBefore = this.redisFailures;
      // An answer to a call sent before the latest failure does not mean Redis is back.
      const answered = (): void => {
        if (this.redisFailures === failuresBefore) this.setBackend('redis');
      };
      try {
        const res = await redis.consume(id, points);
        answered();
        return this.decide(scope, res, true);
      } catch (err) {
        if (err instanceof RateLimiterRes) {
          answered();
          return this.decide(scope, err, false);
        }
        this.redisFailed(err);
      }
    }
    try {
      return this.decide(scope, await memory.consume(id, points), true);
    } catch (err) {
      if (err instanceof RateLimiterRes) return this.decide(scope, err, false);
      // RateLimiterMemory rejects only with RateLimiterRes: anything else is a bug.
      throw new KvError(
        'rate_limit_internal',
        `in-memory rate limiter failed: ${errorMessage(err)}`,
        { scope },
        {
          cause: err,
        },
      );
    }
  }

  private decide(scope: RateLimitScope, res: RateLimiterRes, allowed: boolean): RateLimitDecision {
    if (allowed) return { allowed: true };
    // Never 0 (the client would retry at once) and never past the window (a fixed window resets by then).
    const retryAfterMs = Math.min(Math.max(Math.ceil(res.msBeforeNext), 1), this.windowMs);
    return { allowed: false, scope, retryAfterMs };
  }

  private redisFailed(err: unknown): void {
    this.redisFailures++;
    this.redisRetryAt = Date.now() + this.redisRetryMs;
    if (this.backendNow === 'memory') {
      this.log.debug({ err: errorMessage(err) }, 'rate limit Redis still failing: counting in memory');
      return;
    }
    this.metrics?.rateLimitFallbacks.inc();
    this.log.warn(
      {
        err: errorMessage(err),
        redisStatus: this.client?.status,
        lastConnectionError:
          this.lastClientError === undefined ? undefined : errorMessage(this.lastClientError),
      },
      'rate limit Redis unavailable: each gateway now counts its limits in memory, on its own, until Redis is back',
    );
    this.setBackend('memory');
  }

  private setBackend(backend: RateLimitBackend, initial = false): void {
    if (backend === this.backendNow && !initial) return;
    if (backend === 'redis' && this.backendNow === 'memory') {
      this.log.info('rate limit Redis is back: limits are shared by all gateways again');
    }
    this.backendNow = backend;
    this.metrics?.rateLimitBackend.set({ backend: 'redis' }, backend === 'redis' ? 1 : 0);
    this.metrics?.rateLimitBackend.set({ backend: 'memory' }, backend === 'memory' ? 1 : 0);
  }
}

/**
 * The address a request is limited by: the socket's peer, with an IPv4-mapped IPv6 address
 * (`::ffff:1.2.3.4`, what a dual-stack listener reports for IPv4 clients) written as IPv4, so one
 * client has one bucket whichever way it connected. X-Forwarded-For is deliberately not read: any
 * client can set it, and a gateway cannot tell which proxies in front of it to trust, so behind a
 * proxy or load balancer that does not preserve the client address all clients share its bucket.
 */
export function clientAddress(remoteAddress: string | undefined): string {
  // Undefined only once the socket is gone; such requests share one bucket rather than none.
  if (remoteAddress === undefined || remoteAddress === '') return 'unknown';
  const mapped = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i.exec(remoteAddress);
  return mapped ? mapped[1] : remoteAddress.toLowerCase();
}

/**
 * The limiter as the app's admission hook (GatewayDeps.admission): counts the request and throws
 * ApiError 429 `rate_limited` when a limit is hit, with the wait in its context for Retry-After.
 */
export function rateLimitAdmission(
  limiter: RequestRateLimiter,
): (remoteAddress: string | undefined, keyId: string | undefined, points?: number) => Promise<void> {
  return async (remoteAddress, keyId, points = 1) => {
    const decision = await limiter.check(clientAddress(remoteAddress), keyId, points);
    if (decision.allowed) return;
    const what = decision.scope === 'key' ? 'this API key' : 'this client address';
    throw new ApiError(
      429,
      'rate_limited',
      `too many requests from ${what}; retry in ${retryAfterSeconds(decision.retryAfterMs)} s`,
      { scope: decision.scope, retryAfterMs: decision.retryAfterMs },
    );
  };
}

/**
 * The Retry-After header (whole seconds, at least 1) for a 429: the limiter's wait when the
 * error carries one, else 1 (the per-connection cap, which frees up as soon as a response ends).
 */
export function retryAfterHeader(err: ApiError): string {
  const ms = err.context.retryAfterMs;
  return String(typeof ms === 'number' && Number.isFinite(ms) ? retryAfterSeconds(ms) : 1);
}

function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
