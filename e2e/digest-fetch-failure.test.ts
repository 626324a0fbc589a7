import pino from 'pino';
import { partitionOf } from '../common/hash';
import { HybridLogicalClock } from '../common/hlc';
import { PartitionMapHolder } from '../common/metadata-store';
import { replicasOf } from '../common/partition-map';
import { PeerPool } from '../common/peer-pool';
import { encodeRecord } from '../common/record';
import type { RpcClient } from '../common/rpc-client';
import { ApiError } from '../gateway/api-error';
import { Coordinator } from '../gateway/coordinator';
import { GatewayMetrics } from '../gateway/metrics';
import { nodeClient, startTestCluster, type TestCluster } from './cluster-harness';

/**
 * A read whose newest version came only as a digest, from a replica that then fails before it
 * sends the value: the read answers 503 and says so, rather than an older value. Real node
 * processes and a real coordinator; the one stand-in is the timing. The digest answer and the
 * request for the value are microseconds apart, so a hook on the coordinator's client to n3 stops
 * the real n3 process (SIGSTOP) as soon as its digest answer has arrived: fault injection, named so.
 */
jest.setTimeout(60_000);

/** A PeerPool whose client to `victim` runs `afterDigest` once, when its first digest answer arrives. */
class FaultInjectingPool extends PeerPool {
  private fired = false;

  constructor(
    opts: ConstructorParameters<typeof PeerPool>[0],
    private readonly victim: string,
    private readonly afterDigest: () => Promise<void>,
  ) {
    super(opts);
  }

  override get(nodeId: string): RpcClient | undefined {
    const client = super.get(nodeId);
    if (!client || nodeId !== this.victim) return client;
    const call: RpcClient['call'] = async (body, rid) => {
      const reply = await client.call(body, rid);
      if (body.op === 'read' && 'digest' in body && body.digest && !this.fired) {
        this.fired = true;
        await this.afterDigest();
      }
      return reply;
    };
    return new Proxy(client, {
      get: (target, prop) => {
        if (prop === 'call') return call;
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }
}

let tc: TestCluster;

afterAll(async () => {
  await tc?.stop(true);
});

test('a replica that answered the newest digest and then fails makes the read a 503 that says so', async () => {
  tc = await startTestCluster();
  const map = tc.cluster.map;
  // A key whose first replica is not n3: a fresh coordinator asks that one in full, n3 for a digest.
  let key = '';
  for (let i = 0; !key; i++) {
    const p = partitionOf(Buffer.from(`f${i}`), map.partitionCount);
    if (replicasOf(map, p)[0] !== 'n3') key = `f${i}`;
  }
  const k = Buffer.from(key);
  const p = partitionOf(k, map.partitionCount);

  // No store: the map is fixed for this test.
  const holder = new PartitionMapHolder();
  holder.accept(map);
  const clock = new HybridLogicalClock('gw-fault');
  let n3Stopped = false;
  const pool = new FaultInjectingPool(
    { clock, epoch: () => holder.epoch(), timeoutMs: 500, token: tc.cluster.internalToken },
    'n3',
    async () => {
      await tc.cluster.signal('n3', 'SIGSTOP');
      n3Stopped = true;
    },
  );
  pool.update(map);
  const metrics = new GatewayMetrics({ gateway: 'gw-fault' });
  const coordinator = new Coordinator(holder, pool, clock, metrics, pino({ level: 'silent' }));
  const n3 = nodeClient(tc, 'n3', 'test-writer');
  try {
    await coordinator.put(k, Buffer.from('old'), { consistency: 'all' });
    // n3 alone gets a newer version (as if the others had missed it).
    const newer = encodeRecord({
      version: { wall: Date.now() + 1000, logical: 0, writer: 'test-writer' },
      value: Buffer.from('new'),
      tombstone: false,
    });
    expect((await n3.call({ op: 'write', items: [{ p, k, r: newer }] })).applied).toEqual([true]);

    const failure = await coordinator.get(k, { consistency: 'all' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(n3Stopped).toBe(true);
    expect(failure).toBeInstanceOf(ApiError);
    expect((failure as ApiError).status).toBe(503);
    expect((failure as ApiError).message).toContain('is on n3, which answered its version but not its value');
    expect((failure as ApiError).message).toContain('n3: rpc_timeout');

    // n3 back: the same read answers the newest value (and never the older one the others hold).
    await tc.cluster.signal('n3', 'SIGCONT');
    n3Stopped = false;
    const rec = await coordinator.get(k, { consistency: 'all' });
    expect(rec?.value.toString()).toBe('new');
  } finally {
    if (n3Stopped) await tc.cluster.signal('n3', 'SIGCONT');
    n3.close();
    pool.close();
  }
});
