import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { HybridLogicalClock } from '../common/hlc';
import { RpcClient } from '../common/rpc-client';
import { AntiEntropy } from './anti-entropy';
import { NodeMetrics } from './metrics';
import { NodeRequestHandler } from './request-handler';
import { rpcRepairPeer } from './repair-peer';
import { RpcServer } from './rpc-server';
import { Storage } from './storage';
import {
  log,
  P,
  GRACE,
  live,
  key,
  partitionOfKey,
  mapOf,
  replica,
  reopen,
  env,
  dirs,
  useReplicaFixtures,
} from './anti-entropy.fixtures';

/** The RepairPeer over the real RPC protocol (node/repair-peer.ts): a node request handler on a loopback socket. */

useReplicaFixtures();

describe('anti-entropy over the real RPC protocol', () => {
  it('repairs through a node request handler on a loopback socket', async () => {
    env.map = mapOf(['a', 'b']);
    let a = replica('a');
    for (let i = 0; i < 100; i++)
      await a.storage.applyRecord(partitionOfKey(i), key(i), live(env.now + i, `v${i}`));
    a = await reopen(a);
    const clockA = new HybridLogicalClock('a');
    const handler = new NodeRequestHandler(
      a.storage,
      clockA,
      { nodeId: 'a', epoch: () => 1, onNewerEpoch: () => undefined, ready: () => a.ae.readyForReads() },
      new NodeMetrics({ node: 'a' }, () => a.storage.stats()),
      log,
      { repair: a.ae },
    );
    const server = new RpcServer((req) => handler.handle(req), log);
    const addr = await server.listen('127.0.0.1', 0);
    const client = new RpcClient({
      nodeId: 'a',
      address: `127.0.0.1:${addr.port}`,
      clock: new HybridLogicalClock('b'),
      epoch: () => 1,
      timeoutMs: 5000,
    });
    try {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-ae-b-'));
      dirs.push(dir);
      const storage = Storage.open(dir, { nodeId: 'b', cluster: 'c' });
      const b = new AntiEntropy({
        storage,
        nodeId: 'b',
        map: () => env.map,
        peer: (id) => (id === 'a' ? rpcRepairPeer(client) : undefined),
        log,
        registry: new Registry(),
        intervalMs: 1e9,
        tombstoneGraceMs: GRACE,
        now: () => env.now,
      });
      b.build(P);
      await storage.applyRecord(3, Buffer.from('only-on-b'), live(env.now, 'b'));
      expect(b.readyForReads()).toBe(false);
      b.start();
      await b.idle();
      expect(b.readyForReads()).toBe(true);
      expect(b.status()).toEqual(
        expect.objectContaining({
          running: false,
          partitionsTotal: P,
          partitionsDone: P,
          partitionsFailed: 0,
          keysRepaired: 101,
        }),
      );
      for (let i = 0; i < 100; i++)
        expect(storage.get(partitionOfKey(i), key(i))?.value.toString()).toBe(`v${i}`);
      expect(a.storage.get(3, Buffer.from('only-on-b'))?.value.toString()).toBe('b');
      await b.stop();
      await storage.close();
    } finally {
      client.close();
      await server.close();
    }
  });
});
