import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import client from 'prom-client';
import { HybridLogicalClock } from '../common/hlc';
import type { PartitionMap } from '../common/partition-map';
import { PeerPool } from '../common/peer-pool';
import { decodeRecord, encodeRecord } from '../common/record';
import type { HintWrite } from '../common/rpc-protocol';
import { HintedHandoff } from './hinted-handoff';
import { NodeMetrics } from './metrics';
import { NodeRequestHandler } from './request-handler';
import { RpcServer } from './rpc-server';
import { Storage } from './storage';

/**
 * Replay against a real target: the target is a real storage node (LMDB on
 * disk, request handler, RPC server on a loopback socket) in this process; the
 * hint holder talks to it through a real PeerPool.
 */
jest.setTimeout(30_000);

const log = pino({ level: 'silent' });
const PARTITIONS = 4;

interface TargetNode {
  storage: Storage;
  server: RpcServer;
  port: number;
}

let dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-handoff-'));
  dirs.push(d);
  return d;
}

async function startTarget(dir: string, port = 0): Promise<TargetNode> {
  const storage = Storage.open(dir, { nodeId: 'n2', cluster: 'c' });
  const clock = new HybridLogicalClock('n2');
  const handler = new NodeRequestHandler(
    storage,
    clock,
    { nodeId: 'n2', epoch: () => 1, onNewerEpoch: () => undefined, ready: () => true },
    new NodeMetrics({ node: 'n2' }, () => storage.stats()),
    log,
  );
  const server = new RpcServer((req) => handler.handle(req), log);
  const addr = await server.listen('127.0.0.1', port);
  return { storage, server, port: addr.port };
}

async function stopTarget(t: TargetNode): Promise<void> {
  await t.server.close();
  await t.storage.close();
}

function mapWith(n2Port: number, nodes = ['n1', 'n2', 'n3']): PartitionMap {
  return {
    cluster: 'c',
    epoch: 1,
    partitionCount: PARTITIONS,
    replicationFactor: nodes.length,
    nodes: nodes.map((id) => ({ id, address: `127.0.0.1:${id === 'n2' ? n2Port : 1}` })),
    partitions: Array.from({ length: PARTITIONS }, () => nodes),
    moves: [],
  };
}

let wall = Date.now();
function hint(t: string, key: string, value: string, tombstone = false): HintWrite {
  const r = encodeRecord({
    version: { wall: wall++, logical: 0, writer: 'gw' },
    value: Buffer.from(tombstone ? '' : value),
    tombstone,
  });
  return { t, p: key.length % PARTITIONS, k: Buffer.from(key), r };
}

async function counter(registry: client.Registry, name: string): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? []).reduce((a, v) => a + v.value, 0);
}

/** Polls `done` every 20 ms for up to 10 s; the assertions after it say what did not happen. */
async function until(done: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

describe('HintedHandoff', () => {
  let holderStorage: Storage;
  let registry: client.Registry;
  let peers: PeerPool;
  let map: PartitionMap;
  let handoff: HintedHandoff;

  const openHandoff = (
    opts: { batchSize?: number; maxBackoffMs?: number; maxHintAgeMs?: number } = {},
  ): HintedHandoff =>
    HintedHandoff.open(holderStorage, {
      nodeId: 'n1',
      storage: holderStorage,
      peers,
      map: () => map,
      log,
      registry,
      maxBytes: 16 * 1024 * 1024,
      intervalMs: 50,
      ...opts,
    });

  beforeEach(() => {
    holderStorage = Storage.open(tmp(), { nodeId: 'n1', cluster: 'c' });
    registry = new client.Registry();
    peers = new PeerPool({ clock: new HybridLogicalClock('n1'), epoch: () => 1, timeoutMs: 1000 });
  });

  afterEach(async () => {
    await handoff?.stop();
    peers.close();
    await holderStorage.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    dirs = [];
  });

  it('keeps hints while the target is down, then replays them in batches and deletes them', async () => {
    // Learn a free port, then leave it closed: the target is "down".
    const probe = await startTarget(tmp());
    const port = probe.port;
    await stopTarget(probe);
    map = mapWith(port);
    peers.update(map);
    handoff = openHandoff({ batchSize: 7, maxBackoffMs: 200 });

    const hints = Array.from({ length: 40 }, (_, i) => hint('n2', `key-${i}`, `v${i}`));
    hints.push(hint('n2', 'key-0', '', true)); // a later delete of key-0 must win on replay
    expect(await handoff.store(hints)).toEqual(hints.map(() => true));
    expect(handoff.count()).toBe(41);

    handoff.start();
    await new Promise((r) => setTimeout(r, 300));
    expect(handoff.count()).toBe(41); // nothing lost while the target is unreachable
    expect(await counter(registry, 'kvstore_node_hints_replayed_total')).toBe(0);

    const target = await startTarget(tmp(), port);
    try {
      // The counters move once a batch's removal has committed, just after count() drops: wait
      // for both, or the last batch reads as not yet replayed.
      await until(
        async () =>
          handoff.count() === 0 && (await counter(registry, 'kvstore_node_hints_replayed_total')) === 41,
      );
      expect(handoff.count()).toBe(0);
      expect(handoff.hints.bytes()).toBe(0);
      expect(await counter(registry, 'kvstore_node_hints_replayed_total')).toBe(41);
      expect(await counter(registry, 'kvstore_node_hints_stored')).toBe(0);
      for (let i = 1; i < 40; i++) {
        const h = hints[i];
        expect(target.storage.get(h.p, h.k)?.value.toString()).toBe(`v${i}`);
      }
      expect(target.storage.get(hints[0].p, hints[0].k)?.tombstone).toBe(true);
    } finally {
      await handoff.stop();
      await stopTarget(target);
    }
  });

  it('drops hints older than the max hint age instead of replaying them, so a purged delete cannot be undone', async () => {
    const target = await startTarget(tmp());
    try {
      map = mapWith(target.port);
      peers.update(map);
      handoff = openHandoff({ maxHintAgeMs: 60_000 });
      const old: HintWrite = {
        t: 'n2',
        p: 1,
        k: Buffer.from('ancient'),
        r: encodeRecord({
          version: { wall: Date.now() - 120_000, logical: 0, writer: 'gw' },
          value: Buffer.from('old'),
          tombstone: false,
        }),
      };
      const fresh = hint('n2', 'fresh', 'new');
      expect(await handoff.store([old, fresh])).toEqual([true, true]);
      handoff.start();
      await until(async () => {
        const dropped = (await registry.getMetricsAsJSON()).find(
          (m) => m.name === 'kvstore_node_hints_dropped_total',
        );
        return (
          handoff.count() === 0 && dropped?.values.find((v) => v.labels.reason === 'expired')?.value === 1
        );
      });
      expect(handoff.count()).toBe(0);
      expect(target.storage.get(fresh.p, fresh.k)?.value.toString()).toBe('new');
      expect(target.storage.get(old.p, old.k)).toBeUndefined();
      const dropped = (await registry.getMetricsAsJSON()).find(
        (m) => m.name === 'kvstore_node_hints_dropped_total',
      );
      expect(dropped?.values.find((v) => v.labels.reason === 'expired')?.value).toBe(1);
    } finally {
      await handoff.stop();
      await stopTarget(target);
    }
  });

  it('applies a hint for itself locally, drops hints for a node that left or no longer holds the partition', async () => {
    map = mapWith(1);
    peers.update(map);
    handoff = openHandoff();
    const own = hint('n1', 'mine', 'local');
    expect(await handoff.store([own, hint('n3', 'theirs', 'x'), hint('n3', 'theirs2', 'y')])).toEqual([
      true,
      true,
      true,
    ]);
    expect(decodeRecord(holderStorage.getEncoded(own.p, own.k) ?? Buffer.alloc(0)).value.toString()).toBe(
      'local',
    );
    expect(handoff.count()).toBe(2);

    map = { ...mapWith(1, ['n1', 'n2']), epoch: 2 };
    await handoff.replayOnce();
    expect(handoff.count()).toBe(0);
    const dropped = (await registry.getMetricsAsJSON()).find(
      (m) => m.name === 'kvstore_node_hints_dropped_total',
    );
    expect(dropped?.values).toEqual([
      expect.objectContaining({
        value: 2,
        labels: expect.objectContaining({ target: 'n3', reason: 'target_left' }),
      }),
    ]);

    // A partition that moved away from its target: the hint is not needed there any more.
    map = { ...mapWith(1), epoch: 3, partitions: Array.from({ length: PARTITIONS }, () => ['n1', 'n3']) };
    await handoff.store([hint('n2', 'moved', 'm')]);
    await handoff.replayOnce();
    expect(handoff.count()).toBe(0);
    expect(await counter(registry, 'kvstore_node_hints_replayed_total')).toBe(0);
    const reasons = (await registry.getMetricsAsJSON())
      .find((m) => m.name === 'kvstore_node_hints_dropped_total')
      ?.values.map((v) => `${v.labels.target}:${v.labels.reason}:${v.value}`);
    expect(reasons?.sort()).toEqual(['n2:not_replica:1', 'n3:target_left:2']);
  });

  it('survives a restart of the holding node with its hints, and stop() ends the loop', async () => {
    map = mapWith(1);
    peers.update(map);
    handoff = openHandoff();
    await handoff.store([hint('n2', 'a', '1'), hint('n2', 'b', '2')]);
    handoff.start();
    await handoff.stop();
    const dir = dirs[0];
    await holderStorage.close();

    holderStorage = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    registry = new client.Registry();
    handoff = openHandoff();
    expect(handoff.count()).toBe(2);
    expect(await counter(registry, 'kvstore_node_hints_stored')).toBe(2);
    expect(await counter(registry, 'kvstore_node_hints_bytes')).toBe(handoff.hints.bytes());
  });
});
