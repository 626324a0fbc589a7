import { partitionOf } from '../common/hash';
import { DEFAULT_LEAF_COUNT, leafOf } from '../common/hash-tree';
import { HybridLogicalClock } from '../common/hlc';
import { decodeRecord, decodeRecordHeader, encodeRecord } from '../common/record';
import { RpcClient, type RpcError } from '../common/rpc-client';
import type { RpcRequestBody } from '../common/rpc-protocol';
import { InProcessCluster } from '../e2e/in-process-cluster';
import { waitFor } from '../e2e/wait-for';

/**
 * The internal API as a caller sees it (node/request-handler.ts): real nodes in this process
 * (e2e/in-process-cluster.ts), requests over real RPC. Three nodes, RF 3: every node holds
 * every partition.
 */
jest.setTimeout(30_000);

let c: InProcessCluster;
let partitionCount: number;

beforeAll(async () => {
  c = await InProcessCluster.start({ nodes: 3 });
  partitionCount = (await c.map()).partitionCount;
});

afterAll(async () => {
  await c?.close();
});

const p = (key: Buffer): number => partitionOf(key, partitionCount);

function rec(value: string, wall: number, opts: { writer?: string; tombstone?: boolean } = {}): Buffer {
  return encodeRecord({
    version: { wall, logical: 0, writer: opts.writer ?? 'test-peer' },
    value: Buffer.from(value),
    tombstone: opts.tombstone ?? false,
  });
}

function valueOn(node: string, key: Buffer): string | undefined {
  const raw = c.node(node).storage.getEncoded(p(key), key);
  return raw && decodeRecord(raw).value.toString();
}

async function writeTo(node: string, key: Buffer, r: Buffer): Promise<boolean[]> {
  return (await (await c.client(node)).call({ op: 'write', items: [{ p: p(key), k: key, r }] })).applied;
}

/** `count` keys of one partition that holds nothing on any node yet, so a test sees only its own records. */
function keysOfAnEmptyPartition(prefix: string, count: number): Buffer[] {
  const empty = (q: number): boolean =>
    ['n1', 'n2', 'n3'].every((n) => c.node(n).storage.scan(q, { limit: 1 }).length === 0);
  const keys: Buffer[] = [];
  let partition: number | undefined;
  for (let i = 0; keys.length < count; i++) {
    const k = Buffer.from(`${prefix}-${i}`);
    partition ??= empty(p(k)) ? p(k) : undefined;
    if (p(k) === partition) keys.push(k);
    if (i > 100_000) throw new Error(`no empty partition left for ${prefix}`);
  }
  return keys;
}

/** A client whose requests carry `epoch`, whatever the map says. */
function clientAtEpoch(node: string, epoch: number): RpcClient {
  return new RpcClient({
    nodeId: node,
    address: c.address(node),
    clock: new HybridLogicalClock('epoch-tester'),
    epoch: () => epoch,
    timeoutMs: 2000,
  });
}

describe('read', () => {
  test("answers each key's stored record, null where the node holds none", async () => {
    const k = Buffer.from('read-full');
    const r = rec('value', Date.now());
    expect(await writeTo('n1', k, r)).toEqual([true]);
    const missing = Buffer.from('read-missing');
    const reply = await (
      await c.client('n1')
    ).call({
      op: 'read',
      items: [
        { p: p(k), k },
        { p: p(missing), k: missing },
      ],
    });
    expect(reply.records).toHaveLength(2);
    expect(Buffer.compare(reply.records[0] as Buffer, r)).toBe(0);
    expect(reply.records[1]).toBeNull();
  });

  test('with digest: the same version, tombstone and expiry, without the value', async () => {
    const k = Buffer.from('read-digest');
    const r = rec('x'.repeat(1000), Date.now());
    await writeTo('n2', k, r);
    const client = await c.client('n2');
    const [full] = (await client.call({ op: 'read', items: [{ p: p(k), k }] })).records;
    const [digest] = (await client.call({ op: 'read', items: [{ p: p(k), k }], digest: true })).records;
    expect(digest).not.toBeNull();
    expect(decodeRecordHeader(digest as Buffer)).toEqual(decodeRecordHeader(full as Buffer));
    expect((digest as Buffer).length).toBeLessThan(100);
    expect((full as Buffer).length).toBeGreaterThan(1000);
  });

  test('a malformed read is refused as bad_request', async () => {
    const client = await c.client('n1');
    await expect(client.call({ op: 'read', items: [] })).rejects.toMatchObject({
      remote: { code: 'bad_request', message: 'items must be an array of 1..10000' },
    });
    const k = Buffer.from('k');
    const digestNotBoolean = {
      op: 'read',
      items: [{ p: p(k), k }],
      digest: 'yes',
    } as unknown as RpcRequestBody;
    await expect(
      client.call(digestNotBoolean as Extract<RpcRequestBody, { op: 'read' }>),
    ).rejects.toMatchObject({
      remote: { code: 'bad_request', message: 'digest must be true or false' },
    });
  });
});

describe('write', () => {
  test('a newer version replaces the stored one; an older or equal one is ignored and answered false', async () => {
    const k = Buffer.from('write-merge');
    const t = Date.now();
    expect(await writeTo('n1', k, rec('first', t))).toEqual([true]);
    expect(await writeTo('n1', k, rec('newer', t + 10))).toEqual([true]);
    expect(valueOn('n1', k)).toBe('newer');
    expect(await writeTo('n1', k, rec('older', t + 5))).toEqual([false]);
    expect(await writeTo('n1', k, rec('same version', t + 10))).toEqual([false]);
    expect(valueOn('n1', k)).toBe('newer');
    // A newer tombstone wins too: the key reads as deleted.
    expect(await writeTo('n1', k, rec('', t + 20, { tombstone: true }))).toEqual([true]);
    const [raw] = (await (await c.client('n1')).call({ op: 'read', items: [{ p: p(k), k }] })).records;
    expect(decodeRecord(raw as Buffer).tombstone).toBe(true);
  });

  test('answers per item in a batch', async () => {
    const a = Buffer.from('batch-a');
    const b = Buffer.from('batch-b');
    const t = Date.now();
    await writeTo('n3', b, rec('b-held', t + 100));
    const reply = await (
      await c.client('n3')
    ).call({
      op: 'write',
      items: [
        { p: p(a), k: a, r: rec('a-new', t) },
        { p: p(b), k: b, r: rec('b-older', t) },
      ],
    });
    expect(reply.applied).toEqual([true, false]);
    expect(valueOn('n3', a)).toBe('a-new');
    expect(valueOn('n3', b)).toBe('b-held');
  });

  test('a write without record bytes is refused and stores nothing', async () => {
    const k = Buffer.from('write-malformed');
    const body = { op: 'write', items: [{ p: p(k), k }] } as unknown as Extract<
      RpcRequestBody,
      { op: 'write' }
    >;
    await expect((await c.client('n1')).call(body)).rejects.toMatchObject({
      remote: { code: 'bad_request', message: 'each write needs record bytes r' },
    });
    expect(valueOn('n1', k)).toBeUndefined();
  });
});

describe('hints', () => {
  test('a hint for an unreachable replica is kept, counted, and delivered once it is reachable', async () => {
    const k = Buffer.from('hinted');
    const heal = c.faults.cut('n3', 'n1');
    try {
      const reply = await (
        await c.client('n1')
      ).call({ op: 'hint', items: [{ p: p(k), k, r: rec('for n3', Date.now()), t: 'n3' }] });
      expect(reply.stored).toEqual([true]);
      expect((await (await c.client('n1')).call({ op: 'info' })).hints).toBe(1);
      expect(valueOn('n3', k)).toBeUndefined();
      // Not applied on the node keeping it: it is not the hint's target.
      expect(valueOn('n1', k)).toBeUndefined();
    } finally {
      heal();
    }
    await waitFor('the hint to reach n3', () => valueOn('n3', k) === 'for n3', 10_000, 20);
    await waitFor('n1 to drop the delivered hint', async () => {
      return (await (await c.client('n1')).call({ op: 'info' })).hints === 0;
    });
  });

  test('a hint naming the node itself as target is applied there at once', async () => {
    const k = Buffer.from('hint-self');
    const reply = await (
      await c.client('n2')
    ).call({ op: 'hint', items: [{ p: p(k), k, r: rec('mine', Date.now()), t: 'n2' }] });
    expect(reply.stored).toEqual([true]);
    expect(valueOn('n2', k)).toBe('mine');
    expect((await (await c.client('n2')).call({ op: 'info' })).hints).toBe(0);
  });

  test('a hint without a target is refused', async () => {
    const k = Buffer.from('hint-no-target');
    const body = { op: 'hint', items: [{ p: p(k), k, r: rec('x', Date.now()) }] } as unknown as Extract<
      RpcRequestBody,
      { op: 'hint' }
    >;
    await expect((await c.client('n1')).call(body)).rejects.toMatchObject({
      remote: { code: 'bad_request', message: 'each hint needs a target node id t' },
    });
  });
});

describe('anti-entropy ops', () => {
  test('tree roots and leaves are equal on replicas holding the same records, and differ once they do not', async () => {
    const [k] = keysOfAnEmptyPartition('tree', 1);
    const r = rec('same', Date.now());
    for (const n of ['n1', 'n2', 'n3']) await writeTo(n, k, r);
    const roots = async (n: string): Promise<Buffer[]> =>
      (await (await c.client(n)).call({ op: 'tree-roots', partitions: [p(k)] })).roots;
    const [r1] = await roots('n1');
    expect(r1).toHaveLength(8);
    expect((await roots('n2'))[0].equals(r1)).toBe(true);
    expect((await roots('n3'))[0].equals(r1)).toBe(true);

    const leaves = (await (await c.client('n1')).call({ op: 'tree-leaves', p: p(k) })).leaves;
    expect(leaves).toHaveLength(8 * DEFAULT_LEAF_COUNT);

    await writeTo('n1', k, rec('only on n1', Date.now() + 1000));
    expect((await roots('n1'))[0].equals((await roots('n2'))[0])).toBe(false);
    const leavesAfter = (await (await c.client('n1')).call({ op: 'tree-leaves', p: p(k) })).leaves;
    const leaf = leafOf(k, DEFAULT_LEAF_COUNT);
    // Only the key's own leaf changed.
    for (let i = 0; i < DEFAULT_LEAF_COUNT; i++) {
      const same = leaves.subarray(8 * i, 8 * i + 8).equals(leavesAfter.subarray(8 * i, 8 * i + 8));
      expect([i, same]).toEqual([i, i !== leaf]);
    }
  });

  test('a bucket answers every record of the leaf; a leaf out of range is refused', async () => {
    const k = Buffer.from('bucket-key');
    const r = rec('in bucket', Date.now());
    await writeTo('n2', k, r);
    const client = await c.client('n2');
    const { items } = await client.call({ op: 'bucket', p: p(k), b: leafOf(k, DEFAULT_LEAF_COUNT) });
    const mine = items.filter((i) => i.k.equals(k));
    expect(mine).toHaveLength(1);
    expect(mine[0].r.equals(r)).toBe(true);
    await expect(client.call({ op: 'bucket', p: p(k), b: DEFAULT_LEAF_COUNT })).rejects.toMatchObject({
      remote: {
        code: 'bad_request',
        message: `leaf ${DEFAULT_LEAF_COUNT} out of range 0..${DEFAULT_LEAF_COUNT - 1}`,
      },
    });
  });

  test('repair starts a pass that brings the node what a replica holds and it lacks; info reports it', async () => {
    const k = Buffer.from('repair-key');
    await writeTo('n1', k, rec('repaired', Date.now()));
    expect(valueOn('n3', k)).toBeUndefined();
    const client = await c.client('n3');
    const status = await client.call({ op: 'repair', partitions: [p(k)] });
    expect(status.refilling).toBe(false);
    await waitFor('the repair to bring the key to n3', () => valueOn('n3', k) === 'repaired', 10_000, 20);
    await waitFor(
      'the pass to end',
      async () => (await client.call({ op: 'info' })).repair?.running === false,
    );
    const info = await client.call({ op: 'info' });
    expect(info.repair?.partitionsTotal).toBe(1);
    expect(info.repair?.partitionsFailed).toBe(0);
  });
});

describe('scan', () => {
  test("pages through a partition's records in key order", async () => {
    const keys = keysOfAnEmptyPartition('scan', 5);
    const partition = p(keys[0]);
    for (const k of keys) await writeTo('n1', k, rec(k.toString(), Date.now()));
    const client = await c.client('n1');
    const seen: Buffer[] = [];
    let after: Buffer | undefined;
    for (let more = true; more;) {
      const reply = await client.call({
        op: 'scan',
        p: partition,
        limit: 2,
        maxBytes: 1 << 20,
        ...(after ? { after } : {}),
      });
      expect(reply.items.length).toBeLessThanOrEqual(2);
      for (const i of reply.items) expect(decodeRecord(i.r).value.toString()).toBe(i.k.toString());
      seen.push(...reply.items.map((i) => i.k));
      after = reply.items.at(-1)?.k;
      more = reply.more;
    }
    // Exactly the partition's records, in key order.
    expect(seen).toEqual([...keys].sort(Buffer.compare));
  });

  test('a scan with an empty after key or a limit out of range is refused', async () => {
    const client = await c.client('n1');
    await expect(
      client.call({ op: 'scan', p: 0, after: Buffer.alloc(0), limit: 1, maxBytes: 1024 }),
    ).rejects.toMatchObject({
      remote: { code: 'bad_request', message: 'after must be non-empty key bytes' },
    });
    await expect(client.call({ op: 'scan', p: 0, limit: 0, maxBytes: 1024 })).rejects.toMatchObject({
      remote: { code: 'bad_request', message: 'limit must be an integer in 1..10000' },
    });
  });
});

test('an unknown op is refused as bad_request', async () => {
  const body = { op: 'compact' } as unknown as Extract<RpcRequestBody, { op: 'info' }>;
  await expect((await c.client('n1')).call(body)).rejects.toMatchObject({
    remote: { code: 'bad_request', message: 'unknown op "compact"' },
  });
});

describe('epochs', () => {
  test('a request with an epoch older than the node holds is refused with the newer epoch, and changes nothing', async () => {
    const before = (await c.map()).epoch;
    const map = await c.updateMap((m) => m);
    expect(map.epoch).toBe(before + 1);
    const stale = clientAtEpoch('n1', before);
    const k = Buffer.from('stale-write');
    try {
      await expect(
        stale.call({ op: 'write', items: [{ p: p(k), k, r: rec('x', Date.now()) }] }),
      ).rejects.toMatchObject({
        remote: { code: 'stale_epoch', epoch: map.epoch },
      });
      await expect(stale.call({ op: 'read', items: [{ p: p(k), k }] })).rejects.toMatchObject({
        remote: { code: 'stale_epoch', epoch: map.epoch },
      });
      expect(valueOn('n1', k)).toBeUndefined();
    } finally {
      stale.close();
    }
  });

  test('a request with a newer epoch is served, and makes the node fetch that map', async () => {
    const node = c.node('n2');
    // Deaf to the store's own notifications: only the request can tell it of the new map.
    node.maps.stop();
    const current = await c.map();
    const next = { ...current, epoch: current.epoch + 1 };
    expect(await c.store.compareAndSet(next, current.epoch)).toBe(true);
    expect(node.maps.current()?.epoch).toBe(current.epoch);
    const ahead = clientAtEpoch('n2', next.epoch);
    try {
      const info = await ahead.call({ op: 'info' });
      expect(info.nodeId).toBe('n2');
      await waitFor('n2 to load the newer map', () => node.maps.current()?.epoch === next.epoch, 10_000, 10);
    } finally {
      ahead.close();
      // Following the store again for the tests after this one.
      await c.restart('n2');
    }
  });
});

describe('an empty disk being refilled', () => {
  test('refuses reads (not_ready) but takes writes, and serves reads once refilled from its peers', async () => {
    const k = Buffer.from('refill-key');
    await writeTo('n1', k, rec('from a peer', Date.now()));
    await c.stop('n3');
    c.wipe('n3');
    // n3 cannot reach anyone: its refill cannot finish.
    const isolate = c.faults.add((call) => (call.from === 'n3' ? { drop: true } : undefined));
    try {
      await c.restart('n3', { waitReady: false });
      const client = await c.client('n3');
      await expect(client.call({ op: 'read', items: [{ p: p(k), k }] })).rejects.toMatchObject({
        remote: { code: 'not_ready', message: 'n3 is not ready' },
      });
      expect((await client.call({ op: 'info' })).ready).toBe(false);
      const w = Buffer.from('refill-write');
      expect(await writeTo('n3', w, rec('taken', Date.now()))).toEqual([true]);
      expect(valueOn('n3', w)).toBe('taken');
    } finally {
      isolate();
    }
    const client = await c.client('n3');
    await waitFor(
      'n3 to finish its refill',
      async () => (await client.call({ op: 'info' })).ready,
      15_000,
      50,
    );
    const [raw] = (await client.call({ op: 'read', items: [{ p: p(k), k }] })).records;
    expect(decodeRecord(raw as Buffer).value.toString()).toBe('from a peer');
  });
});

describe('writes waiting for their commit are bounded', () => {
  let small: InProcessCluster;

  beforeAll(async () => {
    small = await InProcessCluster.start({ nodes: 1, node: { maxPendingWriteBytes: 64 * 1024 } });
  });

  afterAll(async () => {
    await small?.close();
  });

  it('past the bound a write is refused at once with overloaded, changing nothing; alone, one larger than it goes', async () => {
    const client = await small.client('n1');
    const pc = (await small.map()).partitionCount;
    const item = (k: string, bytes: number) => {
      const key = Buffer.from(k);
      return { p: partitionOf(key, pc), k: key, r: rec('x'.repeat(bytes), 1) };
    };
    // Sent in one turn: the second arrives while the first waits for its commit.
    const [first, second] = await Promise.allSettled([
      client.call({ op: 'write', items: [item('bound/a', 60 * 1024)] }),
      client.call({ op: 'write', items: [item('bound/b', 60 * 1024)] }),
    ]);
    expect(first.status).toBe('fulfilled');
    expect(second.status).toBe('rejected');
    const err = (second as PromiseRejectedResult).reason as RpcError;
    expect([err.failure, err.remote?.code]).toEqual(['remote', 'overloaded']);
    expect(err.message).toMatch(/n1 holds \d+ bytes of writes waiting for their commit \(at most 65536\)/);
    const storage = small.node('n1').storage;
    const b = item('bound/b', 1);
    expect(storage.get(b.p, b.k)).toBeUndefined();
    // Nothing pending: even a write larger than the whole bound is taken.
    await expect(client.call({ op: 'write', items: [item('bound/c', 100 * 1024)] })).resolves.toEqual({
      applied: [true],
    });
  });
});
