import pino from 'pino';
import { InProcessCluster } from '../e2e/in-process-cluster';
import { waitFor } from '../e2e/wait-for';
import { partitionOf } from './hash';
import type { NodeInfo } from './partition-map';
import { Rebalancer } from './rebalancer';
import { decodeRecord } from './record';

/**
 * The Rebalancer (common/rebalancer.ts) driving real nodes in this process
 * (e2e/in-process-cluster.ts): a drained node's partitions move to a new one. Three
 * nodes, RF 3, scaled from n1 n2 n3 to n1 n2 n4: every partition moves from n3 to n4,
 * and n4 ends up holding every key.
 */
jest.setTimeout(60_000);

const log = pino({ level: process.env.LOG_LEVEL ?? 'silent' });

let c: InProcessCluster;
let rebalancer: Rebalancer | undefined;

afterEach(async () => {
  await rebalancer?.stop();
  rebalancer = undefined;
  await c?.close();
});

/** The cluster, n4 started outside the map, and a rebalancer; `target` drains n3 into n4. */
async function startWithNewNode(
  partitionCount: number,
): Promise<{ target: NodeInfo[]; rebalancer: Rebalancer }> {
  c = await InProcessCluster.start({ nodes: 3, partitionCount });
  const n4 = await c.addNode('n4');
  const map = await c.map();
  rebalancer = await Rebalancer.start({ store: c.store, log, pollIntervalMs: 50 });
  return { target: [...map.nodes.filter((n) => n.id !== 'n3'), n4], rebalancer };
}

function valueOn(node: string, key: Buffer, partitionCount: number): string | undefined {
  const raw = c.node(node).storage.getEncoded(partitionOf(key, partitionCount), key);
  return raw && decodeRecord(raw).value.toString();
}

const isScanFromN4ToN3 = (call: { from: string; to: string; op: string }): boolean =>
  call.from === 'n4' && call.to === 'n3' && call.op === 'scan';

test('partitions move to the new node with writes going on during the move; no write is lost', async () => {
  const partitionCount = 8;
  const { target, rebalancer: r } = await startWithNewNode(partitionCount);
  const coordinator = await c.coordinator();
  const acked = new Map<string, string>();
  const put = async (key: string, value: string): Promise<void> => {
    await coordinator.put(Buffer.from(key), Buffer.from(value), { consistency: 'quorum' });
    acked.set(key, value);
  };
  for (let i = 0; i < 200; i++) await put(`before-${i}`, `v${i}`);

  // The move is held at its first scan until the test has written during it.
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const unhold = c.faults.add((call) => (isScanFromN4ToN3(call) ? { until: released } : undefined));
  const planned = await r.scale(target);
  expect(planned.moves.length).toBe(partitionCount);
  expect(planned.moves.every((m) => m.from === 'n3' && m.to === 'n4')).toBe(true);
  await c.waitForEpoch(planned.epoch);

  for (let i = 0; i < 100; i++) await put(`during-${i}`, `d${i}`);
  // Overwrites of keys the scan is about to copy: the newer version must win on n4.
  for (let i = 0; i < 50; i++) await put(`before-${i}`, `v${i}-new`);
  expect((await c.map()).moves).toHaveLength(partitionCount);
  unhold();
  release();

  let writing = true;
  let n = 0;
  const idle = r.idle().finally(() => {
    writing = false;
  });
  while (writing) await put(`late-${n}`, `l${n++}`);
  await idle;

  const map = await c.map();
  expect(map.nodes.map((x) => x.id)).toEqual(['n1', 'n2', 'n4']);
  expect(map.moves).toEqual([]);
  expect(map.rebalance).toBeUndefined();
  expect(map.partitions.every((owners) => owners.includes('n4') && !owners.includes('n3'))).toBe(true);
  await c.waitForEpoch(map.epoch);
  for (const [key, value] of acked) {
    expect([key, valueOn('n4', Buffer.from(key), partitionCount)]).toEqual([key, value]);
    expect([
      key,
      (await coordinator.get(Buffer.from(key), { consistency: 'all' }))?.value.toString(),
    ]).toEqual([key, value]);
  }
});

test('a source that fails mid-move leaves the move pending and reported; healed, it resumes where it stopped', async () => {
  // Two partitions of ~300 records of 4 KiB: a partition takes more than one 1 MiB scan batch.
  const partitionCount = 2;
  const { target, rebalancer: r } = await startWithNewNode(partitionCount);
  const value = 'x'.repeat(4096);
  const keys: Buffer[] = [];
  for (let i = 0; i < 600; i++) keys.push(Buffer.from(`k${i}`));
  const coordinator = await c.coordinator();
  for (const k of keys) await coordinator.put(k, Buffer.from(value), { consistency: 'all' });

  // n3 answers n4's first scan batch, then n4 cannot reach it any more.
  let scans = 0;
  const heal = c.faults.add((call) => (isScanFromN4ToN3(call) && ++scans > 1 ? { drop: true } : undefined));
  const planned = await r.scale(target);
  expect(planned.moves).toHaveLength(partitionCount);

  await waitFor('every move to report the failure', async () => {
    const progress = await r.progress();
    return progress.moves.every((m) => m.error?.includes('fault injected: n4 cannot reach n3') ?? false);
  });
  const stuck = await r.progress();
  expect(scans).toBeGreaterThan(1);
  expect(stuck.active).toBe(true);
  expect(stuck.movesLeft).toBe(partitionCount);
  expect(stuck.drainingNodes).toEqual(['n3']);
  expect(stuck.moves.every((m) => m.state === 'streaming')).toBe(true);
  // One batch came through before the failure, and it is counted.
  const copied = stuck.moves.reduce((a, m) => a + m.keys, 0);
  expect(copied).toBeGreaterThan(0);
  expect(copied).toBeLessThan(keys.length);
  // Nothing switched: n3 is still a replica of everything and holds its copy.
  const map = await c.map();
  expect(map.partitions.every((owners) => owners.includes('n3'))).toBe(true);
  for (const k of keys) expect(valueOn('n3', k, partitionCount)).toBe(value);

  heal();
  await r.idle();
  const done = await c.map();
  expect(done.nodes.map((x) => x.id)).toEqual(['n1', 'n2', 'n4']);
  for (const k of keys) expect(valueOn('n4', k, partitionCount)).toBe(value);
  // Resumed after the last key copied, not from the start: every record was streamed once.
  expect((await (await c.client('n4')).call({ op: 'info' })).streamedKeys).toBe(keys.length);
});
