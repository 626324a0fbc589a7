import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Version } from '../common/hlc';
import type { PartitionMap } from '../common/partition-map';
import { RpcError } from '../common/rpc-client';
import type { KvRecord } from '../common/record';
import { AntiEntropy } from './anti-entropy';
import type { RepairPeer } from './repair-peer';
import { Storage } from './storage';

/*
 * Shared by the anti-entropy suites (hash-trees, peer-sync, repair-passes, refill,
 * repair-peer); test code only, never built into dist. The sync algorithm between real
 * replicas: each one a real Storage (LMDB in a temp dir) with its own AntiEntropy; a peer
 * is the other replica's service and storage called in process (what its request handler
 * would call), or, in repair-peer.test.ts, the real RPC server and client over a loopback
 * socket.
 */

export const log = pino({ level: 'silent' });
export const P = 4;
export const GRACE = 1000;

export interface Replica {
  readonly id: string;
  readonly dir: string;
  storage: Storage;
  ae: AntiEntropy;
  down: boolean;
}

/** temp dirs to remove after each test */
export const dirs: string[] = [];
const open: Replica[] = [];
/** what every replica's AntiEntropy reads: the map, and the clock of record versions */
export const env: { now: number; map: PartitionMap } = { now: 1_000_000, map: mapOf(['a']) };

export function mapOf(ids: string[]): PartitionMap {
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

export function peerOf(r: Replica): RepairPeer {
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

export function newAntiEntropy(
  r: Pick<Replica, 'id' | 'storage'>,
  extra: { maxKeysPerSecond?: number; intervalMs?: number } = {},
): AntiEntropy {
  return new AntiEntropy({
    storage: r.storage,
    nodeId: r.id,
    map: () => env.map,
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
    now: () => env.now,
  });
}

/** Opens a replica (a new temp dir, or `dir` again). Trees are built before any write, as on a node. */
export function replica(id: string, dir?: string): Replica {
  const d = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `kv-ae-${id}-`));
  if (!dir) dirs.push(d);
  const storage = Storage.open(d, { nodeId: id, cluster: 'c' });
  const r: Replica = { id, dir: d, storage, ae: undefined as unknown as AntiEntropy, down: false };
  r.ae = newAntiEntropy(r);
  r.ae.build(P);
  open.push(r);
  return r;
}

export async function close(r: Replica): Promise<void> {
  await r.ae.stop();
  await r.storage.close();
  open.splice(open.indexOf(r), 1);
}

/** Closes and reopens on the same directory: no longer a fresh disk. */
export async function reopen(r: Replica): Promise<Replica> {
  await close(r);
  return replica(r.id, r.dir);
}

export async function pass(r: Replica): Promise<void> {
  r.ae.start();
  await r.ae.idle();
  await r.ae.stop();
}

export const version = (wall: number, writer = 'g1'): Version => ({ wall, logical: 0, writer });
export const live = (wall: number, value: string, expiresAt?: number): KvRecord =>
  expiresAt === undefined
    ? { version: version(wall), value: Buffer.from(value), tombstone: false }
    : { version: version(wall), value: Buffer.from(value), tombstone: false, expiresAt };
export const tomb = (wall: number): KvRecord => ({
  version: version(wall),
  value: Buffer.alloc(0),
  tombstone: true,
});
export const key = (i: number) => Buffer.from(`key-${i}`);
export const partitionOfKey = (i: number) => i % P;

export function allRoots(r: Replica): Buffer {
  return Buffer.concat(r.ae.roots(Array.from({ length: P }, (_, p) => p)));
}

/** The roots a rebuild from disk gives right now: the incremental trees must equal it. */
export function rebuiltRoots(r: Replica): Buffer {
  const fresh = newAntiEntropy(r);
  fresh.build(P);
  return Buffer.concat(fresh.roots(Array.from({ length: P }, (_, p) => p)));
}

export function stored(r: Replica): number {
  return r.storage.stats().keys;
}

/** Registers the hooks: the clock reset before each test; replicas closed and dirs removed after. */
export function useReplicaFixtures(): void {
  beforeEach(() => {
    env.now = 1_000_000;
  });

  afterEach(async () => {
    for (const r of [...open]) await close(r);
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
}
