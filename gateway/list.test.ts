import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { ApiKeySet, hashToken, newToken } from '../common/api-keys';
import { partitionOf } from '../common/hash';
import { formatVersion } from '../common/hlc';
import { PartitionMapHolder } from '../common/metadata-store';
import { replicasOf } from '../common/partition-map';
import { encodeRecord, type KvRecord } from '../common/record';
import type { ListReply } from '../common/rest-api';
import type { RpcOp } from '../common/rpc-protocol';
import { InProcessCluster } from '../e2e/in-process-cluster';
import { waitFor } from '../e2e/wait-for';
import type { GatewayDeps } from './gateway-deps';
import { GatewayMetrics } from './metrics';
import { createRequestListener } from './request-listener';
import { DEFAULT_LIMITS } from './request-input';
import { SERVER_LIMITS } from './server-limits';

/**
 * GET /v1/kv (listings) over real storage nodes in this process (e2e/in-process-cluster.ts: real
 * LMDB, real RPC on loopback), through the gateway's real request path. Four nodes at replication
 * factor 3 over 32 partitions, so each node holds a different part of every range. The harness's
 * fault layer sees every RPC the gateway sends: the tests count them and cut nodes off.
 */

jest.setTimeout(60_000);

const GW = 'gw-list';
const TOKENS = { admin: newToken(), team: newToken() };
const KEYS = ApiKeySet.parse(
  JSON.stringify({
    keys: [
      { id: 'admin', sha256: hashToken(TOKENS.admin), role: 'admin' },
      { id: 'team', sha256: hashToken(TOKENS.team), role: 'readwrite', prefix: 'team/' },
    ],
  }),
);

let cluster: InProcessCluster;
let maps: PartitionMapHolder;
let metrics: GatewayMetrics;
let server: http.Server;
let base: string;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ nodes: 4, replicationFactor: 3, partitionCount: 32 });
  const log = pino({ level: process.env.LOG_LEVEL ?? 'silent' });
  maps = await PartitionMapHolder.follow(cluster.store, log);
  metrics = new GatewayMetrics({ gateway: GW });
  const deps: GatewayDeps = {
    coordinator: await cluster.coordinator(GW),
    maps,
    pool: await cluster.peers(GW),
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

interface Reply {
  status: number;
  body: ListReply & { error?: { code: string; message: string } };
}

async function list(
  query: string,
  opts: { who?: keyof typeof TOKENS; consistency?: string } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { Authorization: `Bearer ${TOKENS[opts.who ?? 'admin']}` };
  if (opts.consistency) headers['X-Consistency'] = opts.consistency;
  const res = await fetch(`${base}/v1/kv${query}`, { headers });
  return { status: res.status, body: (await res.json()) as never };
}

/** Every page of a listing, followed by its cursor: the keys in the order listed. */
async function listAll(query: string, opts: { consistency?: string } = {}): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 10_000; page++) {
    const sep = query.includes('?') ? '&' : '?';
    const r = await list(
      cursor === undefined ? query : `${query}${sep}cursor=${encodeURIComponent(cursor)}`,
      opts,
    );
    expect(r.status).toBe(200);
    keys.push(...r.body.items.map((i) => i.key));
    cursor = r.body.cursor;
    if (cursor === undefined) return keys;
  }
  throw new Error('the listing never ended');
}

async function put(key: string, value: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await fetch(`${base}/v1/kv/${encodeURIComponent(key)}`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${TOKENS.admin}`, 'X-Consistency': 'all', ...headers },
    body: value,
  });
  expect(res.status).toBe(200);
}

async function del(key: string): Promise<void> {
  const res = await fetch(`${base}/v1/kv/${encodeURIComponent(key)}`, {
    method: 'DELETE',
    headers: { Authorization: `Bearer ${TOKENS.admin}`, 'X-Consistency': 'all' },
  });
  expect(res.status).toBe(200);
}

/** The RPCs the gateway sends while `run` runs, by op and node. */
async function countRpcs(run: () => Promise<unknown>): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  const stop = cluster.faults.add((c: { from: string; to: string; op: RpcOp }) => {
    if (c.from === GW) seen.set(`${c.op} ${c.to}`, (seen.get(`${c.op} ${c.to}`) ?? 0) + 1);
    return undefined;
  });
  try {
    await run();
  } finally {
    stop();
  }
  return seen;
}

const byteOrder = (keys: string[]): string[] =>
  [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));

describe('GET /v1/kv', () => {
  const names = Array.from({ length: 120 }, (_, i) => `l/users/${String(i).padStart(3, '0')}`);

  beforeAll(async () => {
    for (const k of names) await put(k, `v-${k}`, { 'Content-Type': 'text/plain' });
    await put('l/users', 'the prefix without its slash');
    await put('l/usert', 'just past the prefix');
    await put('l/users/\u00e9t\u00e9', 'not ASCII');
  });

  it('lists a prefix in byte order across partitions, with versions, values and content types', async () => {
    const r = await list('?prefix=l/users/&limit=5');
    expect(r.status).toBe(200);
    expect(r.body.items.map((i) => i.key)).toEqual(names.slice(0, 5));
    const first = r.body.items[0];
    expect(first).toEqual({
      key: names[0],
      version: expect.stringMatching(/^\d+\.\d+\./),
      value: Buffer.from(`v-${names[0]}`).toString('base64'),
      contentType: 'text/plain',
    });
    // The version is the key's ETag.
    const got = await fetch(`${base}/v1/kv/${names[0]}`, {
      headers: { Authorization: `Bearer ${TOKENS.admin}` },
    });
    expect(got.headers.get('etag')).toBe(`"${first.version}"`);
    expect(r.body.cursor).toEqual(expect.any(String));
  });

  it('pages by cursor: every key of the prefix exactly once, and nothing outside it', async () => {
    const keys = await listAll('?prefix=l/users/&limit=7');
    expect(keys).toEqual(byteOrder([...names, 'l/users/\u00e9t\u00e9']));
  });

  it('lists a half-open range [start, end)', async () => {
    const keys = await listAll(`?start=${names[10]}&end=${names[20]}&limit=4`);
    expect(keys).toEqual(names.slice(10, 20));
    expect(await listAll('?start=l/users&end=l/users/')).toEqual(['l/users']);
  });

  it('keys_only: keys and versions without values', async () => {
    const r = await list('?prefix=l/users/0&keys_only=true&limit=3');
    expect(r.body.items.map((i) => Object.keys(i).sort())).toEqual([
      ['key', 'version'],
      ['key', 'version'],
      ['key', 'version'],
    ]);
  });

  it('leaves out deleted and expired keys', async () => {
    await put('l/gone/a', 'a');
    await put('l/gone/b', 'b');
    await put('l/gone/c', 'c');
    await del('l/gone/b');
    const ttl = await fetch(`${base}/v1/kv/l/gone/e?ttl=1`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${TOKENS.admin}`, 'X-Consistency': 'all' },
      body: 'brief',
    });
    expect(ttl.status).toBe(200);
    await waitFor(
      'the ttl to pass',
      async () => !(await listAll('?prefix=l/gone/')).includes('l/gone/e'),
      10_000,
      100,
    );
    expect(await listAll('?prefix=l/gone/')).toEqual(expect.arrayContaining(['l/gone/a', 'l/gone/c']));
    expect(await listAll('?prefix=l/gone/')).not.toContain('l/gone/b');
  });

  it('sends one range RPC per node per page, whatever the number of partitions', async () => {
    const rpcs = await countRpcs(async () =>
      expect((await list('?prefix=l/users/&limit=50')).status).toBe(200),
    );
    expect([...rpcs.entries()].sort()).toEqual(cluster.nodeIds().map((n) => [`range ${n}`, 1]));
  });

  it('at quorum, answers the newest version among two replicas and repairs the stale one', async () => {
    const key = 'l/repair/k';
    await put(key, 'old');
    const map = await cluster.map();
    const [a, b, c] = replicasOf(map, partitionOf(Buffer.from(key), map.partitionCount));
    const held = cluster
      .node(a)
      .storage.get(partitionOf(Buffer.from(key), map.partitionCount), Buffer.from(key));
    const old = held as KvRecord;
    const newer: KvRecord = {
      ...old,
      version: { ...old.version, wall: old.version.wall + 1 },
      value: Buffer.from('new'),
    };
    const p = partitionOf(Buffer.from(key), map.partitionCount);
    await (
      await cluster.client(a)
    ).call({ op: 'write', items: [{ p, k: Buffer.from(key), r: encodeRecord(newer) }] });
    // With the third replica cut off, the listing must ask a and b for this key's partition.
    cluster.faults.cut(c, GW);
    const r = await list('?prefix=l/repair/', { consistency: 'quorum' });
    expect(
      r.body.items.map((i) => [i.key, Buffer.from(i.value ?? '', 'base64').toString(), i.version]),
    ).toEqual([[key, 'new', formatVersion(newer.version)]]);
    await waitFor(
      'the stale replica repaired',
      async () => cluster.node(b).storage.get(p, Buffer.from(key))?.value.toString() === 'new',
      10_000,
      20,
    );
    // The replica the listing did not ask is anti-entropy's to fix.
    expect(cluster.node(c).storage.get(p, Buffer.from(key))?.value.toString()).toBe('old');
  });

  it('keys_only at quorum answers the newest version and repairs the stale replica with the record read in full', async () => {
    const key = 'l/repair-keys/k';
    await put(key, 'old');
    const map = await cluster.map();
    const k = Buffer.from(key);
    const p = partitionOf(k, map.partitionCount);
    const [a, b, c] = replicasOf(map, p);
    const old = cluster.node(a).storage.get(p, k) as KvRecord;
    const newer: KvRecord = {
      ...old,
      version: { ...old.version, wall: old.version.wall + 1 },
      value: Buffer.from('new'),
      contentType: 'text/csv',
    };
    await (await cluster.client(a)).call({ op: 'write', items: [{ p, k, r: encodeRecord(newer) }] });
    cluster.faults.cut(c, GW);
    const rpcs = await countRpcs(async () => {
      const r = await list('?prefix=l/repair-keys/&keys_only=true', { consistency: 'quorum' });
      expect(r.body.items).toEqual([{ key, version: formatVersion(newer.version) }]);
      await waitFor(
        'the stale replica repaired',
        async () => cluster.node(b).storage.get(p, k)?.value.toString() === 'new',
        10_000,
        20,
      );
    });
    // The whole record, content type included, came from the replica holding it: one read there.
    expect(cluster.node(b).storage.get(p, k)).toMatchObject({
      version: newer.version,
      contentType: 'text/csv',
    });
    expect(rpcs.get(`read ${a}`)).toBe(1);
    expect(rpcs.get(`write ${b}`)).toBe(1);
    expect(cluster.node(c).storage.get(p, k)?.value.toString()).toBe('old');
  });

  it('with a node cut off, asks its partitions of other replicas: quorum still lists everything, all fails with 503', async () => {
    cluster.faults.cut('n2', GW);
    expect(await listAll('?prefix=l/users/&limit=40', { consistency: 'quorum' })).toEqual(
      byteOrder([...names, 'l/users/\u00e9t\u00e9']),
    );
    const all = await list('?prefix=l/users/', { consistency: 'all' });
    expect(all.status).toBe(503);
    expect(all.body.error?.code).toBe('unavailable');
    expect(all.body.error?.message).toMatch(/n2: rpc_unavailable/);
  });

  it('two nodes cut off: partitions with one replica left fail a quorum listing; one still lists everything', async () => {
    cluster.faults.cut('n1', GW);
    cluster.faults.cut('n2', GW);
    const quorum = await list('?prefix=l/users/', { consistency: 'quorum' });
    expect(quorum.status).toBe(503);
    expect(quorum.body.error?.message).toMatch(/needs 2 of 3 replicas/);
    expect(await listAll('?prefix=l/users/&limit=50', { consistency: 'one' })).toEqual(
      byteOrder([...names, 'l/users/\u00e9t\u00e9']),
    );
  });

  it('is not a snapshot, but lists a key unchanged throughout exactly once while others are written and deleted', async () => {
    const stable = Array.from({ length: 60 }, (_, i) => `l/churn/${String(i * 2).padStart(3, '0')}`);
    for (const k of stable) await put(k, 'stable');
    let stop = false;
    const churn = (async () => {
      for (let i = 0; !stop; i++) {
        const k = `l/churn/${String((i % 60) * 2 + 1).padStart(3, '0')}`;
        if (i % 3 === 2) await del(k);
        else await put(k, `churn ${i}`);
      }
    })();
    try {
      for (let run = 0; run < 3; run++) {
        const keys = await listAll('?prefix=l/churn/&limit=6');
        expect(new Set(keys).size).toBe(keys.length);
        expect(keys).toEqual(byteOrder(keys));
        expect(keys.filter((k) => stable.includes(k))).toEqual(stable);
      }
    } finally {
      stop = true;
      await churn;
    }
  });

  it('a key limited to a prefix lists inside it, and is refused (403) a listing that reaches outside', async () => {
    await put('team/a', 'a');
    await put('team/b', 'b');
    await put('tea', 'not theirs');
    const own = await list('?prefix=team/', { who: 'team' });
    expect([own.status, own.body.items.map((i) => i.key)]).toEqual([200, ['team/a', 'team/b']]);
    const inside = await list('?start=team/a&end=team/b', { who: 'team' });
    expect([inside.status, inside.body.items.map((i) => i.key)]).toEqual([200, ['team/a']]);
    for (const q of [
      '',
      '?prefix=te',
      '?prefix=tea',
      '?start=team/a',
      '?start=tea&end=team/b',
      '?start=team/&end=teamz',
    ]) {
      const r = await list(q, { who: 'team' });
      expect([q, r.status, r.body.error?.code]).toEqual([q, 403, 'forbidden']);
    }
  });

  it('refuses bad input with 400 naming it', async () => {
    const cases: Array<[string, RegExp]> = [
      ['?prefix=a&start=b', /either prefix or start\/end/],
      ['?start=b&end=a', /end must come after start/],
      ['?start=a&end=a', /end must come after start/],
      ['?limit=0', /limit must be/],
      ['?limit=10001', /limit must be/],
      ['?limit=ten', /limit must be/],
      ['?keys_only=maybe', /keys_only must be/],
      ['?cursor=nonsense', /cursor is not one/],
      ['?prefix=a&cursor=k1.Yg', /outside this range/],
      ['?prefix=a&prefix=b', /prefix must be given once/],
      ['?recurse=true', /unknown query parameter "recurse"/],
    ];
    for (const [q, message] of cases) {
      const r = await list(q);
      expect([q, r.status, r.body.error?.code]).toEqual([q, 400, 'bad_request']);
      expect(r.body.error?.message).toMatch(message);
    }
    expect((await list(`?prefix=${'x'.repeat(DEFAULT_LIMITS.maxKeyBytes + 1)}`)).status).toBe(413);
  });
});
