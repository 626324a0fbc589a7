import { startTestCluster, type TestCluster } from './cluster-harness';
import { scrapeSum } from './metrics-scrape';

/**
 * The gateway's in-flight bound through the real binary (gateway/in-flight-budget.ts): with room
 * for one 60 KiB body at a time and no wait, a burst of concurrent PUTs is answered at once, each
 * either stored or shed with `503 overloaded` and Retry-After; probes answer throughout; what was
 * acknowledged reads back. (The heavier overload runs, 200 clients of 1 MiB values, are in the
 * closing notes of issue 23, not in CI.)
 */
jest.setTimeout(60_000);

let tc: TestCluster;

beforeAll(async () => {
  tc = await startTestCluster({
    gatewayArgs: ['--max-inflight-bytes', String(64 * 1024), '--inflight-queue-ms', '0'],
  });
});

afterAll(async () => {
  await tc?.stop(true);
});

test('a burst past the bound: each PUT stored or shed at once with 503 overloaded and Retry-After; probes answer', async () => {
  const body = Buffer.alloc(60 * 1024, 1);
  const answers = await Promise.all(
    Array.from({ length: 40 }, async (_, i) => {
      const res = await fetch(`${tc.url}/v1/kv/burst/${i}`, { method: 'PUT', body });
      const json = (await res.json()) as { error?: { code: string; message: string } };
      return { i, status: res.status, retryAfter: res.headers.get('retry-after'), code: json.error?.code };
    }),
  );
  const shed = answers.filter((a) => a.status === 503);
  const stored = answers.filter((a) => a.status === 200);
  expect(stored.length + shed.length).toBe(answers.length);
  expect(stored.length).toBeGreaterThan(0);
  expect(shed.length).toBeGreaterThan(0);
  for (const a of shed) expect([a.code, a.retryAfter]).toEqual(['overloaded', '1']);
  expect((await fetch(`${tc.url}/healthz`)).status).toBe(200);
  expect((await fetch(`${tc.url}/readyz`)).status).toBe(200);
  for (const a of stored) {
    const res = await fetch(`${tc.url}/v1/kv/burst/${a.i}`);
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
  }
  for (const a of shed) expect((await fetch(`${tc.url}/v1/kv/burst/${a.i}`)).status).toBe(404);
  expect(await scrapeSum(tc.url, 'kvstore_gateway_shed_requests_total')).toBe(shed.length);
  // One at a time, everything fits.
  expect((await fetch(`${tc.url}/v1/kv/burst/after`, { method: 'PUT', body })).status).toBe(200);
});
