import net from 'node:net';
import { HybridLogicalClock } from '../common/hlc';
import { decodeRecord, encodeRecord } from '../common/record';
import { RpcClient, RpcError } from '../common/rpc-client';
import { encodeFrame, FrameDecoder } from '../common/rpc-frame';
import { alive, startTestCluster, type TestCluster } from './cluster-harness';

/** The internal node API, spoken directly to a real node process. */
jest.setTimeout(60_000);

let tc: TestCluster;
let address: string;
let epoch: number;

beforeAll(async () => {
  tc = await startTestCluster();
  address = tc.cluster.map.nodes[0].address;
  epoch = tc.cluster.map.epoch;
});

afterAll(async () => {
  await tc?.stop(true);
});

function client(withEpoch: number, timeoutMs = 2000): RpcClient {
  return new RpcClient({
    nodeId: 'n1',
    address,
    clock: new HybridLogicalClock('test-peer'),
    epoch: () => withEpoch,
    timeoutMs,
    // The launcher's nodes require the cluster's internal token (e2e/internal-auth.test.ts covers refusals).
    token: tc.cluster.internalToken,
  });
}

const rec = (wall: number, value: string) =>
  encodeRecord({
    version: { wall, logical: 0, writer: 'test-peer' },
    value: Buffer.from(value),
    tombstone: false,
  });

test('writes and reads records in batches, under the merge rule', async () => {
  const c = client(epoch);
  const k = (s: string) => Buffer.from(s);
  const w = await c.call({
    op: 'write',
    items: [
      { p: 1, k: k('a'), r: rec(Date.now(), 'A') },
      { p: 2, k: k('b'), r: rec(Date.now(), 'B') },
    ],
  });
  expect(w.applied).toEqual([true, true]);
  const older = await c.call({ op: 'write', items: [{ p: 1, k: k('a'), r: rec(1, 'old') }] });
  expect(older.applied).toEqual([false]);
  const r = await c.call({
    op: 'read',
    items: [
      { p: 1, k: k('a') },
      { p: 2, k: k('b') },
      { p: 3, k: k('none') },
    ],
  });
  expect(r.records.map((x) => x && x.subarray(-1).toString())).toEqual(['A', 'B', null]);
  // many concurrent requests on one connection are matched to their replies
  const many = await Promise.all(
    Array.from({ length: 200 }, (_, i) =>
      c.call({ op: 'write', items: [{ p: i % 7, k: k(`m${i}`), r: rec(Date.now(), `v${i}`) }] }),
    ),
  );
  expect(many.every((m) => m.applied[0] === true)).toBe(true);
  c.close();
});

test('a digest read answers each record without its value: version, tombstone and expiry only', async () => {
  const c = client(epoch);
  const k = (s: string) => Buffer.from(s);
  const wall = Date.now();
  const big = encodeRecord({
    version: { wall, logical: 3, writer: 'gw-d' },
    value: Buffer.alloc(64 * 1024, 7),
    tombstone: false,
    expiresAt: wall + 60_000,
  });
  const tomb = encodeRecord({
    version: { wall, logical: 4, writer: 'gw-d' },
    value: Buffer.alloc(0),
    tombstone: true,
  });
  await c.call({
    op: 'write',
    items: [
      { p: 4, k: k('big'), r: big },
      { p: 4, k: k('gone'), r: tomb },
    ],
  });
  const items = [
    { p: 4, k: k('big') },
    { p: 4, k: k('gone') },
    { p: 4, k: k('never') },
  ];
  const full = await c.call({ op: 'read', items });
  const digest = await c.call({ op: 'read', items, digest: true });
  expect(full.records[0]?.length).toBe(big.length);
  expect(digest.records[0]?.length).toBeLessThan(64);
  expect(decodeRecord(digest.records[0] as Buffer)).toEqual({
    ...decodeRecord(big),
    value: Buffer.alloc(0),
  });
  // A tombstone's digest is the whole tombstone; an absent key is null either way.
  expect(digest.records[1]?.equals(tomb)).toBe(true);
  expect(digest.records[2]).toBeNull();
  const bad = await c
    .call({ op: 'read', items, digest: 'yes' as unknown as boolean })
    .catch((e: unknown) => e);
  expect((bad as RpcError).remote?.code).toBe('bad_request');
  c.close();
});

test('refuses a request from a sender holding an older map epoch, naming its own', async () => {
  const c = client(epoch - 1);
  const err = await c.call({ op: 'read', items: [{ p: 1, k: Buffer.from('a') }] }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(RpcError);
  expect((err as RpcError).remote).toEqual(expect.objectContaining({ code: 'stale_epoch', epoch }));
  c.close();
});

test('answers malformed requests with bad_request and stores nothing', async () => {
  const c = client(epoch);
  const bad = await c
    .call({ op: 'write', items: [{ p: 1, k: Buffer.from('evil'), r: Buffer.from('not a record') }] })
    .catch((e: unknown) => e);
  expect((bad as RpcError).remote?.code).toBe('bad_request');
  const empty = await c.call({ op: 'write', items: [] }).catch((e: unknown) => e);
  expect((empty as RpcError).remote?.code).toBe('bad_request');
  const r = await c.call({ op: 'read', items: [{ p: 1, k: Buffer.from('evil') }] });
  expect(r.records).toEqual([null]);
  c.close();
});

test('drops a connection that sends garbage, and keeps serving everyone else', async () => {
  const sock = net.connect(Number(address.split(':')[1]), '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  const closed = new Promise((r) => sock.once('close', r));
  // Authenticated first, so what is tested is the framing, not the credential check.
  const auth = encodeFrame({ auth: tc.cluster.internalToken });
  sock.write(Buffer.concat([auth, Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])])); // a 4 GiB frame announcement
  await closed;
  // a well-formed frame with a body that is not a request
  const sock2 = net.connect(Number(address.split(':')[1]), '127.0.0.1');
  await new Promise((r) => sock2.once('connect', r));
  const reply = new Promise<Buffer>((r) => sock2.once('data', r));
  sock2.write(Buffer.concat([auth, encodeFrame('just a string')]));
  const decoded = new FrameDecoder().push(await reply);
  expect(decoded[0]).toEqual(
    expect.objectContaining({ ok: false, error: expect.objectContaining({ code: 'bad_request' }) }),
  );
  sock2.destroy();

  expect(alive(tc.cluster.pid('n1'))).toBe(true);
  const c = client(epoch);
  const info = await c.call({ op: 'info' });
  expect(info).toEqual(expect.objectContaining({ nodeId: 'n1', epoch, ready: true }));
  c.close();
});

test('a call to a node that is down fails fast as unavailable', async () => {
  await tc.cluster.signal('n1', 'SIGKILL');
  const c = client(epoch, 5000);
  const err = await c.call({ op: 'info' }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(RpcError);
  // 'unavailable', not 'timeout': a refused connection is reported without waiting out the timeout
  expect((err as RpcError).failure).toBe('unavailable');
  c.close();
  await tc.cluster.startProcess('n1');
});
