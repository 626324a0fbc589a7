import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import pino from 'pino';
import { ApiKeySet, hashToken, newToken } from '../common/api-keys';
import { PartitionMapHolder } from '../common/metadata-store';
import { IDENTITY_HEADER, identity } from '../common/version';
import { InProcessCluster } from '../e2e/in-process-cluster';
import type { GatewayDeps } from './gateway-deps';
import { GatewayMetrics } from './metrics';
import { createRequestListener } from './request-listener';
import { DEFAULT_LIMITS } from './request-input';
import { SERVER_LIMITS } from './server-limits';

/**
 * The gateway's request path (request-listener.ts: the lean adapter, express, the operations, the error
 * renderer, the observer) served in this process over real storage nodes (e2e/in-process-cluster.ts: real
 * LMDB in a temp folder, real RPC on loopback), with replicas cut by fault injection where a case needs it.
 * Requests go over real HTTP on loopback, so both adapters answer as in production.
 */

jest.setTimeout(30_000);

const TOKENS = { admin: newToken(), reader: newToken(), team: newToken() };
const TEAM_PREFIX = 'team/';
const KEYS = ApiKeySet.parse(
  JSON.stringify({
    keys: [
      { id: 'admin', sha256: hashToken(TOKENS.admin), role: 'admin' },
      { id: 'reader', sha256: hashToken(TOKENS.reader), role: 'read' },
      { id: 'team', sha256: hashToken(TOKENS.team), role: 'readwrite', prefix: TEAM_PREFIX },
    ],
  }),
);

let cluster: InProcessCluster;
let maps: PartitionMapHolder;
let metrics: GatewayMetrics;
let server: http.Server;
let base: string;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ nodes: 3 });
  const log = pino({ level: process.env.LOG_LEVEL ?? 'silent' });
  maps = await PartitionMapHolder.follow(cluster.store, log);
  metrics = new GatewayMetrics({ gateway: 'gw-test' });
  const deps: GatewayDeps = {
    coordinator: await cluster.coordinator('gw-test'),
    maps,
    pool: await cluster.peers('gw-test'),
    metrics,
    log,
    limits: DEFAULT_LIMITS,
    auth: { keys: () => KEYS },
  };
  server = http.createServer(SERVER_LIMITS, createRequestListener(deps));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(() => cluster.faults.heal());

afterAll(async () => {
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  maps?.stop();
  await cluster?.close();
});

type Who = keyof typeof TOKENS | 'none';

function request(
  method: string,
  path: string,
  opts: { who?: Who; body?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Response> {
  const who = opts.who ?? 'admin';
  const headers: Record<string, string> = { ...opts.headers };
  if (who !== 'none') headers.Authorization = `Bearer ${TOKENS[who]}`;
  return fetch(`${base}${path}`, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  });
}

/** The value stored under `key`, asked of every replica (undefined when there is none). */
async function stored(key: string): Promise<string | undefined> {
  const res = await request('GET', `/v1/kv/${encodeURIComponent(key)}`, {
    headers: { 'X-Consistency': 'all' },
  });
  if (res.status === 404) return undefined;
  expect(res.status).toBe(200);
  return res.text();
}

/** Runs `fn` and returns the RPCs the gateway sent to replicas meanwhile (a fault rule that only looks). */
async function replicaCalls(fn: () => Promise<void>): Promise<string[]> {
  const calls: string[] = [];
  const stop = cluster.faults.add((c) => {
    if (c.from === 'gw-test') calls.push(`${c.op} ${c.to}`);
    return undefined;
  });
  try {
    await fn();
  } finally {
    stop();
  }
  return calls;
}

async function errorOf(res: Response): Promise<{ code: string; message: string }> {
  expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
  return ((await res.json()) as { error: { code: string; message: string } }).error;
}

describe('with every replica up', () => {
  it('writes, reads and deletes at quorum on the lean path', async () => {
    const put = await request('PUT', '/v1/kv/rp-a', { body: 'one' });
    expect(put.status).toBe(200);
    const { key, version } = (await put.json()) as { key: string; version: string };
    expect(key).toBe('rp-a');
    const got = await request('GET', '/v1/kv/rp-a');
    expect(got.status).toBe(200);
    expect(got.headers.get('etag')).toBe(`"${version}"`);
    // What fetch sent with the string body, kept with the value.
    expect(got.headers.get('content-type')).toBe('text/plain;charset=UTF-8');
    expect(got.headers.get('x-content-type-options')).toBe('nosniff');
    expect(got.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(await got.text()).toBe('one');
    const calls = await replicaCalls(async () => {
      expect((await request('DELETE', '/v1/kv/rp-a')).status).toBe(200);
    });
    // A write goes to every replica (so the refusals below, which send none, are seen to send none).
    expect(calls.filter((c) => c.startsWith('write ')).sort()).toEqual(['write n1', 'write n2', 'write n3']);
    expect(await stored('rp-a')).toBeUndefined();
    const absent = await request('GET', '/v1/kv/rp-a');
    expect(absent.status).toBe(404);
    expect(await errorOf(absent)).toEqual({ code: 'not_found', message: 'key not found' });
  });

  it('answers what express serves from the same operation: HEAD, 304, compressed bodies', async () => {
    const put = await request('PUT', '/v1/kv/rp-gz', {
      body: gzipSync(Buffer.from('inflated')),
      headers: { 'Content-Encoding': 'gzip' },
    });
    expect(put.status).toBe(200);
    const got = await request('GET', '/v1/kv/rp-gz', { headers: { 'X-Request-Id': 'rp-mine' } });
    expect(await got.text()).toBe('inflated');
    expect(got.headers.get('x-request-id')).toBe('rp-mine');
    const etag = got.headers.get('etag') as string;
    const head = await request('HEAD', '/v1/kv/rp-gz');
    expect([head.status, head.headers.get('etag'), head.headers.get('content-length')]).toEqual([
      200,
      etag,
      '8',
    ]);
    // Not fetch: it adds Cache-Control: no-cache to a conditional request, and that asks for the body.
    const fresh = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const headers = { Authorization: `Bearer ${TOKENS.admin}`, 'If-None-Match': etag };
      http.get(`${base}/v1/kv/rp-gz`, { headers }, (res) => resolve(res.resume())).on('error', reject);
    });
    expect([fresh.statusCode, fresh.headers.etag]).toEqual([304, etag]);
    const stale = await request('GET', '/v1/kv/rp-gz', { headers: { 'If-None-Match': '"0-0-x"' } });
    expect([stale.status, await stale.text()]).toEqual([200, 'inflated']);
    // Both adapters send the same security headers.
    const names = (r: Response): string[] =>
      [...r.headers.keys()].filter((n) => /^(x-frame|content-sec|strict)/.test(n));
    expect(names(stale)).toEqual(names(got));
    expect(names(got)).toHaveLength(3);
  });

  it('keeps the Content-Type a PUT sent and answers GET and HEAD with it; refuses a malformed one, storing nothing', async () => {
    const json = await request('PUT', '/v1/kv/rp-ct', {
      body: '{"a":1}',
      headers: { 'Content-Type': 'application/json; charset=utf-8' },
    });
    expect(json.status).toBe(200);
    const got = await request('GET', '/v1/kv/rp-ct');
    expect([got.headers.get('content-type'), await got.text()]).toEqual([
      'application/json; charset=utf-8',
      '{"a":1}',
    ]);
    const head = await request('HEAD', '/v1/kv/rp-ct');
    expect(head.headers.get('content-type')).toBe('application/json; charset=utf-8');
    // Through express (a compressed body) as well.
    const gz = await request('PUT', '/v1/kv/rp-ct-gz', {
      body: gzipSync(Buffer.from('<p/>')),
      headers: { 'Content-Encoding': 'gzip', 'Content-Type': 'text/html' },
    });
    expect(gz.status).toBe(200);
    expect((await request('GET', '/v1/kv/rp-ct-gz')).headers.get('content-type')).toBe('text/html');
    // Bytes sent without one are served as bytes.
    const bare = await request('PUT', '/v1/kv/rp-ct-bare', { body: Buffer.from([1, 2, 3]) });
    expect(bare.status).toBe(200);
    expect((await request('GET', '/v1/kv/rp-ct-bare')).headers.get('content-type')).toBe(
      'application/octet-stream',
    );
    for (const bad of [
      'json',
      'text/',
      'a/b; =x',
      'a/b; c="unterminated',
      'a/b; c=d e',
      `a/${'b'.repeat(260)}`,
    ]) {
      const res = await request('PUT', '/v1/kv/rp-ct', {
        body: 'overwritten',
        headers: { 'Content-Type': bad },
      });
      const reply = (await res.json()) as { error: { code: string; message: string } };
      expect([bad, res.status, reply.error.code]).toEqual([bad, 400, 'bad_request']);
      expect(reply.error.message).toMatch(/Content-Type/);
    }
    expect(await stored('rp-ct')).toBe('{"a":1}');
  });

  it("the original design's /put takes any JSON value and /get gives the same value back", async () => {
    const values: unknown[] = [
      'text',
      42,
      -1.5,
      true,
      null,
      [1, 'two', { three: 3 }],
      { a: { b: [null] } },
      '',
    ];
    for (const [i, value] of values.entries()) {
      const put = await request('POST', '/put', {
        body: JSON.stringify({ key: `rp-json-${i}`, value }),
        headers: { 'Content-Type': 'application/json' },
      });
      expect([i, put.status]).toEqual([i, 200]);
      const got = await request('GET', `/get?key=rp-json-${i}`);
      expect(await got.json()).toEqual({ key: `rp-json-${i}`, value });
    }
    // A string is its UTF-8 bytes, as before; anything else its JSON text, typed so.
    const text = await request('GET', '/v1/kv/rp-json-0');
    expect([text.headers.get('content-type'), await text.text()]).toEqual([
      'text/plain; charset=utf-8',
      'text',
    ]);
    const object = await request('GET', '/v1/kv/rp-json-6');
    expect([object.headers.get('content-type'), await object.text()]).toEqual([
      'application/json',
      '{"a":{"b":[null]}}',
    ]);
    const missing = await request('POST', '/put', {
      body: JSON.stringify({ key: 'rp-json-missing' }),
      headers: { 'Content-Type': 'application/json' },
    });
    expect(missing.status).toBe(400);
    expect(await stored('rp-json-missing')).toBeUndefined();
  });

  it('refuses a precondition it does not evaluate with 501 naming the header, and writes nothing', async () => {
    expect((await request('PUT', '/v1/kv/rp-cond', { body: 'kept' })).status).toBe(200);
    const etag = (await request('GET', '/v1/kv/rp-cond')).headers.get('etag') as string;
    const refused: Array<[string, string, Record<string, string>, string, string?]> = [
      ['PUT', '/v1/kv/rp-cond', { 'If-Match': etag }, 'If-Match', 'overwritten'],
      ['PUT', '/v1/kv/rp-cond', { 'If-None-Match': '*' }, 'If-None-Match', 'overwritten'],
      [
        'PUT',
        '/v1/kv/rp-cond',
        { 'If-Unmodified-Since': new Date().toUTCString() },
        'If-Unmodified-Since',
        'x',
      ],
      ['DELETE', '/v1/kv/rp-cond', { 'If-Match': etag }, 'If-Match'],
      ['DELETE', '/delete?key=rp-cond', { 'If-Match': etag }, 'If-Match'],
      ['GET', '/v1/kv/rp-cond', { 'If-Match': '"0-0-x"' }, 'If-Match'],
    ];
    for (const [method, target, headers, name, body] of refused) {
      const res = await request(method, target, { headers, body });
      const reply = (await res.json()) as { error: { code: string; message: string } };
      expect([method, target, res.status, reply.error.code]).toEqual([
        method,
        target,
        501,
        'not_implemented',
      ]);
      expect(reply.error.message).toContain(name);
    }
    // Through express too (a compressed body) and the original design's /put.
    const gz = await request('PUT', '/v1/kv/rp-cond', {
      body: gzipSync(Buffer.from('overwritten')),
      headers: { 'Content-Encoding': 'gzip', 'If-Match': etag },
    });
    expect(gz.status).toBe(501);
    const legacy = await request('POST', '/put', {
      body: JSON.stringify({ key: 'rp-cond', value: 'overwritten' }),
      headers: { 'Content-Type': 'application/json', 'If-None-Match': '*' },
    });
    expect(legacy.status).toBe(501);
    expect(await stored('rp-cond')).toBe('kept');
    const after = await request('GET', '/v1/kv/rp-cond');
    expect(after.headers.get('etag')).toBe(etag);
  });

  it("serves the original design's routes with the same operations", async () => {
    const put = await request('POST', '/put', {
      body: JSON.stringify({ key: 'rp-legacy', value: 'v1' }),
      headers: { 'Content-Type': 'application/json' },
    });
    expect([put.status, await put.json()]).toEqual([200, { success: true }]);
    const got = await request('GET', '/get?key=rp-legacy');
    expect([got.status, await got.json()]).toEqual([200, { key: 'rp-legacy', value: 'v1' }]);
    expect((await request('DELETE', '/delete?key=rp-legacy')).status).toBe(200);
    expect(await stored('rp-legacy')).toBeUndefined();
    const wrong = await request('PUT', '/get?key=rp-legacy');
    expect([wrong.status, wrong.headers.get('allow')]).toEqual([405, 'GET, HEAD']);
  });

  it('expires a value written with a TTL', async () => {
    expect((await request('PUT', '/v1/kv/rp-ttl?ttl=1', { body: 'brief' })).status).toBe(200);
    expect(await stored('rp-ttl')).toBe('brief');
    const deadline = Date.now() + 5000;
    while ((await stored('rp-ttl')) !== undefined && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await stored('rp-ttl')).toBeUndefined();
  });
});

/** A request whose target fetch would normalise: sent as written, over node:http. */
function rawRequest(method: string, target: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/`, { method, path: target }, (res) => {
      res.resume();
      res.on('end', () => resolve(res));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('every response names the gateway', () => {
  it.each([
    ['a lean-path read', 'GET', '/v1/kv/rp-identity-none', 'admin', 404],
    ['a lean-path write refused without a key', 'PUT', '/v1/kv/rp-identity', 'none', 401],
    ['a read express serves (HEAD)', 'HEAD', '/v1/kv/rp-identity-none', 'admin', 404],
    ['a health probe', 'GET', '/healthz', 'none', 200],
    ['the cluster view', 'GET', '/v1/cluster', 'admin', 200],
    ['a route that does not exist', 'GET', '/nope', 'admin', 404],
    ['a method a route does not allow', 'GET', '/put', 'admin', 405],
  ] as const)('%s: %s %s', async (_what, method, path, who, status) => {
    const res = await request(method, path, { who, ...(method === 'PUT' ? { body: 'v' } : {}) });
    expect(res.status).toBe(status);
    expect(res.headers.get(IDENTITY_HEADER)).toBe(identity('gateway'));
  });

  it("a target express's router cannot parse", async () => {
    const res = await rawRequest('GET', '//#@a/');
    expect(res.statusCode).toBe(404);
    expect(res.headers[IDENTITY_HEADER]).toBe(identity('gateway'));
  });
});

describe('bad input changes nothing', () => {
  it.each([
    ['an invalid percent-encoding', 'PUT', '/v1/kv/%zz', {}, 400],
    ['an empty key', 'PUT', '/v1/kv/', {}, 400],
    ['a key over the limit', 'PUT', `/v1/kv/${'k'.repeat(DEFAULT_LIMITS.maxKeyBytes + 1)}`, {}, 413],
    ['a TTL that is not a number', 'PUT', '/v1/kv/rp-bad?ttl=soon', {}, 400],
    ['an unknown consistency level', 'PUT', '/v1/kv/rp-bad', { 'X-Consistency': 'most' }, 400],
    ['a value over the limit', 'PUT', '/v1/kv/rp-bad', {}, 413, 'x'.repeat(DEFAULT_LIMITS.maxValueBytes + 1)],
  ] as const)(
    '%s: refused before any replica is asked',
    async (_what, method, path, headers, status, body = 'v') => {
      const calls = await replicaCalls(async () => {
        const res = await request(method, path, { headers, body });
        expect(res.status).toBe(status);
        expect((await errorOf(res)).code).toBe(status === 400 ? 'bad_request' : 'payload_too_large');
      });
      expect(calls).toEqual([]);
      expect(await stored('rp-bad')).toBeUndefined();
    },
  );
});

describe('auth', () => {
  it('refuses a write without a key with 401 and the Bearer challenge, and stores nothing', async () => {
    const calls = await replicaCalls(async () => {
      const res = await request('PUT', '/v1/kv/rp-noauth', { who: 'none', body: 'v' });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="kvstore"');
      expect((await errorOf(res)).code).toBe('unauthorized');
    });
    expect(calls).toEqual([]);
    expect(await stored('rp-noauth')).toBeUndefined();
  });

  it.each([
    ['a read-only key writing', 'reader' as const, '/v1/kv/rp-ro'],
    ['a prefixed key writing outside its prefix', 'team' as const, '/v1/kv/rp-outside'],
  ])('refuses %s with 403 on both adapters, and stores nothing', async (_what, who, path) => {
    const calls = await replicaCalls(async () => {
      const lean = await request('PUT', path, { who, body: 'v' });
      const viaExpress = await request('PUT', path, {
        who,
        body: gzipSync(Buffer.from('v')),
        headers: { 'Content-Encoding': 'gzip' },
      });
      expect([lean.status, viaExpress.status]).toEqual([403, 403]);
      expect(await errorOf(lean)).toEqual(await errorOf(viaExpress));
    });
    expect(calls).toEqual([]);
    expect(await stored(path.slice('/v1/kv/'.length))).toBeUndefined();
  });

  it('lets a prefixed key write inside its prefix', async () => {
    expect((await request('PUT', `/v1/kv/${TEAM_PREFIX}rp-in`, { who: 'team', body: 'ok' })).status).toBe(
      200,
    );
    expect(await stored(`${TEAM_PREFIX}rp-in`)).toBe('ok');
  });
});

describe('with replicas down', () => {
  it('still answers at quorum with one of three replicas cut off', async () => {
    cluster.faults.cut('n1');
    expect((await request('PUT', '/v1/kv/rp-one-down', { body: 'still' })).status).toBe(200);
    const got = await request('GET', '/v1/kv/rp-one-down');
    expect([got.status, await got.text()]).toEqual([200, 'still']);
    const all = await request('GET', '/v1/kv/rp-one-down', { headers: { 'X-Consistency': 'all' } });
    expect(all.status).toBe(503);
  });

  it('answers 503 with Retry-After, naming the replicas that failed, with two of three cut off', async () => {
    cluster.faults.cut('n1');
    cluster.faults.cut('n2');
    for (const res of [
      await request('PUT', '/v1/kv/rp-two-down', { body: 'v' }),
      await request('GET', '/v1/kv/rp-two-down'),
      await request('GET', '/get?key=rp-two-down'),
    ]) {
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      const err = await errorOf(res);
      expect(err.code).toBe('unavailable');
      expect(err.message).toMatch(/n1: \w+/);
      expect(err.message).toMatch(/n2: \w+/);
    }
  });
});

describe('the observer', () => {
  it('records both adapters under the same metrics, labelled by op, status and consistency', async () => {
    await request('GET', '/v1/kv/rp-metrics-absent', { headers: { 'X-Consistency': 'one' } });
    await request('GET', '/get?key=rp-metrics-absent', { headers: { 'X-Consistency': 'one' } });
    await request('GET', '/v1/kv/rp-metrics-absent', { headers: { 'X-Consistency': 'bogus' } });
    const sum = (
      values: readonly { labels: Record<string, string | number>; value: number; metricName?: string }[],
      want: Record<string, string>,
      metricName?: string,
    ): number =>
      values
        .filter((v) => metricName === undefined || v.metricName === metricName)
        .filter((v) => Object.entries(want).every(([k, x]) => String(v.labels[k]) === x))
        .reduce((a, v) => a + v.value, 0);
    const requests = (await metrics.httpRequests.get()).values;
    expect(sum(requests, { op: 'get', method: 'GET', status: '404' })).toBeGreaterThanOrEqual(2);
    expect(sum(requests, { op: 'get', method: 'GET', status: '400' })).toBeGreaterThanOrEqual(1);
    const latency = (await metrics.httpDuration.get()).values;
    const count = 'kvstore_gateway_http_request_duration_seconds_count';
    expect(sum(latency, { op: 'get', outcome: 'client_error', consistency: 'one' }, count)).toBe(2);
    expect(
      latency.filter((v) => !['one', 'quorum', 'all', 'none'].includes(String(v.labels.consistency))),
    ).toEqual([]);
  });
});
