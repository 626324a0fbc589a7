import fs from 'node:fs';
import path from 'node:path';
import { startExtraGateway, startTestCluster, type ExtraGateway, type TestCluster } from './cluster-harness';
import { startRedis, type RunningRedis } from './redis-server';

/**
 * Rate limits shared by two real gateway processes through one real redis-server
 * (`--redis`, which also holds the cluster's partition map), then, with Redis stopped,
 * counted by each gateway in its own memory. Every request comes from 127.0.0.1, so the
 * per-address limit applies to all of them; windows are 10 s, far longer than a burst.
 */
jest.setTimeout(90_000);

const N = 10;
const WINDOW_S = 10;
const CLUSTER = 'rl-e2e';
const LIMIT_ARGS = ['--rate-limit-per-address', String(N), '--rate-limit-window-s', String(WINDOW_S)];

let redis: RunningRedis;
let tc: TestCluster;
let second: ExtraGateway;

beforeAll(async () => {
  redis = await startRedis();
  // The launcher's gateway gets --redis (the map's store) and --no-auth by itself.
  tc = await startTestCluster({ redisUrl: redis.url, cluster: CLUSTER, gatewayArgs: LIMIT_ARGS });
  second = await startExtraGateway(tc, LIMIT_ARGS);
});

afterAll(async () => {
  await second?.stop();
  await tc?.stop(true);
  await redis?.stop();
});

interface Answer {
  readonly status: number;
  readonly retryAfter: string | null;
  readonly code: string | undefined;
}

/**
 * `count` limited requests spread over `urls`, all at once: the cluster view (express's router)
 * and a read of an absent key (the lean /v1/kv path), so both request paths are limited.
 */
async function burst(urls: readonly string[], count: number): Promise<Answer[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const base = urls[i % urls.length];
      const res = await fetch(i % 4 < 2 ? `${base}/v1/cluster` : `${base}/v1/kv/rate-limit-absent`);
      const text = await res.text();
      let code: string | undefined;
      if (res.status === 429) code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
      return { status: res.status, retryAfter: res.headers.get('retry-after'), code };
    }),
  );
}

function expectAllowedOrLimited(answers: readonly Answer[]): number {
  const allowed = answers.filter((a) => a.status !== 429);
  // Allowed: served as without limits (the cluster view, or 404 for the absent key).
  for (const a of allowed) expect([200, 404]).toContain(a.status);
  for (const a of answers.filter((x) => x.status === 429)) {
    expect(a.code).toBe('rate_limited');
    expect(Number(a.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(a.retryAfter)).toBeLessThanOrEqual(WINDOW_S);
  }
  return allowed.length;
}

async function metric(url: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  if (line === undefined) throw new Error(`${url}/metrics has no ${name} with ${labels}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

test('two gateways on one Redis allow N requests per address per window between them, then 429 with Retry-After', async () => {
  const answers = await burst([tc.url, second.url], 3 * N);
  expect(expectAllowedOrLimited(answers)).toBe(N);
  for (const url of [tc.url, second.url]) {
    // Each got 3N/2 requests: with limits of their own they would have allowed N each, 2N in all.
    expect(await metric(url, 'kvstore_gateway_rate_limited_total', 'scope="address"')).toBeGreaterThanOrEqual(
      N / 2,
    );
    expect(await metric(url, 'kvstore_gateway_rate_limit_backend', 'backend="redis"')).toBe(1);
    expect(await metric(url, 'kvstore_gateway_rate_limit_backend', 'backend="memory"')).toBe(0);
    expect(await metric(url, 'kvstore_gateway_rate_limited_total', 'scope="key"')).toBe(0);
  }
  const refused =
    (await metric(tc.url, 'kvstore_gateway_rate_limited_total', 'scope="address"')) +
    (await metric(second.url, 'kvstore_gateway_rate_limited_total', 'scope="address"'));
  expect(refused).toBe(2 * N);
  // Health, readiness and metrics are never limited: probes and scrapes keep working.
  for (const route of ['/healthz', '/readyz', '/metrics']) {
    expect((await fetch(`${tc.url}${route}`)).status).toBe(200);
  }
});

test('with Redis stopped each gateway still limits, in memory, on its own; when Redis is back it counts there again', async () => {
  const port = redis.port;
  await redis.stop();
  for (const url of [tc.url, second.url]) {
    // A fresh bucket in this gateway's memory: up to N of its own.
    expect(expectAllowedOrLimited(await burst([url], 3 * N))).toBe(N);
    expect(await metric(url, 'kvstore_gateway_rate_limit_backend', 'backend="memory"')).toBe(1);
    expect(await metric(url, 'kvstore_gateway_rate_limit_backend', 'backend="redis"')).toBe(0);
    expect(await metric(url, 'kvstore_gateway_rate_limit_fallbacks_total', '')).toBe(1);
  }
  // Logged once per outage, at warn, in each gateway's log.
  for (const log of [path.join(tc.cluster.logDir, 'gateway.log'), second.logFile]) {
    const warns = fs
      .readFileSync(log, 'utf8')
      .split('\n')
      .filter((l) => l.includes('rate limit Redis unavailable'));
    expect(warns).toHaveLength(1);
    expect(JSON.parse(warns[0])).toMatchObject({ level: 'warn' });
  }

  redis = await startRedis({ port });
  // ioredis reconnects by itself (backing off up to 2 s); the next check after that uses Redis.
  for (const url of [tc.url, second.url]) {
    let backend = 0;
    for (let i = 0; i < 100 && backend !== 1; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await fetch(`${url}/v1/cluster`);
      backend = await metric(url, 'kvstore_gateway_rate_limit_backend', 'backend="redis"');
    }
    expect(backend).toBe(1);
  }
});
