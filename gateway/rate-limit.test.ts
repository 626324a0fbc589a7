import Redis from 'ioredis';
import pino from 'pino';
import { captureLogger } from '../common/metadata-store.fixtures';
import { startRedis, withRedisClient, type RunningRedis } from '../e2e/redis-server';
import { ApiError } from './api-error';
import { GatewayMetrics } from './metrics';
import {
  RateLimitConfigError,
  RequestRateLimiter,
  clientAddress,
  rateLimitAdmission,
  retryAfterHeader,
  type RateLimitDecision,
  type RequestRateLimiterOptions,
} from './rate-limit';

/**
 * The limiter against a real redis-server. Windows are 10 s: each test's requests take a few
 * milliseconds, so no window runs out while a test counts (a fixed window starts at the first
 * request of a bucket, and each test uses buckets of its own).
 */
jest.setTimeout(30_000);

const WINDOW_S = 10;

describe('RequestRateLimiter on a real Redis', () => {
  let redis: RunningRedis;
  let cluster: string;
  let seq = 0;
  const limiters: RequestRateLimiter[] = [];
  const open = (
    opts: Partial<RequestRateLimiterOptions> = {},
  ): { limiter: RequestRateLimiter; metrics: GatewayMetrics } => {
    const metrics = new GatewayMetrics({ gateway: `gw${limiters.length}`, cluster });
    const limiter = new RequestRateLimiter({
      cluster,
      perKey: 0,
      perAddress: 0,
      windowSeconds: WINDOW_S,
      redis: redis.url,
      metrics,
      log: pino({ level: 'silent' }),
      ...opts,
    });
    limiters.push(limiter);
    return { limiter, metrics };
  };
  const allowedCount = (ds: readonly RateLimitDecision[]): number => ds.filter((d) => d.allowed).length;
  const raw = <T>(fn: (r: Redis) => Promise<T>): Promise<T> => withRedisClient(redis.url, fn);

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });
  beforeEach(() => {
    // A cluster name per test: its own Redis keys.
    cluster = `rl${++seq}`;
  });
  afterEach(async () => {
    await Promise.all(limiters.splice(0).map((l) => l.close()));
  });

  it('two gateways on one Redis share the per-address limit: together they allow exactly N', async () => {
    const N = 7;
    const a = open({ perAddress: N }).limiter;
    const b = open({ perAddress: N }).limiter;
    expect(await a.waitForRedis(5000)).toBe(true);
    expect(await b.waitForRedis(5000)).toBe(true);
    // Concurrent, interleaved across both, three times the limit.
    const decisions = await Promise.all(
      Array.from({ length: 3 * N }, (_, i) => (i % 2 ? a : b).check('10.0.0.1', undefined)),
    );
    expect(allowedCount(decisions)).toBe(N);
    for (const d of decisions.filter((x) => !x.allowed)) {
      expect(d).toMatchObject({ allowed: false, scope: 'address' });
      if (!d.allowed) {
        expect(d.retryAfterMs).toBeGreaterThan(0);
        expect(d.retryAfterMs).toBeLessThanOrEqual(WINDOW_S * 1000);
      }
    }
    // Another address has its own bucket.
    expect(await a.check('10.0.0.2', undefined)).toEqual({ allowed: true });
    // The counts really are in Redis, under the cluster's namespace.
    expect(await raw((r) => r.get(`kvstore:${cluster}:rl:addr:10.0.0.1`))).toBe(String(3 * N));
    expect(a.backend).toBe('redis');
    expect(b.backend).toBe('redis');
  });

  it('per-key and per-address limits are independent, and the refusal names the one hit', async () => {
    const { limiter: a, metrics } = open({ perKey: 3, perAddress: 5 });
    const b = open({ perKey: 3, perAddress: 5 }).limiter;
    await a.waitForRedis(5000);
    await b.waitForRedis(5000);
    // Key k1 from one address on two gateways: 3 pass, the 4th hits the key limit (address: 4 of 5).
    expect(allowedCount([await a.check('1.1.1.1', 'k1'), await b.check('1.1.1.1', 'k1')])).toBe(2);
    expect(await a.check('1.1.1.1', 'k1')).toEqual({ allowed: true });
    const keyRefusal = await b.check('1.1.1.1', 'k1');
    expect(keyRefusal).toMatchObject({ allowed: false, scope: 'key' });
    // Another key from the same address: its 5th request passes, the 6th hits the address limit.
    expect(await a.check('1.1.1.1', 'k2')).toEqual({ allowed: true });
    expect(await b.check('1.1.1.1', 'k2')).toMatchObject({ allowed: false, scope: 'address' });
    // k2 (2 of 3 used) still passes from another address; k1 stays refused there too.
    expect(await a.check('2.2.2.2', 'k2')).toEqual({ allowed: true });
    expect(await a.check('2.2.2.2', 'k1')).toMatchObject({ allowed: false, scope: 'key' });
    // No key: only the address counts.
    expect(await b.check('3.3.3.3', undefined)).toEqual({ allowed: true });

    const refused = await metrics.rateLimited.get();
    const byScope = Object.fromEntries(refused.values.map((v) => [v.labels.scope, v.value]));
    expect(byScope).toEqual({ key: 1, address: 0, connection: 0 });
  });

  it('a limit of 0 is off: that bucket never refuses and is never written', async () => {
    const keyOnly = open({ perKey: 2, perAddress: 0 }).limiter;
    await keyOnly.waitForRedis(5000);
    const sameAddress = await Promise.all(
      Array.from({ length: 20 }, (_, i) => keyOnly.check('9.9.9.9', `key${i}`)),
    );
    expect(allowedCount(sameAddress)).toBe(20);
    expect(await keyOnly.check('9.9.9.9', 'key0')).toEqual({ allowed: true });
    expect(await keyOnly.check('9.9.9.9', 'key0')).toMatchObject({ allowed: false, scope: 'key' });

    const { limiter: off, metrics } = open({ perKey: 0, perAddress: 0 });
    expect(off.enabled).toBe(false);
    expect(allowedCount(await Promise.all(Array.from({ length: 50 }, () => off.check('9.9.9.9', 'k'))))).toBe(
      50,
    );
    expect(await raw((r) => r.keys(`kvstore:${cluster}:rl:addr:*`))).toEqual([]);
    const gauge = await metrics.rateLimitBackend.get();
    expect(gauge.values.map((v) => v.value)).toEqual([0, 0]);
  });

  it('without Redis each gateway counts in memory, on its own', async () => {
    const { limiter: a, metrics } = open({ perAddress: 4, redis: undefined });
    const b = open({ perAddress: 4, redis: undefined }).limiter;
    expect(a.shared).toBe(false);
    const fromA = await Promise.all(Array.from({ length: 10 }, () => a.check('5.5.5.5', undefined)));
    const fromB = await Promise.all(Array.from({ length: 10 }, () => b.check('5.5.5.5', undefined)));
    expect(allowedCount(fromA)).toBe(4);
    expect(allowedCount(fromB)).toBe(4);
    expect(a.backend).toBe('memory');
    const gauge = await metrics.rateLimitBackend.get();
    expect(Object.fromEntries(gauge.values.map((v) => [v.labels.backend, v.value]))).toEqual({
      redis: 0,
      memory: 1,
    });
  });

  it('a Redis that hangs (CLIENT PAUSE) is given up on after the timeout: memory answers', async () => {
    const { limiter, metrics } = open({ perAddress: 3, redisTimeoutMs: 200, redisRetryMs: 50 });
    expect(await limiter.waitForRedis(5000)).toBe(true);
    expect(await limiter.check('4.4.4.4', undefined)).toEqual({ allowed: true });
    expect(limiter.backend).toBe('redis');
    const pauser = new Redis(redis.url);
    try {
      await pauser.client('PAUSE', 5000, 'ALL');
      const during = await Promise.all(Array.from({ length: 6 }, () => limiter.check('4.4.4.5', undefined)));
      expect(during.filter((d) => d.allowed)).toHaveLength(3);
      expect(limiter.backend).toBe('memory');
      expect((await metrics.rateLimitFallbacks.get()).values[0]?.value).toBe(1);
      await pauser.client('UNPAUSE');
    } finally {
      pauser.disconnect();
    }
    // Past the pause after the last failure, the next check goes to Redis again.
    await new Promise((r) => setTimeout(r, 100));
    expect(await limiter.check('4.4.4.6', undefined)).toEqual({ allowed: true });
    expect(limiter.backend).toBe('redis');
  });

  it('refuses nonsense limits', () => {
    expect(() => open({ perKey: -1 })).toThrow(RateLimitConfigError);
    expect(() => open({ perAddress: 1.5 })).toThrow(RateLimitConfigError);
    expect(() => open({ perAddress: 1, windowSeconds: 0 })).toThrow(RateLimitConfigError);
  });
});

describe('RequestRateLimiter when Redis goes away and comes back', () => {
  let redis: RunningRedis | undefined;
  afterAll(async () => {
    await redis?.stop();
  });

  it('limits in memory per gateway while Redis is down (logged once, counted), then shares again', async () => {
    redis = await startRedis();
    const { port } = redis;
    const N = 4;
    const made: Array<{
      limiter: RequestRateLimiter;
      metrics: GatewayMetrics;
      lines: Array<Record<string, unknown>>;
    }> = [];
    for (const gw of ['gw-a', 'gw-b']) {
      const { log, lines } = captureLogger();
      const metrics = new GatewayMetrics({ gateway: gw, cluster: 'outage' });
      const limiter = new RequestRateLimiter({
        cluster: 'outage',
        perKey: N,
        perAddress: N,
        windowSeconds: WINDOW_S,
        redis: redis.url,
        // Retry Redis quickly after a failure, so the test sees it come back without waiting.
        redisRetryMs: 50,
        metrics,
        log,
      });
      made.push({ limiter, metrics, lines });
    }
    const [a, b] = made;
    const backendOf = async (m: GatewayMetrics): Promise<Record<string, number>> =>
      Object.fromEntries((await m.rateLimitBackend.get()).values.map((v) => [v.labels.backend, v.value]));
    const fallbacksOf = async (m: GatewayMetrics): Promise<number> =>
      (await m.rateLimitFallbacks.get()).values[0]?.value ?? 0;
    try {
      expect(await a.limiter.waitForRedis(5000)).toBe(true);
      expect(await b.limiter.waitForRedis(5000)).toBe(true);
      const shared = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).limiter.check('7.7.7.1', undefined)),
      );
      expect(shared.filter((d) => d.allowed)).toHaveLength(N);
      expect(await backendOf(a.metrics)).toEqual({ redis: 1, memory: 0 });

      await redis.stop();

      // Each gateway alone allows at most N for an address, and for a key.
      for (const { limiter } of made) {
        const byAddress = await Promise.all(
          Array.from({ length: 10 }, () => limiter.check('7.7.7.2', undefined)),
        );
        expect(byAddress.filter((d) => d.allowed)).toHaveLength(N);
        expect(byAddress.filter((d) => !d.allowed)[0]).toMatchObject({ allowed: false, scope: 'address' });
        const byKey = await Promise.all(
          Array.from({ length: 10 }, (_, i) => limiter.check(`8.8.8.${i}`, 'k-out')),
        );
        expect(byKey.filter((d) => d.allowed)).toHaveLength(N);
        expect(byKey.filter((d) => !d.allowed)[0]).toMatchObject({ allowed: false, scope: 'key' });
        expect(limiter.backend).toBe('memory');
      }
      for (const { metrics, lines } of made) {
        expect(await backendOf(metrics)).toEqual({ redis: 0, memory: 1 });
        expect(await fallbacksOf(metrics)).toBe(1);
        // Once per outage, at warn, however many requests fell back.
        const warns = lines.filter((l) => l.level === 'warn' && /Redis unavailable/.test(String(l.msg)));
        expect(warns).toHaveLength(1);
      }

      redis = await startRedis({ port });
      for (const { limiter } of made) {
        // ioredis reconnects on its own (backing off up to 2 s between attempts).
        expect(await limiter.waitForRedis(10_000)).toBe(true);
        // Past the 50 ms pause after the last failed Redis call (no call has failed since).
        await new Promise((r) => setTimeout(r, 100));
        // The backend is the store that answered the latest check: the next check tries Redis again.
        expect(await limiter.check('6.6.6.6', undefined)).toEqual({ allowed: true });
        expect(limiter.backend).toBe('redis');
      }
      for (const { metrics, lines } of made) {
        expect(await backendOf(metrics)).toEqual({ redis: 1, memory: 0 });
        expect(lines.filter((l) => l.level === 'info' && /Redis is back/.test(String(l.msg)))).toHaveLength(
          1,
        );
        expect(await fallbacksOf(metrics)).toBe(1);
      }
      // Shared again: together at most N.
      const again = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).limiter.check('7.7.7.3', undefined)),
      );
      expect(again.filter((d) => d.allowed)).toHaveLength(N);
    } finally {
      await Promise.all(made.map((m) => m.limiter.close()));
    }
  });
});

describe('clientAddress', () => {
  it('writes IPv4-mapped IPv6 as IPv4 and keeps other addresses', () => {
    expect(clientAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(clientAddress('::FFFF:127.0.0.1')).toBe('127.0.0.1');
    expect(clientAddress('10.1.2.3')).toBe('10.1.2.3');
    expect(clientAddress('2001:DB8::1')).toBe('2001:db8::1');
    expect(clientAddress('::1')).toBe('::1');
    expect(clientAddress(undefined)).toBe('unknown');
  });
});

describe('rateLimitAdmission', () => {
  it('lets requests through, then throws 429 rate_limited whose Retry-After is the wait in whole seconds', async () => {
    const limiter = new RequestRateLimiter({
      cluster: 'adm',
      perKey: 0,
      perAddress: 2,
      windowSeconds: WINDOW_S,
      log: pino({ level: 'silent' }),
    });
    try {
      const admit = rateLimitAdmission(limiter);
      await admit('::ffff:10.9.8.7', undefined);
      // The same client, written as IPv4: one bucket.
      await admit('10.9.8.7', 'k');
      const err: unknown = await admit('::ffff:10.9.8.7', undefined).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ApiError);
      const apiErr = err as ApiError;
      expect(apiErr.status).toBe(429);
      expect(apiErr.toBody().error.code).toBe('rate_limited');
      expect(apiErr.context).toMatchObject({ scope: 'address' });
      const retryAfter = Number(retryAfterHeader(apiErr));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(WINDOW_S);
      // Another address is not affected.
      await admit('10.9.8.6', undefined);
    } finally {
      await limiter.close();
    }
    // A 429 without a wait (the per-connection cap): 1 s.
    expect(retryAfterHeader(new ApiError(429, 'rate_limited', 'too many in flight'))).toBe('1');
  });
});
