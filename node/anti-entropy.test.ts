import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import pino from 'pino';
import { Registry } from 'prom-client';
import { leafOf } from '../common/hash-tree';
import { HybridLogicalClock, type Version } from '../common/hlc';
import type { PartitionMap } from '../common/partition-map';
import { RpcClient, RpcError } from '../common/rpc-client';
import type { KvRecord } from '../common/record';
import { AntiEntropy } from './anti-entropy';
import { NodeMetrics } from './metrics';
import { exclusionQuantumMs, pastGrace } from './purge';
import { NodeRequestHandler } from './request-handler';
import { rpcRepairPeer, type RepairPeer } from './repair-peer';
import { RpcServer } from './rpc-server';
import { Storage } from './storage';

/*
 * The sync algorithm between real replicas: each one a real Storage (LMDB in a
 * temp dir) with its own AntiEntropy; a peer is the other replica's service and
 * storage called in process (what its request handler would call), or, in the
 * last test, the real RPC server and client over a loopback socket.
 */

const log = pino({ level: 'silent' });
const P = 4;
const GRACE = 1000;

interface Replica {
  readonly id: string;
  readonly dir: string;
  storage: Storage;
  ae: AntiEntropy;
  down: boolean;
}

let dirs: string[] = [];
let open: Replica[] = [];
let now = 1_000_000;
let map: PartitionMap;

function mapOf(ids: string[]): PartitionMap {
  return {
    cluster: 'c',
    epoch: 1,
    partitionCount: P,
    replicationFactor: ids.length,
    nodes: ids.map((id, i) => ({ id, address: `127.0.0.1:${7000 + i}` })),
    partitions: Array.from({ length: P }, () => [...ids]),
    moves: [],
  };
}

function peerOf(r: Replica): RepairPeer {
  const check = (): void => {
    if (r.down) throw new RpcError('unavailable', r.id, `${r.id} is down`);
  };
  return {
    id: r.id,
    info: async () => (check(), { ready: r.ae.readyForReads() }),
    roots: async (ps) => (check(), r.ae.roots(ps)),
    leaves: async (p) => (check(), r.ae.leaves(p)),
    bucket: async (p, b) => (check(), r.ae.bucket(p, b)),
    write: async (items) => {
      check();
      return r.storage.apply(items.map((i) => ({ partition: i.p, key: i.k, record: i.r })));
    },
  };
}

function newAntiEntropy(
  r: Pick<Replica, 'id' | 'storage'>,
  extra: { maxKeysPerSecond?: number; intervalMs?: number } = {},
) {
  return new AntiEntropy({
    storage: r.storage,
    nodeId: r.id,
    map: () => map,
    peer: (id) => {
      const other = open.find((o) => o.id === id);
      return other ? peerOf(other) : undefined;
    },
    log,
    registry: new Registry(),
    intervalMs: extra.intervalMs ?? 1e9,
    maxKeysPerSecond: extra.maxKeysPerSecond ?? 1e6,
    tombstoneGraceMs: GRACE,
    refillRetryMs: 5,
    now: () => now,
  });
}

/** Opens a replica (a new temp dir, or `dir` again). Trees are built before any write, as on a node. */
function replica(id: string, dir?: string): Replica {
  const d = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `kv-ae-${id}-`));
  if (!dir) dirs.push(d);
  const storage = Storage.open(d, { nodeId: id, cluster: 'c' });
  const r: Replica = { id, dir: d, storage, ae: undefined as unknown as AntiEntropy, down: false };
  r.ae = newAntiEntropy(r);
  r.ae.build(P);
  open.push(r);
  return r;
}

async function close(r: Replica): Promise<void> {
  await r.ae.stop();
  await r.storage.close();
  open = open.filter((o) => o !== r);
}

/** Closes and reopens on the same directory: no longer a fresh disk. */
async function reopen(r: Replica): Promise<Replica> {
  await close(r);
  return replica(r.id, r.dir);
}

async function pass(r: Replica): Promise<void> {
  r.ae.start();
  await r.ae.idle();
  await r.ae.stop();
}

const version = (wall: number, writer = 'g1'): Version => ({ wall, logical: 0, writer });
const live = (wall: number, value: string, expiresAt?: number): KvRecord =>
  expiresAt === undefined
    ? { version: version(wall), value: Buffer.from(value), tombstone: false }
    : { version: version(wall), value: Buffer.from(value), tombstone: false, expiresAt };
const tomb = (wall: number): KvRecord => ({
  version: version(wall),
  value: Buffer.alloc(0),
  tombstone: true,
});
const key = (i: number) => Buffer.from(`key-${i}`);
const partitionOfKey = (i: number) => i % P;

function allRoots(r: Replica): Buffer {
  return Buffer.concat(r.ae.roots(Array.from({ length: P }, (_, p) => p)));
}

/** The roots a rebuild from disk gives right now: the incremental trees must equal it. */
function rebuiltRoots(r: Replica): Buffer {
  const fresh = newAntiEntropy(r);
  fresh.build(P);
  return Buffer.concat(fresh.roots(Array.from({ length: P }, (_, p) => p)));
}

function stored(r: Replica): number {
  return r.storage.stats().keys;
}

beforeEach(() => {
  now = 1_000_000;
});

afterEach(async () => {
  for (const r of [...open]) await close(r);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  dirs = [];
});

describe('anti-entropy between real replicas', () => {
  it('converges two diverged replicas: every key ends at its newest version on both, trees equal', async () => {
    const recordArb = fc.record({
      i: fc.integer({ min: 0, max: 40 }),
      wall: fc.integer({ min: 1, max: 1000 }),
      writer: fc.constantFrom('g1', 'g2'),
      tombstone: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(recordArb, { maxLength: 60 }),
        fc.array(recordArb, { maxLength: 60 }),
        async (onA, onB) => {
          map = mapOf(['a', 'b']);
          const a = replica('a');
          const b = replica('b');
          const newest = new Map<number, KvRecord>();
          for (const [r, writes] of [
            [a, onA],
            [b, onB],
          ] as const) {
            for (const w of writes) {
              const rec: KvRecord = {
                version: { wall: now + w.wall, logical: 0, writer: w.writer },
                value: w.tombstone ? Buffer.alloc(0) : Buffer.from(`v${w.wall}`),
                tombstone: w.tombstone,
              };
              await r.storage.applyRecord(partitionOfKey(w.i), key(w.i), rec);
              const cur = newest.get(w.i);
              if (
                !cur ||
                cur.version.wall < rec.version.wall ||
                (cur.version.wall === rec.version.wall && cur.version.writer < rec.version.writer)
              )
                newest.set(w.i, rec);
            }
          }
          await pass(a);
          for (const r of [a, b]) {
            for (const [i, rec] of newest)
              expect(r.storage.get(partitionOfKey(i), key(i))?.version).toEqual(rec.version);
            expect(stored(r)).toBe(newest.size);
            expect(allRoots(r).equals(rebuiltRoots(r))).toBe(true);
          }
          expect(allRoots(a).equals(allRoots(b))).toBe(true);
          await close(a);
          await close(b);
        },
      ),
      { numRuns: 15 },
    );
  });

  it('refills an empty disk from a full replica, refusing reads until every partition is synced', async () => {
    map = mapOf(['a', 'b', 'c']);
    let a = replica('a');
    for (let i = 0; i < 300; i++)
      await a.storage.applyRecord(partitionOfKey(i), key(i), live(now + i, `v${i}`));
    a = await reopen(a); // a full replica: not a fresh disk
    expect(a.ae.readyForReads()).toBe(true);
    const b = replica('b'); // the lost volume
    const c = replica('c'); // a second empty disk, not a source of anything
    expect(b.ae.readyForReads()).toBe(false);
    expect(b.ae.notReadyReason()).toMatch(/refilling/);

    // The only full replica is down: b syncs with c, but an empty peer is no source.
    a.down = true;
    b.ae.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(b.ae.readyForReads()).toBe(false);
    expect(b.ae.status().refilling).toBe(true);

    a.down = false;
    for (let i = 0; i < 200 && !b.ae.readyForReads(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(b.ae.readyForReads()).toBe(true);
    await b.ae.stop();
    for (let i = 0; i < 300; i++)
      expect(b.storage.get(partitionOfKey(i), key(i))?.value.toString()).toBe(`v${i}`);
    expect(allRoots(b).equals(allRoots(a))).toBe(true);

    // A restart mid-refill resumes the refill (the marker is on disk); a finished one does not.
    const b2 = await reopen(b);
    expect(b2.storage.freshDisk).toBe(false);
    expect(b2.ae.readyForReads()).toBe(true);
    expect(c.ae.readyForReads()).toBe(false);
  });

  it('makes a brand-new cluster (every disk empty) ready after one pass', async () => {
    map = mapOf(['a', 'b', 'c']);
    const rs = ['a', 'b', 'c'].map((id) => replica(id));
    expect(rs.every((r) => !r.ae.readyForReads())).toBe(true);
    await Promise.all(rs.map((r) => pass(r)));
    expect(rs.every((r) => r.ae.readyForReads())).toBe(true);
  });

  it('keeps refilling across a restart that interrupts it', async () => {
    map = mapOf(['a', 'b']);
    let a = replica('a');
    await a.storage.applyRecord(0, key(0), live(now, 'x'));
    a = await reopen(a);
    a.down = true;
    const b = replica('b');
    b.ae.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(b.ae.readyForReads()).toBe(false);
    const b2 = await reopen(b); // not a fresh disk any more, but the refill never finished
    expect(b2.ae.readyForReads()).toBe(false);
    a.down = false;
    await pass(b2);
    expect(b2.ae.readyForReads()).toBe(true);
    expect(b2.storage.get(0, key(0))?.value.toString()).toBe('x');
  });

  it('purges tombstones only after the grace period and once every replica agrees; they never come back', async () => {
    map = mapOf(['a', 'b', 'c']);
    let [a, b, c] = ['a', 'b', 'c'].map((id) => replica(id));
    await Promise.all([a, b, c].map((r) => pass(r))); // brand new: ready
    for (let i = 0; i < 10; i++) {
      for (const r of [a, b, c]) await r.storage.applyRecord(partitionOfKey(i), key(i), live(now, `old${i}`));
    }
    // c is down while the keys are deleted: it keeps the old values.
    now += 10;
    for (let i = 0; i < 10; i++) {
      for (const r of [a, b]) await r.storage.applyRecord(partitionOfKey(i), key(i), tomb(now));
    }
    [a, b, c] = [await reopen(a), await reopen(b), await reopen(c)];
    c.down = true;
    now += GRACE + exclusionQuantumMs(GRACE) + 1;
    await pass(a);
    await pass(b);
    // c unreachable: no agreement, nothing purged, although the grace period is over.
    expect(stored(a)).toBe(10);
    expect(stored(b)).toBe(10);
    expect(a.storage.get(0, key(0))?.tombstone).toBe(true);

    // c is back: the tombstones (past grace) still beat its older values, then every replica purges.
    c.down = false;
    await pass(a);
    expect(stored(c)).toBe(10);
    for (let i = 0; i < 10; i++) expect(c.storage.get(partitionOfKey(i), key(i))?.tombstone).toBe(true);
    expect(stored(a)).toBe(0);
    await pass(b);
    await pass(c);
    for (const r of [a, b, c]) expect(stored(r)).toBe(0);

    // More passes in any order: nothing comes back, trees stay equal to a rebuild.
    for (const r of [c, a, b, a]) await pass(r);
    for (const r of [a, b, c]) {
      expect(stored(r)).toBe(0);
      expect(allRoots(r).equals(rebuiltRoots(r))).toBe(true);
    }
  });

  it('does not send a purged tombstone back from a replica that has not purged it yet', async () => {
    map = mapOf(['a', 'b']);
    let a = replica('a');
    let b = replica('b');
    for (const r of [a, b]) await r.storage.applyRecord(0, key(0), tomb(now));
    [a, b] = [await reopen(a), await reopen(b)];
    now += GRACE + exclusionQuantumMs(GRACE) + 1;
    await pass(a); // agreed (the tombstone is out of both trees): a purges, b still holds it
    expect(stored(a)).toBe(0);
    expect(stored(b)).toBe(1);
    // A new key in the same leaf makes the leaf differ, so a fetches b's bucket, tombstone included.
    let j = 4;
    while (leafOf(key(j), 64) !== leafOf(key(0), 64)) j += P;
    await b.storage.applyRecord(0, key(j), live(now, 'new'));
    await pass(a);
    expect(a.storage.get(0, key(j))?.value.toString()).toBe('new');
    expect(a.storage.get(0, key(0))).toBeUndefined();
    // Only the new key travelled: the tombstone was not taken back, even for a moment.
    expect(a.ae.status().keysRepaired).toBe(1);
    await pass(b);
    expect(stored(b)).toBe(1);
    expect(allRoots(a).equals(allRoots(b))).toBe(true);
  });

  it('purges records past their expiry plus the grace period, keeping the trees consistent', async () => {
    map = mapOf(['a', 'b']);
    let a = replica('a');
    let b = replica('b');
    for (const r of [a, b]) {
      await r.storage.applyRecord(1, key(1), live(now, 'short', now + 100));
      await r.storage.applyRecord(1, key(5), live(now, 'long', now + 100_000));
      await r.storage.applyRecord(1, key(9), live(now, 'forever'));
    }
    [a, b] = [await reopen(a), await reopen(b)];
    now += 100 + GRACE + exclusionQuantumMs(GRACE) + 1;
    await pass(a);
    await pass(b);
    for (const r of [a, b]) {
      expect(r.storage.get(1, key(1))).toBeUndefined();
      expect(r.storage.get(1, key(5))?.value.toString()).toBe('long');
      expect(r.storage.get(1, key(9))?.value.toString()).toBe('forever');
      expect(allRoots(r).equals(rebuiltRoots(r))).toBe(true);
    }
  });

  it('keeps trees equal to a rebuild while writes, tombstones and sweeps interleave', async () => {
    map = mapOf(['a']);
    const a = replica('a');
    for (let i = 0; i < 200; i++) {
      const rec =
        i % 3 === 0 ? tomb(now + i) : live(now + i, `v${i}`, i % 5 === 0 ? now + i + 50 : undefined);
      await a.storage.applyRecord(partitionOfKey(i % 37), key(i % 37), rec);
      if (i % 20 === 0) {
        now += 300;
        a.ae.roots([0, 1, 2, 3]); // sweeps
      }
    }
    expect(allRoots(a).equals(rebuiltRoots(a))).toBe(true);
  });

  it('with interval 0 runs no pass by itself, but on repair, and still refills an empty disk', async () => {
    map = mapOf(['a', 'b']);
    let a = replica('a');
    let b = replica('b');
    await a.storage.applyRecord(0, key(0), live(now, 'x'));
    [a, b] = [await reopen(a), await reopen(b)];
    b.ae = newAntiEntropy(b, { intervalMs: 0 });
    b.ae.build(P);
    b.ae.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(b.ae.status()).toEqual(expect.objectContaining({ running: false, partitionsTotal: 0 }));
    expect(stored(b)).toBe(0);
    b.ae.repair([0]);
    await b.ae.idle();
    expect(b.ae.status()).toEqual(expect.objectContaining({ partitionsTotal: 1, partitionsDone: 1 }));
    expect(b.storage.get(0, key(0))?.value.toString()).toBe('x');
    await b.ae.stop();

    const c = replica('c');
    map = mapOf(['a', 'c']);
    c.ae = newAntiEntropy(c, { intervalMs: 0 });
    c.ae.build(P);
    c.ae.start();
    for (let i = 0; i < 100 && !c.ae.readyForReads(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(c.ae.readyForReads()).toBe(true);
    expect(c.storage.get(0, key(0))?.value.toString()).toBe('x');
  });

  it('throttles repairs to the configured keys per second', async () => {
    map = mapOf(['a', 'b']);
    let a = replica('a');
    for (let i = 0; i < 300; i++) await a.storage.applyRecord(partitionOfKey(i), key(i), live(now, `v${i}`));
    a = await reopen(a);
    const b = replica('b');
    b.ae = newAntiEntropy(b, { maxKeysPerSecond: 200 });
    const started = Date.now();
    await pass(b);
    expect(stored(b)).toBe(300);
    // A burst of 200 keys, then 200 per second: the other 100 take at least half a second.
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(2000);
  });
});

describe('a replica that has just started', () => {
  it('is skipped while it builds its trees, and its partitions are retried soon, not at the next interval', async () => {
    let a = replica('a');
    const b = replica('b');
    // a's first pass as a one-node cluster ends its refill (a refill retries quickly on its own), and a
    // restart makes it a node with a disk of its own.
    map = mapOf(['a']);
    await pass(a);
    a = await reopen(a);
    map = mapOf(['a', 'b']);
    for (let i = 0; i < 20; i++)
      await a.storage.applyRecord(partitionOfKey(i), key(i), live(now + i, `a${i}`));
    for (let i = 100; i < 106; i++)
      await b.storage.applyRecord(partitionOfKey(i), key(i), live(now + i, `b${i}`));
    // b restarts: its trees are built in the background, held at the first record until released.
    await b.ae.stop();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    b.ae = newAntiEntropy(b);
    const building = b.ae.buildInBackground(P, { sliceMs: 0, checkEvery: 1, pause: () => held });
    const registry = new Registry();
    const aAe = new AntiEntropy({
      storage: a.storage,
      nodeId: 'a',
      map: () => map,
      peer: (id) => (id === 'b' ? peerOf(b) : undefined),
      log,
      registry,
      intervalMs: 1e9,
      maxKeysPerSecond: 1e6,
      tombstoneGraceMs: GRACE,
      now: () => now,
    });
    aAe.build(P);
    try {
      aAe.start();
      await aAe.idle();
      // Nothing synced, and "still building" is not counted as a peer error.
      expect([stored(a), stored(b)]).toEqual([20, 6]);
      expect(
        await registry.getSingleMetricAsString('kvstore_node_antientropy_peer_errors_total'),
      ).not.toMatch(/peer="b"\} [1-9]/);
      release();
      await building;
      // The retry (1 s after the pass, not the 1e9 ms interval) syncs both ways; 3 s at most here.
      for (let i = 0; i < 60 && stored(b) < 26; i++) await new Promise((r) => setTimeout(r, 50));
      await aAe.idle();
    } finally {
      await aAe.stop();
    }
    expect([stored(a), stored(b)]).toEqual([26, 26]);
  });
});

describe('anti-entropy over the real RPC protocol', () => {
  it('repairs through a node request handler on a loopback socket', async () => {
    map = mapOf(['a', 'b']);
    let a = replica('a');
    for (let i = 0; i < 100; i++)
      await a.storage.applyRecord(partitionOfKey(i), key(i), live(now + i, `v${i}`));
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
        map: () => map,
        peer: (id) => (id === 'a' ? rpcRepairPeer(client) : undefined),
        log,
        registry: new Registry(),
        intervalMs: 1e9,
        tombstoneGraceMs: GRACE,
        now: () => now,
      });
      b.build(P);
      await storage.applyRecord(3, Buffer.from('only-on-b'), live(now, 'b'));
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

describe('building the trees while the node takes writes', () => {
  /** One step of the concurrent load: a write (live, tombstone, expiring), a purge (if past grace) or a drop. */
  type Op =
    | { kind: 'write'; i: number; rec: 'live' | 'tomb' | 'expiring'; wall: number }
    | { kind: 'purge'; i: number }
    | { kind: 'drop'; i: number };

  const opArb: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('write' as const),
        i: fc.nat(59),
        rec: fc.constantFrom('live' as const, 'tomb' as const, 'expiring' as const),
        wall: fc.integer({ min: -3 * GRACE, max: 3 * GRACE }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('purge' as const), i: fc.nat(59) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), i: fc.nat(59) }) },
  );

  async function run(r: Replica, op: Op): Promise<void> {
    const p = partitionOfKey(op.i);
    if (op.kind === 'write') {
      const wall = now + op.wall;
      const rec =
        op.rec === 'live'
          ? live(wall, `w${op.i}`)
          : op.rec === 'tomb'
            ? tomb(wall)
            : live(wall, 'e', wall + 10);
      await r.storage.applyRecord(p, key(op.i), rec);
      return;
    }
    const current = r.storage.get(p, key(op.i));
    if (!current) return;
    // As node/purge.ts does: only records past their grace, which the trees no longer count.
    if (op.kind === 'purge') {
      if (pastGrace(current, GRACE, now)) await r.storage.purge(p, key(op.i), current);
    } else await r.storage.drop(p, [{ key: key(op.i), raw: r.storage.getEncoded(p, key(op.i))! }]);
  }

  it('ends with the trees a rebuild from disk gives, whatever the writes interleaved with the scan', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ i: fc.nat(59), wall: fc.integer({ min: -2 * GRACE, max: 0 }) }), {
          minLength: 10,
          maxLength: 60,
        }),
        // `at` in records scanned: most ops land during the scan (at least 10 records), some after it.
        fc.array(fc.record({ at: fc.nat(30), op: opArb }), { minLength: 1, maxLength: 40 }),
        async (preload, ops) => {
          const r = replica(`bg-${dirs.length}`);
          for (const w of preload)
            await r.storage.applyRecord(partitionOfKey(w.i), key(w.i), live(now + w.wall, 'p'));
          // A fresh AntiEntropy on the loaded disk, as at a node's start. The scan pauses after every
          // record and runs the ops due there (op k at record `at`), so writes land before, during
          // and after the scan, deterministically.
          const ae = newAntiEntropy(r);
          try {
            const due = [...ops].sort((a, b) => a.at - b.at);
            let record = 0;
            const building = ae.buildInBackground(P, {
              sliceMs: 0,
              checkEvery: 1,
              pause: async () => {
                record++;
                while (due.length > 0 && due[0].at <= record) await run(r, due.shift()!.op);
              },
            });
            if (r.storage.stats().keys > 0)
              expect(() => ae.roots([0])).toThrow(/still building its hash trees/);
            await building;
            for (const d of due) await run(r, d.op);
            // Writes after the build go through the incremental path.
            for (const { op } of ops.slice(0, 10)) await run(r, op);
            const roots = Buffer.concat(ae.roots(Array.from({ length: P }, (_, p) => p)));
            expect(roots.equals(rebuiltRoots(r))).toBe(true);
          } finally {
            // Also on a failed check: stop the build (and the writes in its pauses) before closing.
            await ae.stop();
            await close(r);
          }
        },
      ),
      { numRuns: 40, seed: 20261126 },
    );
  });
});
