import fs from 'node:fs';
import path from 'node:path';
import { alive, startTestCluster, type TestCluster } from './cluster-harness';

/**
 * The public API against a real local cluster: 3 node processes with LMDB on
 * disk, a gateway process, real sockets.
 */
jest.setTimeout(60_000);

let tc: TestCluster;
let url: string;

beforeAll(async () => {
  // debug logs, so the test below can follow a request id into the nodes' logs
  tc = await startTestCluster({ env: { LOG_LEVEL: 'debug' } });
  url = tc.url;
});

afterAll(async () => {
  await tc?.stop(true);
});

const kv = (key: string): string => `${url}/v1/kv/${key}`;

async function json(res: Response): Promise<Record<string, unknown>> {
  expect(res.headers.get('content-type')).toMatch(/application\/json/);
  return (await res.json()) as Record<string, unknown>;
}

async function expectError(res: Response, status: number, code: string): Promise<void> {
  expect(res.status).toBe(status);
  const body = (await json(res)) as { error?: { code?: string; message?: string } };
  expect(body.error?.code).toBe(code);
  expect(typeof body.error?.message).toBe('string');
}

describe('/v1/kv', () => {
  it('stores binary values byte for byte and returns the version as ETag', async () => {
    const value = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 31) % 256));
    const put = await fetch(kv('bin'), { method: 'PUT', body: value });
    expect(put.status).toBe(200);
    const { key, version } = (await json(put)) as { key: string; version: string };
    expect(key).toBe('bin');
    expect(version).toMatch(/^\d+\.\d+\.gw-local$/);

    const get = await fetch(kv('bin'));
    expect(get.status).toBe(200);
    expect(get.headers.get('etag')).toBe(`"${version}"`);
    expect(Buffer.from(await get.arrayBuffer()).equals(value)).toBe(true);
  });

  it('treats everything after /v1/kv/ as the key, slashes and non-ASCII included', async () => {
    const keys = ['a/b/c', 'ключ/значение', '🔑 with spaces', 'q?x=1&y=2#frag', '%41'];
    for (const k of keys) {
      const put = await fetch(`${url}/v1/kv/${k.split('/').map(encodeURIComponent).join('/')}`, {
        method: 'PUT',
        body: `value of ${k}`,
      });
      expect(put.status).toBe(200);
      expect(((await put.json()) as { key: string }).key).toBe(k);
    }
    for (const k of keys) {
      // fully encoded slashes name the same key
      const get = await fetch(kv(encodeURIComponent(k)));
      expect(get.status).toBe(200);
      expect(await get.text()).toBe(`value of ${k}`);
    }
  });

  it('overwrites with a higher version, deletes, and answers 404 afterwards', async () => {
    const v1 = (
      (await (await fetch(kv('life'), { method: 'PUT', body: 'one' })).json()) as { version: string }
    ).version;
    const v2 = (
      (await (await fetch(kv('life'), { method: 'PUT', body: 'two' })).json()) as { version: string }
    ).version;
    expect(v2).not.toBe(v1);
    expect(await (await fetch(kv('life'))).text()).toBe('two');

    const del = await fetch(kv('life'), { method: 'DELETE' });
    expect(del.status).toBe(200);
    const body = (await json(del)) as { key: string; version: string };
    expect(body.key).toBe('life');
    expect(body.version).toMatch(/^\d+\.\d+\./);
    await expectError(await fetch(kv('life')), 404, 'not_found');

    // deleting an absent key is not an error
    const again = await fetch(kv('never-existed'), { method: 'DELETE' });
    expect(again.status).toBe(200);
  });

  it('stores an empty value as an empty value, not as absent', async () => {
    expect((await fetch(kv('empty'), { method: 'PUT', body: '' })).status).toBe(200);
    const get = await fetch(kv('empty'));
    expect(get.status).toBe(200);
    expect(await get.text()).toBe('');
  });

  it('honours ?ttl= and stops returning the key once it expires', async () => {
    const put = await fetch(`${kv('short-lived')}?ttl=1`, { method: 'PUT', body: 'soon gone' });
    expect(put.status).toBe(200);
    expect((await fetch(kv('short-lived'))).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1300));
    await expectError(await fetch(kv('short-lived')), 404, 'not_found');
  });

  it('serves every consistency level: a read whose R makes W + R > RF sees the write', async () => {
    // (put level, get level): 1 + 3, 2 + 2 and 3 + 1 acknowledgements, each more than RF = 3.
    // A `one` read after a `one` write has no such promise, so it is not asserted.
    const pairs = [
      ['one', 'all'],
      ['quorum', 'quorum'],
      ['all', 'one'],
    ];
    for (const [w, r] of pairs) {
      const put = await fetch(kv(`level-${w}`), { method: 'PUT', body: w, headers: { 'X-Consistency': w } });
      expect(put.status).toBe(200);
      const get = await fetch(kv(`level-${w}`), { headers: { 'X-Consistency': r } });
      expect(await get.text()).toBe(w);
    }
  });

  it('passes the caller request id through to the logs of the gateway and every replica', async () => {
    const rid = `trace-${Date.now()}`;
    const res = await fetch(kv('rid'), { method: 'PUT', body: 'x', headers: { 'X-Request-Id': rid } });
    expect(res.headers.get('x-request-id')).toBe(rid);
    const logged = (file: string): boolean =>
      fs
        .readFileSync(path.join(tc.cluster.logDir, file), 'utf8')
        .split('\n')
        .some((line) => line.includes(`"rid":"${rid}"`));
    // log lines are written asynchronously; give them a moment
    for (let i = 0; i < 50 && !['gateway', ...tc.cluster.nodeIds()].every((f) => logged(`${f}.log`)); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const f of ['gateway', ...tc.cluster.nodeIds()]) expect([f, logged(`${f}.log`)]).toEqual([f, true]);
  });
});

describe("the original design's routes", () => {
  it('POST /put, GET /get, DELETE /delete answer as the original client expects', async () => {
    const put = await fetch(`${url}/put`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ key: 'legacy/k', value: 'héllo' }),
    });
    expect(put.status).toBe(200);
    expect(await put.json()).toEqual({ success: true });

    const get = await fetch(`${url}/get?key=${encodeURIComponent('legacy/k')}`);
    expect(get.status).toBe(200);
    expect(await get.json()).toEqual({ key: 'legacy/k', value: 'héllo' });

    // both APIs see the same data
    expect(await (await fetch(kv('legacy/k'))).text()).toBe('héllo');

    const del = await fetch(`${url}/delete?key=${encodeURIComponent('legacy/k')}`, { method: 'DELETE' });
    expect(await del.json()).toEqual({ success: true });
    await expectError(await fetch(`${url}/get?key=legacy%2Fk`), 404, 'not_found');
  });
});

describe('cluster and health endpoints', () => {
  it('GET /v1/cluster shows the map, nodes and their state', async () => {
    const res = await fetch(`${url}/v1/cluster`);
    const body = (await json(res)) as {
      epoch: number;
      replicationFactor: number;
      partitionCount: number;
      nodes: { id: string; status: string; partitions: number }[];
      partitions: string[][];
      moves: unknown[];
    };
    expect(body.epoch).toBeGreaterThanOrEqual(1);
    expect(body.replicationFactor).toBe(3);
    expect(body.partitionCount).toBe(64);
    expect(body.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3']);
    expect(body.nodes.every((n) => n.partitions === 64)).toBe(true);
    expect(body.partitions).toHaveLength(64);
    expect(body.moves).toEqual([]);
  });

  it('serves /healthz, /readyz and Prometheus /metrics with the documented names', async () => {
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const m of [
      'kvstore_gateway_http_requests_total',
      'kvstore_gateway_http_request_duration_seconds_bucket',
      'kvstore_gateway_replica_requests_total',
      'kvstore_gateway_map_epoch',
    ]) {
      expect(text).toContain(m);
    }
    expect(text).toMatch(/kvstore_gateway_http_requests_total\{[^}]*op="put"[^}]*status="200"[^}]*\} \d+/);
  });
});

describe('bad input', () => {
  const control: Record<string, string> = { 'control/a': 'alpha', 'control/b': 'beta', 'control/c': 'gamma' };

  beforeAll(async () => {
    for (const [k, v] of Object.entries(control)) {
      expect((await fetch(kv(k), { method: 'PUT', body: v })).status).toBe(200);
    }
  });

  it.each([
    ['empty key', () => fetch(`${url}/v1/kv/`, { method: 'PUT', body: 'x' }), 400, 'bad_request'],
    // GET /v1/kv with no key is a listing; a write there names no key.
    [
      'a write with no key at all',
      () => fetch(`${url}/v1/kv`, { method: 'PUT', body: 'x' }),
      405,
      'method_not_allowed',
    ],
    ['a read of an empty key', () => fetch(`${url}/v1/kv/`), 400, 'bad_request'],
    [
      'invalid percent-encoding',
      () => fetch(`${url}/v1/kv/%E0%A4%A`, { method: 'PUT', body: 'x' }),
      400,
      'bad_request',
    ],
    ['percent-encoded invalid UTF-8', () => fetch(`${url}/v1/kv/%FF%FE`), 400, 'bad_request'],
    [
      'key over 1 KiB',
      () => fetch(kv('k'.repeat(1025)), { method: 'PUT', body: 'x' }),
      413,
      'payload_too_large',
    ],
    [
      'value over 1 MiB',
      () => fetch(kv('big'), { method: 'PUT', body: Buffer.alloc(1024 * 1024 + 1) }),
      413,
      'payload_too_large',
    ],
    ['bad consistency', () => fetch(kv('x'), { headers: { 'X-Consistency': 'most' } }), 400, 'bad_request'],
    ['bad ttl', () => fetch(`${kv('x')}?ttl=soon`, { method: 'PUT', body: 'x' }), 400, 'bad_request'],
    [
      'wrong method on /v1/kv',
      () => fetch(kv('x'), { method: 'POST', body: 'x' }),
      405,
      'method_not_allowed',
    ],
    ['wrong method on /put', () => fetch(`${url}/put`), 405, 'method_not_allowed'],
    ['wrong method on /get', () => fetch(`${url}/get?key=a`, { method: 'POST' }), 405, 'method_not_allowed'],
    ['unknown route', () => fetch(`${url}/v2/kv/x`), 404, 'not_found'],
    [
      'malformed JSON on /put',
      () =>
        fetch(`${url}/put`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"key": "a", "value": ',
        }),
      400,
      'bad_request',
    ],
    [
      'JSON array on /put',
      () =>
        fetch(`${url}/put`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '["a","b"]',
        }),
      400,
      'bad_request',
    ],
    [
      '/put without a value',
      () =>
        fetch(`${url}/put`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"key":"control/a"}',
        }),
      400,
      'bad_request',
    ],
    [
      'missing key on /put',
      () =>
        fetch(`${url}/put`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"value":"v"}',
        }),
      400,
      'bad_request',
    ],
    [
      '/put without a JSON content type',
      () => fetch(`${url}/put`, { method: 'POST', body: 'key=control/a&value=x' }),
      400,
      'bad_request',
    ],
    ['/get without key', () => fetch(`${url}/get`), 400, 'bad_request'],
    ['/get with two keys', () => fetch(`${url}/get?key=a&key=b`), 400, 'bad_request'],
    ['/delete with empty key', () => fetch(`${url}/delete?key=`, { method: 'DELETE' }), 400, 'bad_request'],
  ])('%s is refused with a JSON error', async (_name, send, status, code) => {
    await expectError(await send(), status, code);
  });

  it('leaves every process up and every stored value unchanged', async () => {
    for (const name of [...tc.cluster.nodeIds(), 'gateway']) expect(alive(tc.cluster.pid(name))).toBe(true);
    for (const [k, v] of Object.entries(control)) {
      const res = await fetch(kv(k), { headers: { 'X-Consistency': 'all' } });
      expect(await res.text()).toBe(v);
    }
    await expectError(await fetch(kv('big')), 404, 'not_found');
    await expectError(await fetch(kv('x')), 404, 'not_found');
  });
});
