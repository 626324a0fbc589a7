import net from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { HybridLogicalClock } from '../common/hlc';
import { RpcClient, RpcError } from '../common/rpc-client';
import { encodeFrame, FrameDecoder } from '../common/rpc-frame';
import type { RpcReply, RpcRequestFrame } from '../common/rpc-protocol';
import { RpcServer, type RpcAuthFailure } from './rpc-server';

/**
 * The internal credential handshake over a real loopback socket: a node started with a
 * token serves only connections whose first frame carries it; every other request gets
 * `unauthorized` and no handler runs.
 */
jest.setTimeout(20_000);

const TOKEN = 'f'.repeat(64);
const WRONG = `${'f'.repeat(63)}0`;

interface Started {
  server: RpcServer;
  address: string;
  calls: RpcRequestFrame[];
  failures: RpcAuthFailure[];
  logs: string[];
}

const running: RpcServer[] = [];
const clients: RpcClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(running.splice(0).map((s) => s.close()));
});

async function start(
  token: string | readonly string[] | undefined,
  authTimeoutMs?: number,
): Promise<Started> {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(chunk.toString());
      done();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  const calls: RpcRequestFrame[] = [];
  const failures: RpcAuthFailure[] = [];
  const handler = (req: RpcRequestFrame): Promise<RpcReply> => {
    calls.push(req);
    return Promise.resolve({
      ok: true,
      clock: [1, 0],
      body: { nodeId: 'n1', epoch: 1, keys: 7, ready: true },
    });
  };
  const server = new RpcServer(
    handler,
    log,
    token === undefined ? undefined : { token, onFailure: (r) => failures.push(r), authTimeoutMs },
  );
  running.push(server);
  const addr = await server.listen('127.0.0.1', 0);
  return { server, address: `127.0.0.1:${addr.port}`, calls, failures, logs };
}

function client(address: string, token?: string): RpcClient {
  const c = new RpcClient({
    nodeId: 'n1',
    address,
    clock: new HybridLogicalClock('test-caller'),
    epoch: () => 1,
    timeoutMs: 5000,
    token,
  });
  clients.push(c);
  return c;
}

async function refusal(p: Promise<unknown>): Promise<RpcError> {
  const err = await p.then(
    () => new Error('expected a refusal'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RpcError);
  return err as RpcError;
}

test('the right token is served, on every request of the connection', async () => {
  const s = await start(TOKEN);
  const c = client(s.address, TOKEN);
  const replies = await Promise.all([c.call({ op: 'info' }), c.call({ op: 'info' })]);
  expect(replies.map((r) => r.keys)).toEqual([7, 7]);
  expect((await c.call({ op: 'info' })).nodeId).toBe('n1');
  expect(s.calls).toHaveLength(3);
  expect(s.failures).toEqual([]);
});

test('during a rotation a node accepts the current and the next token, and only those', async () => {
  const NEXT = 'n'.repeat(48);
  const both = await start([TOKEN, NEXT]);
  expect((await client(both.address, TOKEN).call({ op: 'info' })).nodeId).toBe('n1');
  expect((await client(both.address, NEXT).call({ op: 'info' })).nodeId).toBe('n1');
  expect((await refusal(client(both.address, WRONG).call({ op: 'info' }))).remote?.code).toBe('unauthorized');
  // After the rotation the old token is refused.
  const rotated = await start([NEXT]);
  expect((await refusal(client(rotated.address, TOKEN).call({ op: 'info' }))).remote?.code).toBe(
    'unauthorized',
  );
  expect(rotated.calls).toEqual([]);
});

test.each([
  ['no token', undefined, 'missing_token'],
  ['a wrong token', WRONG, 'wrong_token'],
] as const)('%s: every request gets unauthorized, no handler runs', async (_name, token, reason) => {
  const s = await start(TOKEN);
  const c = client(s.address, token);
  const errs = await Promise.all([
    refusal(c.call({ op: 'read', items: [{ p: 1, k: Buffer.from('secret') }] })),
    refusal(c.call({ op: 'info' })),
  ]);
  for (const err of errs) {
    expect(err.failure).toBe('remote');
    expect(err.code).toBe('unauthorized');
    expect(err.remote?.code).toBe('unauthorized');
  }
  // The connection was closed after the replies: the next call connects again and is refused again.
  const again = await refusal(c.call({ op: 'write', items: [] }));
  expect(again.remote?.code).toBe('unauthorized');
  expect(s.calls).toEqual([]);
  expect(s.failures).toEqual([reason, reason]);
  const warned = s.logs.filter((l) => l.includes('rpc connection refused'));
  expect(warned).toHaveLength(2);
  expect(warned[0]).toContain('"peer":"127.0.0.1:');
  expect(warned[0]).toContain(`"reason":"${reason}"`);
  // The token sent, right or wrong, is never logged.
  expect(s.logs.join('')).not.toContain(WRONG);
  expect(s.logs.join('')).not.toContain(TOKEN);
});

test('an auth frame and the requests arriving in separate reads still get their unauthorized replies', async () => {
  const s = await start(TOKEN);
  const port = Number(s.address.split(':')[1]);
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const decoder = new FrameDecoder();
  const replies: unknown[] = [];
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (chunk: Buffer) => replies.push(...decoder.push(chunk)));
  socket.write(encodeFrame({ auth: WRONG }));
  // Wait until the node has read the auth frame alone (its failure is counted) before sending a request.
  while (s.failures.length === 0) await new Promise((r) => setTimeout(r, 10));
  socket.write(encodeFrame({ id: 9, epoch: 1, clock: [0, 0], body: { op: 'info' } }));
  await closed;
  expect(replies).toEqual([
    expect.objectContaining({ id: 9, ok: false, error: expect.objectContaining({ code: 'unauthorized' }) }),
  ]);
  expect(s.calls).toEqual([]);
});

test('a first frame too large to be an auth frame is refused before it is buffered', async () => {
  const s = await start(TOKEN);
  const socket = net.connect({ host: '127.0.0.1', port: Number(s.address.split(':')[1]) });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(32 * 1024 * 1024);
  socket.write(header);
  await closed;
  expect(s.failures).toEqual(['missing_token']);
  expect(s.calls).toEqual([]);
});

test('a connection that never authenticates is closed', async () => {
  const s = await start(TOKEN, 100);
  const socket = net.connect({ host: '127.0.0.1', port: Number(s.address.split(':')[1]) });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  expect(s.failures).toEqual(['missing_token']);
});

test('a node without a token serves everyone, ignoring an auth frame', async () => {
  const s = await start(undefined);
  expect((await client(s.address).call({ op: 'info' })).keys).toBe(7);
  expect((await client(s.address, TOKEN).call({ op: 'info' })).keys).toBe(7);
  expect(s.calls).toHaveLength(2);
});
