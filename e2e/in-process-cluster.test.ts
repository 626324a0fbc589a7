import { partitionOf } from '../common/hash';
import { replicasOf } from '../common/partition-map';
import { decodeRecord, encodeRecord } from '../common/record';
import { RpcError } from '../common/rpc-client';
import { InProcessCluster } from './in-process-cluster';

/** The in-process harness itself: real nodes in this process, a write reaching every replica, restarts. */
jest.setTimeout(30_000);

let c: InProcessCluster;

beforeAll(async () => {
  c = await InProcessCluster.start({ nodes: 3 });
});

afterAll(async () => {
  await c?.close();
});

const key = Buffer.from('harness-key');

function record(value: string, wall = Date.now()): Buffer {
  return encodeRecord({
    version: { wall, logical: 0, writer: 'test-peer' },
    value: Buffer.from(value),
    tombstone: false,
  });
}

test('three nodes serve; a write through RPC reaches every replica', async () => {
  const map = await c.map();
  expect(map.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3']);
  const p = partitionOf(key, map.partitionCount);
  const replicas = replicasOf(map, p);
  expect(replicas).toHaveLength(3);

  const r = record('v1');
  for (const id of replicas) {
    const client = await c.client(id);
    expect((await client.call({ op: 'write', items: [{ p, k: key, r }] })).applied).toEqual([true]);
  }
  for (const id of replicas) {
    const got = c.node(id).storage.getEncoded(p, key);
    expect(got && decodeRecord(got).value.toString()).toBe('v1');
  }
});

test('a stopped node refuses connections; restarted on its data directory it still holds the data', async () => {
  const map = await c.map();
  const p = partitionOf(key, map.partitionCount);
  const client = await c.client('n2');
  await c.stop('n2');
  expect(() => c.node('n2')).toThrow('node n2 is stopped');
  await expect(client.call({ op: 'info' })).rejects.toBeInstanceOf(RpcError);

  const node = await c.restart('n2');
  expect(node.rpcAddress).toBe(c.address('n2'));
  const reply = await client.call({ op: 'read', items: [{ p, k: key }] });
  expect(reply.records).toHaveLength(1);
  expect(decodeRecord(reply.records[0] as Buffer).value.toString()).toBe('v1');
});

test('a cut link fails calls as an unreachable node; healed, they go through', async () => {
  const client = await c.client('n3');
  const heal = c.faults.cut('n3');
  await expect(client.call({ op: 'info' })).rejects.toMatchObject({ failure: 'unavailable', nodeId: 'n3' });
  heal();
  expect((await client.call({ op: 'info' })).nodeId).toBe('n3');
});

test('a coordinator over the nodes writes a quorum and reads it back', async () => {
  const coordinator = await c.coordinator();
  const k = Buffer.from('through-coordinator');
  await coordinator.put(k, Buffer.from('hello'), { consistency: 'all' });
  expect((await coordinator.get(k, { consistency: 'all' }))?.value.toString()).toBe('hello');
  const p = partitionOf(k, (await c.map()).partitionCount);
  for (const id of replicasOf(await c.map(), p)) expect(c.node(id).storage.getEncoded(p, k)).toBeDefined();
});
