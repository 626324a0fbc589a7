import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { ApiKeySet, hashToken, newToken } from '../common/api-keys';
import { PartitionMapHolder } from '../common/metadata-store';
import { partitionOf } from '../common/hash';
import { encodeRecord, type KvRecord } from '../common/record';
import type { RpcOp } from '../common/rpc-protocol';
import { waitFor } from '../e2e/wait-for';
import { InProcessCluster } from '../e2e/in-process-cluster';
import type { GatewayDeps } from './gateway-deps';
import { GatewayMetrics } from './metrics';
import type { BatchResultReply as BatchResult } from '../common/rest-api';
import { MAX_BATCH_OPERATIONS } from '../common/rest-api';
import { rateLimitAdmission, RequestRateLimiter } from './rate-limit';
import { createRequestListener } from './request-listener';
import { DEFAULT_LIMITS } from './request-input';
import { SERVER_LIMITS } from './server-limits';

/**
 * POST /v1/batch over real storage nodes in this process (e2e/in-process-cluster.ts: real LMDB, real
 * RPC on loopback), through the gateway's real request path and its real (in-memory) rate limiter.
 * The harness's fault layer sees every RPC the gateway sends, so the tests count them per node.
 */

jest.setTimeout(60_000);

const TOKENS = { admin: newToken(), reader: newToken(), team: newToken() };
const KEYS = ApiKeySet.parse(
  JSON.stringify({
    keys: [
      { id: 'admin', sha256: hashToken(TOKENS.admin), role: 'admin' },
      { id: 'reader', sha256: hashToken(TOKENS.reader), role: 'read' },
      { id: 'team', sha256: hashToken(TOKENS.team), role: 'readwrite', prefix: 'team/' },
    ],
  }),
);
/** Requests per minute per client address, far above what these tests send (one test has its own limit). */
const PER_ADDRESS = 100_000;

let cluster: InProcessCluster;
let maps: PartitionMapHolder;
let limiter: RequestRateLimiter;
let server: http.Server;
let base: string;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ nodes: 3 });
  const log = pino({ level: process.env.LOG_LEVEL ?? 'silent' });
  maps = await PartitionMapHolder.follow(cluster.store, log);
  limiter = new RequestRateLimiter({
    cluster: 'batch-test',
    perKey: 0,
    perAddress: PER_ADDRESS,
    windowSeconds: 60,
    log,
  });
  const deps: GatewayDeps = {
    coordinator: await cluster.coordinator('gw-batch'),
    maps,
    pool: await cluster.peers('gw-batch'),
    metrics: new GatewayMetrics({ gateway: 'gw-batch' }),
    log,
    limits: { ...DEFAULT_LIMITS, maxBatchBytes: 2 * 1024 * 1024 },
    auth: { keys: () => KEYS },
    admission: rateLimitAdmission(limiter),
  };
  server = http.createServer(SERVER_LIMITS, createRequestListener(deps));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(() => cluster.faults.heal());

afterAll(async () => {
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  await limiter?.close();
  maps?.stop();
  await cluster?.close();
});

type Op = Record<string, unknown>;
const b64 = (s: string): string => Buffer.from(s).toString('base64');

async function post(
  operations: unknown,
  opts: { who?: keyof typeof TOKENS; consistency?: string; raw?: string } = {},
): Promise<{ status: number; body: { results?: BatchResult[]; error?: { code: string; message: string } } }> {
  const headers: Record<string, string> = {
    Authorization: `Bearer ${TOKENS[opts.who ?? 'admin']}`,
    'Content-Type': 'application/json',
  };
  if (opts.consistency) headers['X-Consistency'] = opts.consistency;
  const res = await fetch(`${base}/v1/batch`, {
    method: 'POST',
    headers,
    body: opts.raw ?? JSON.stringify({ operations }),
  });
  return { status: res.status, body: (await res.json()) as never };
}

async function get(key: string): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`${base}/v1/kv/${key}`, {
    headers: { Authorization: `Bearer ${TOKENS.admin}`, 'X-Consistency': 'all' },
  });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

/** The RPCs the gateway sends while `run` runs, by op and node. */
async function countRpcs(run: () => Promise<unknown>): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  const stop = cluster.faults.add((c: { from: string; to: string; op: RpcOp }) => {
    if (c.from === 'gw-batch') seen.set(`${c.op} ${c.to}`, (seen.get(`${c.op} ${c.to}`) ?? 0) + 1);
    return undefined;
  });
  try {
    await run();
  } finally {
    stop();
  }
  return seen;
}

describe('POST /v1/batch', () => {
  it('runs gets, puts and deletes in order, each with its own result', async () => {
    expect((await post([{ op: 'put', key: 'b/old', value: b64('was') }])).status).toBe(200);
    const { status, body } = await post([
      { op: 'put', key: 'b/json', value: b64('{"a":1}'), contentType: 'application/json' },
      { op: 'put', key: 'b/ttl', value: b64('brief'), ttl: 3600 },
      { op: 'get', key: 'b/old' },
      { op: 'get', key: 'b/never' },
      { op: 'delete', key: 'b/old' },
    ]);
    expect(status).toBe(200);
    const r = body.results ?? [];
    expect(r.map((x) => [x.status, x.key])).toEqual([
      [200, 'b/json'],
      [200, 'b/ttl'],
      [200, 'b/old'],
      [404, 'b/never'],
      [200, 'b/old'],
    ]);
    expect(r[0]?.version).toMatch(/^\d+\.\d+\./);
    expect(r[2]).toMatchObject({ value: b64('was'), contentType: 'application/octet-stream' });
    expect(r[3]?.error?.code).toBe('not_found');
    expect(await get('b/json')).toEqual({ status: 200, type: 'application/json', text: '{"a":1}' });
    expect((await get('b/old')).status).toBe(404);
    // What a batch wrote reads back through a batch, with its type.
    const again = await post([{ op: 'get', key: 'b/json' }]);
    expect(again.body.results?.[0]).toMatchObject({
      status: 200,
      value: b64('{"a":1}'),
      contentType: 'application/json',
    });
  });

  it('runs operations on one key in the order given', async () => {
    const { body } = await post([
      { op: 'put', key: 'b/seq', value: b64('first') },
      { op: 'get', key: 'b/seq' },
      { op: 'put', key: 'b/seq', value: b64('second') },
      { op: 'get', key: 'b/seq' },
      { op: 'delete', key: 'b/seq' },
      { op: 'get', key: 'b/seq' },
    ]);
    expect(body.results?.map((r) => [r.status, r.value])).toEqual([
      [200, undefined],
      [200, b64('first')],
      [200, undefined],
      [200, b64('second')],
      [200, undefined],
      [404, undefined],
    ]);
  });

  it('sends one write RPC and at most one read RPC per node for a batch of 200', async () => {
    const puts: Op[] = Array.from({ length: 200 }, (_, i) => ({
      op: 'put',
      key: `b/many/${i}`,
      value: b64(`v${i}`),
    }));
    const writes = await countRpcs(async () => expect((await post(puts)).status).toBe(200));
    // RF 3 of 3 nodes: every key is on every node, and each node got all 200 in one call.
    expect([...writes].sort()).toEqual([
      ['write n1', 1],
      ['write n2', 1],
      ['write n3', 1],
    ]);
    const gets: Op[] = puts.map((p) => ({ op: 'get', key: p.key }));
    let results: BatchResult[] = [];
    const reads = await countRpcs(async () => {
      results = (await post(gets)).body.results ?? [];
    });
    expect(results.map((x) => x.value)).toEqual(puts.map((p) => p.value));
    // Quorum reads ask 2 of the 3 replicas of each key, so some node gets each key's read; no node more than one call.
    expect([...reads.keys()].every((k) => k.startsWith('read '))).toBe(true);
    expect([...reads.values()].every((n) => n === 1)).toBe(true);
    expect(reads.size).toBeGreaterThanOrEqual(2);
  });

  it('answers an invalid operation with a 400 naming its index, and runs the others', async () => {
    const { status, body } = await post([
      { op: 'put', key: 'b/fine', value: b64('ok') },
      { op: 'put', key: 'b/inv/b64', value: 'not base64!' },
      { op: 'frob', key: 'b/x' },
      { op: 'put', key: '', value: b64('x') },
      { op: 'put', key: 'b/inv/ttl', value: b64('x'), ttl: 0 },
      { op: 'put', key: 'b/inv/type', value: b64('x'), contentType: 'nope' },
      { op: 'get', key: 'b/fine', value: b64('x') },
      'not an object',
      {
        op: 'put',
        key: 'b/inv/big',
        value: Buffer.alloc(DEFAULT_LIMITS.maxValueBytes + 1).toString('base64'),
      },
    ]);
    expect(status).toBe(200);
    const r = body.results ?? [];
    expect(r.map((x) => x.status)).toEqual([200, 400, 400, 400, 400, 400, 400, 400, 413]);
    for (const [i, x] of r.entries())
      if (i > 0) expect(x.error?.message).toMatch(new RegExp(`^operations\\[${i}\\]: `));
    expect(r[6]?.error?.message).toMatch(/unknown field "value" for get/);
    for (const k of ['b/inv/b64', 'b/inv/ttl', 'b/inv/type', 'b/inv/big'])
      expect((await get(k)).status).toBe(404);
    expect((await get('b/fine')).text).toBe('ok');
  });

  it('refuses a malformed batch whole: not an object, no operations, too many, too large', async () => {
    expect((await post(undefined, { raw: '[]' })).status).toBe(400);
    expect((await post(undefined, { raw: '{"operations":[]}' })).status).toBe(400);
    expect((await post(undefined, { raw: '{"operations":[],"extra":1}' })).body.error?.message).toMatch(
      /unknown field "extra"/,
    );
    const tooMany = Array.from({ length: MAX_BATCH_OPERATIONS + 1 }, (_, i) => ({
      op: 'get',
      key: `b/t/${i}`,
    }));
    const many = await post(tooMany);
    expect([many.status, many.body.error?.message]).toEqual([
      400,
      `a batch carries at most 1000 operations, this one 1001`,
    ]);
    // Over the body limit (2 MiB here): 413 before anything is parsed or stored.
    const big = Array.from({ length: 3 }, (_, i) => ({
      op: 'put',
      key: `b/huge/${i}`,
      value: Buffer.alloc(900_000).toString('base64'),
    }));
    const huge = await post(big);
    expect([huge.status, huge.body.error?.code]).toEqual([413, 'payload_too_large']);
    expect((await get('b/huge/0')).status).toBe(404);
  });

  it("authorises each operation: a read key's writes and a prefixed key's outside keys get 403", async () => {
    await post([{ op: 'put', key: 'team/a', value: b64('t') }]);
    const reader = await post(
      [
        { op: 'get', key: 'team/a' },
        { op: 'put', key: 'team/b', value: b64('no') },
        { op: 'delete', key: 'team/a' },
      ],
      { who: 'reader' },
    );
    expect(reader.body.results?.map((x) => x.status)).toEqual([200, 403, 403]);
    const team = await post(
      [
        { op: 'put', key: 'team/c', value: b64('yes') },
        { op: 'put', key: 'other/c', value: b64('no') },
        { op: 'get', key: 'other/c' },
      ],
      { who: 'team' },
    );
    expect(team.body.results?.map((x) => x.status)).toEqual([200, 403, 403]);
    expect((await get('other/c')).status).toBe(404);
    expect((await get('team/a')).text).toBe('t');
  });

  it('with a replica cut off: every operation answers at quorum, and each is a 503 of its own at all', async () => {
    cluster.faults.cut('n3');
    const ops: Op[] = [
      { op: 'put', key: 'b/down/1', value: b64('1') },
      { op: 'get', key: 'b/fine' },
    ];
    const quorum = await post(ops, { consistency: 'quorum' });
    expect(quorum.body.results?.map((x) => x.status)).toEqual([200, 200]);
    const all = await post(ops, { consistency: 'all' });
    expect(all.status).toBe(200);
    expect(all.body.results?.map((x) => [x.status, x.error?.code])).toEqual([
      [503, 'unavailable'],
      [503, 'unavailable'],
    ]);
    expect(all.body.results?.[0]?.error?.message).toMatch(/n3/);
  });

  it('repairs stale replicas a batch read: one write RPC per stale node, carrying all its keys', async () => {
    const keys = Array.from({ length: 10 }, (_, i) => `b/stale/${i}`);
    await post(keys.map((key) => ({ op: 'put', key, value: b64('old') })));
    // n1 alone gets a newer version of each key, as if the write had reached it and no other.
    const map = await cluster.map();
    const newer = keys.map((key) => {
      const k = Buffer.from(key);
      const p = partitionOf(k, map.partitionCount);
      const held = cluster.node('n1').storage.get(p, k) as KvRecord;
      const rec: KvRecord = {
        ...held,
        version: { ...held.version, wall: held.version.wall + 1 },
        value: Buffer.from('new'),
      };
      return { p, k, r: encodeRecord(rec) };
    });
    await (await cluster.client('n1')).call({ op: 'write', items: newer });
    let results: BatchResult[] = [];
    const rpcs = await countRpcs(async () => {
      results =
        (
          await post(
            keys.map((key) => ({ op: 'get', key })),
            { consistency: 'all' },
          )
        ).body.results ?? [];
      await waitFor(
        'n2 and n3 repaired',
        async () =>
          newer.every(({ p, k }) =>
            ['n2', 'n3'].every((n) => cluster.node(n).storage.get(p, k)?.value.toString() === 'new'),
          ),
        10_000,
        20,
      );
    });
    expect(results.map((r) => r.value)).toEqual(keys.map(() => b64('new')));
    expect([...rpcs].sort()).toEqual([
      ['read n1', 1],
      ['read n2', 1],
      ['read n3', 1],
      ['write n2', 1],
      ['write n3', 1],
    ]);
  });

  it('leaves the writes that missed a cut replica as hints, one hint RPC per holder, and they reach it', async () => {
    const keys = Array.from({ length: 20 }, (_, i) => `b/hinted/${i}`);
    // Only the gateway cannot reach n3: the holders can hand the hints off at once.
    cluster.faults.cut('n3', 'gw-batch');
    const rpcs = await countRpcs(async () => {
      const r = await post(
        keys.map((key) => ({ op: 'put', key, value: b64('h') })),
        { consistency: 'quorum' },
      );
      expect(r.body.results?.map((x) => x.status)).toEqual(keys.map(() => 200));
      const map = await cluster.map();
      await waitFor(
        'n3 to hold every write it missed',
        async () =>
          keys.every((key) => {
            const k = Buffer.from(key);
            return (
              cluster.node('n3').storage.get(partitionOf(k, map.partitionCount), k)?.value.toString() === 'h'
            );
          }),
        10_000,
        20,
      );
    });
    const hintRpcs = [...rpcs].filter(([k]) => k.startsWith('hint ')).map(([, n]) => n);
    expect(hintRpcs.length).toBeGreaterThan(0);
    expect(hintRpcs.every((n) => n === 1)).toBe(true);
  });

  it('a replica holding its reads back: the round asks the next replica after the hedge, not waiting for it', async () => {
    const gw = await cluster.coordinator('gw-hedge', { readHedgeMs: 20 });
    const keys = Array.from({ length: 30 }, (_, i) => Buffer.from(`b/hedge/${i}`));
    await gw.batch(
      keys.map((key) => ({ op: 'put', key, value: Buffer.from('x') })),
      { consistency: 'all' },
    );
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let released = false;
    // A safety net so a broken hedge fails the test instead of hanging it.
    const net = setTimeout(() => {
      released = true;
      release();
    }, 15_000);
    const stop = cluster.faults.add((c) =>
      c.from === 'gw-hedge' && c.to === 'n1' && c.op === 'read' ? { until: held } : undefined,
    );
    try {
      const out = await gw.batch(
        keys.map((key) => ({ op: 'get', key })),
        { consistency: 'quorum' },
      );
      expect(released).toBe(false);
      expect(out.map((o) => (o.ok && o.op === 'get' ? o.record?.value.toString() : o))).toEqual(
        keys.map(() => 'x'),
      );
    } finally {
      stop();
      clearTimeout(net);
      release();
    }
  });

  it('counts every operation against the rate limits, as that many requests would be', async () => {
    // A gateway of its own, allowing 150 requests a minute per client address.
    const log = pino({ level: 'silent' });
    const own = new RequestRateLimiter({
      cluster: 'batch-test',
      perKey: 0,
      perAddress: 150,
      windowSeconds: 60,
      log,
    });
    const gw = http.createServer(
      SERVER_LIMITS,
      createRequestListener({
        coordinator: await cluster.coordinator('gw-limited'),
        maps,
        pool: await cluster.peers('gw-limited'),
        metrics: new GatewayMetrics({ gateway: 'gw-limited' }),
        log,
        limits: DEFAULT_LIMITS,
        auth: 'off',
        admission: rateLimitAdmission(own),
      }),
    );
    await new Promise<void>((resolve) => gw.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(gw.address() as AddressInfo).port}`;
    const send = async (n: number): Promise<number> => {
      const operations = Array.from({ length: n }, (_, i) => ({ op: 'get', key: `b/rl/${i}` }));
      const res = await fetch(`${url}/v1/batch`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ operations }),
      });
      await res.arrayBuffer();
      return res.status;
    };
    try {
      expect(await send(100)).toBe(200); // 100 of 150
      expect(await send(51)).toBe(429); // 151: refused whole, and counted
      const single = await fetch(`${url}/v1/kv/b/fine`);
      expect(single.status).toBe(429);
    } finally {
      await new Promise<void>((resolve) => gw.close(() => resolve()));
      await own.close();
    }
  });
});
