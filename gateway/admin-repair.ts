import { errorMessage } from '../common/errors';
import type { PartitionMap } from '../common/partition-map';
import type { PeerPool } from '../common/peer-pool';
import { RpcError, type RpcClient } from '../common/rpc-client';
import type { NodeRepairReport, RepairReport } from '../common/rest-api';
import type { IncomingMoveStatus, InfoReply, RepairStatus } from '../common/rpc-protocol';
import { ApiError } from './api-error';
import type { MapSource } from './coordinator';

/**
 * `kvctl repair` behind the gateway: start an anti-entropy pass on every node
 * of the map, or collect each node's repair status. One node's failure is
 * reported next to the others' answers, never instead of them.
 */

export type { NodeRepairReport, RepairReport };

/** `?partition=3&partition=7` or `?partition=3,7`: partition numbers of the map; undefined when absent. */
export function parsePartitionsParam(raw: unknown, partitionCount: number): number[] | undefined {
  if (raw === undefined) return undefined;
  const parts = (Array.isArray(raw) ? raw : [raw]).flatMap((v) =>
    typeof v === 'string' ? v.split(',') : [v],
  );
  if (parts.length === 0) throw new ApiError(400, 'bad_request', 'partition must not be empty');
  const out = new Set<number>();
  for (const p of parts) {
    if (typeof p !== 'string' || !/^\d{1,5}$/.test(p.trim()) || Number(p) >= partitionCount) {
      throw new ApiError(
        400,
        'bad_request',
        `partition must be a number in 0..${partitionCount - 1}, got ${JSON.stringify(p)}`,
      );
    }
    out.add(Number(p));
  }
  return [...out].sort((a, b) => a - b);
}

export async function startRepair(
  maps: MapSource,
  pool: PeerPool,
  partitions: readonly number[] | undefined,
): Promise<RepairReport> {
  return fanOut(maps, partitions, async (id) => {
    const status = await call(pool, id, (c) =>
      c.call(partitions === undefined ? { op: 'repair' } : { op: 'repair', partitions }),
    );
    return { repair: checkStatus(id, status) };
  });
}

export async function repairStatus(maps: MapSource, pool: PeerPool): Promise<RepairReport> {
  return fanOut(maps, undefined, async (id) => {
    const info = await call(pool, id, (c) => c.call({ op: 'info' }));
    if (typeof info?.ready !== 'boolean' || typeof info.keys !== 'number') {
      throw new ApiError(502, 'internal', `${id} answered info with an unexpected shape`);
    }
    return {
      ready: info.ready,
      keys: info.keys,
      ...(typeof info.bytes === 'number' ? { bytes: info.bytes } : {}),
      ...(typeof info.hints === 'number' ? { hints: info.hints } : {}),
      ...(info.repair ? { repair: checkStatus(id, info.repair) } : {}),
      ...checkStreaming(id, info),
    };
  });
}

type Details = Omit<NodeRepairReport, 'id' | 'address'>;

async function fanOut(
  maps: MapSource,
  partitions: readonly number[] | undefined,
  ask: (id: string) => Promise<Details>,
): Promise<RepairReport> {
  let map = requireMap(maps);
  const once = (m: PartitionMap): Promise<NodeRepairReport[]> =>
    Promise.all(
      m.nodes.map(async ({ id, address }): Promise<NodeRepairReport> => {
        try {
          return { id, address, ...(await ask(id)) };
        } catch (err) {
          return { id, address, error: describe(err) };
        }
      }),
    );
  let nodes = await once(map);
  // A node holding a newer map refuses ours: reload it and ask again, as the coordinator does.
  if (nodes.some((n) => n.error?.code === 'stale_epoch')) {
    const fresh = await maps.refresh();
    if (fresh && fresh.epoch > map.epoch) {
      map = fresh;
      nodes = await once(map);
    }
  }
  return { epoch: map.epoch, ...(partitions ? { partitions } : {}), nodes };
}

function call<T>(pool: PeerPool, id: string, fn: (c: RpcClient) => Promise<T>): Promise<T> {
  const client = pool.get(id);
  if (!client) throw new RpcError('unavailable', id, `no connection for node ${id}`);
  return fn(client);
}

function describe(err: unknown): { code: string; message: string } {
  if (err instanceof RpcError) return { code: err.code, message: err.message };
  if (err instanceof ApiError) return { code: err.apiCode, message: err.message };
  return { code: 'internal', message: errorMessage(err) };
}

function checkStatus(id: string, s: RepairStatus): RepairStatus {
  const ok =
    typeof s?.running === 'boolean' &&
    [s.partitionsTotal, s.partitionsDone, s.keysRepaired, s.lastFullRepairAt].every(
      (n) => typeof n === 'number',
    );
  if (!ok) throw new ApiError(502, 'internal', `${id} answered with a malformed repair status`);
  return s;
}

const MOVE_STATES: ReadonlySet<unknown> = new Set(['streaming', 'syncing', 'ready']);

/** The rebalancing fields of a node's info, checked: a node older than them has none, which is fine. */
function checkStreaming(
  id: string,
  info: InfoReply,
): Pick<NodeRepairReport, 'incoming' | 'streamedKeys' | 'streamedBytes'> {
  const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const { incoming, streamedKeys, streamedBytes } = info as {
    incoming?: unknown;
    streamedKeys?: unknown;
    streamedBytes?: unknown;
  };
  const bad = (what: string): ApiError => new ApiError(502, 'internal', `${id} answered info with ${what}`);
  if (incoming !== undefined && !Array.isArray(incoming)) throw bad('incoming that is not a list');
  const moves = (incoming ?? []).map((m: unknown): IncomingMoveStatus => {
    const r = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>;
    if (
      !count(r.partition) ||
      typeof r.from !== 'string' ||
      !MOVE_STATES.has(r.state) ||
      !count(r.keys) ||
      !count(r.bytes) ||
      (r.error !== undefined && typeof r.error !== 'string')
    ) {
      throw bad('a malformed incoming move');
    }
    return {
      partition: r.partition,
      from: r.from,
      state: r.state as IncomingMoveStatus['state'],
      keys: r.keys,
      bytes: r.bytes,
      ...(typeof r.error === 'string' ? { error: r.error } : {}),
    };
  });
  if (streamedKeys !== undefined && !count(streamedKeys)) throw bad('a malformed streamedKeys');
  if (streamedBytes !== undefined && !count(streamedBytes)) throw bad('a malformed streamedBytes');
  return {
    ...(incoming !== undefined ? { incoming: moves } : {}),
    ...(streamedKeys !== undefined ? { streamedKeys } : {}),
    ...(streamedBytes !== undefined ? { streamedBytes } : {}),
  };
}

function requireMap(maps: MapSource): PartitionMap {
  const map = maps.current();
  if (!map) throw new ApiError(503, 'not_ready', 'the gateway has no partition map yet');
  return map;
}
