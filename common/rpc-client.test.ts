import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { HybridLogicalClock } from './hlc';
import { RpcClient, RpcError } from './rpc-client';

/**
 * The client's bound on its backlog, against a real socket: a "node" that accepts the connection
 * and never reads from it, so everything written piles up in the client's socket buffer.
 */
test('a node that stops reading: calls fail at once past the backlog bound, instead of joining it', async () => {
  const held: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.pause();
    held.push(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new RpcClient({
    nodeId: 'stalled',
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    clock: new HybridLogicalClock('t'),
    epoch: () => 1,
    timeoutMs: 30_000,
    maxQueuedBytes: 4 * 1024 * 1024,
  });
  const item = { p: 0, k: Buffer.from('k'), r: Buffer.alloc(1024 * 1024) };
  const calls: Promise<unknown>[] = [];
  try {
    // Each call is sent in its own turn, so the socket buffer holds what came before it.
    let refused: unknown;
    for (let i = 0; i < 64 && refused === undefined; i++) {
      const call = client.call({ op: 'write', items: [item] });
      calls.push(call.catch(() => undefined));
      refused = await Promise.race([
        call.then(
          () => undefined,
          (e: unknown) => e,
        ),
        new Promise((r) => setTimeout(r, 20)),
      ]);
    }
    expect(refused).toBeInstanceOf(RpcError);
    expect(refused).toMatchObject({ failure: 'unavailable' });
    expect((refused as Error).message).toMatch(
      /stalled is behind: \d+ bytes of requests wait to be sent to it \(at most 4194304\)/,
    );
    // The requests already written still wait for their answers (and time out then), not failed by the bound.
    expect(client.inFlight).toBeGreaterThan(0);
  } finally {
    client.close();
    await Promise.all(calls);
    for (const s of held) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
