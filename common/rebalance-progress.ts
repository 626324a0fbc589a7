import type { PartitionMap } from './partition-map';
import { rebalanceCounts } from './rebalance-plan';
import type { IncomingMoveState, InfoReply } from './rpc-protocol';

/**
 * Where a rebalance stands, joined from the map (the recorded plan and the
 * moves left) and each receiving node's own report (keys and bytes copied).
 * Pure: the map owner, the gateway and kvctl compute it the same way.
 */
export interface MoveProgress {
  readonly partition: number;
  readonly from: string;
  readonly to: string;
  /** 'waiting': the receiving node has not reported this move yet (not started, or unreachable) */
  readonly state: IncomingMoveState | 'waiting';
  readonly keys: number;
  readonly bytes: number;
  readonly error?: string;
}

export interface RebalanceProgress {
  readonly epoch: number;
  /** a rebalance is recorded in the map */
  readonly active: boolean;
  readonly targetNodes: readonly string[];
  /** nodes being emptied, to leave the cluster when the moves are done */
  readonly drainingNodes: readonly string[];
  readonly movesTotal: number;
  readonly movesDone: number;
  readonly movesLeft: number;
  /** keys and bytes copied by the moves still in flight */
  readonly keysInFlight: number;
  readonly bytesInFlight: number;
  /** keys and bytes every node reports having streamed since it started (monotonic per node run) */
  readonly keysStreamed: number;
  readonly bytesStreamed: number;
  /** ms since the Unix epoch */
  readonly startedAt?: number;
  readonly moves: readonly MoveProgress[];
}

export function rebalanceProgress(
  map: PartitionMap,
  infos: ReadonlyMap<string, Pick<InfoReply, 'incoming' | 'streamedKeys' | 'streamedBytes'>>,
): RebalanceProgress {
  const reported = new Map<string, NonNullable<InfoReply['incoming']>[number]>();
  for (const [node, info] of infos) {
    for (const m of info.incoming ?? []) reported.set(`${node}/${m.partition}/${m.from}`, m);
  }
  const moves: MoveProgress[] = map.moves.map((m) => {
    const r = reported.get(`${m.to}/${m.partition}/${m.from}`);
    return {
      partition: m.partition,
      from: m.from,
      to: m.to,
      state: r?.state ?? 'waiting',
      keys: r?.keys ?? 0,
      bytes: r?.bytes ?? 0,
      ...(r?.error ? { error: r.error } : {}),
    };
  });
  let keysStreamed = 0;
  let bytesStreamed = 0;
  for (const info of infos.values()) {
    keysStreamed += info.streamedKeys ?? 0;
    bytesStreamed += info.streamedBytes ?? 0;
  }
  const rb = map.rebalance;
  const target = rb ? rb.targetNodes : map.nodes.map((n) => n.id);
  const targetSet = new Set(target);
  const { movesTotal, movesDone, movesLeft } = rebalanceCounts(map);
  return {
    epoch: map.epoch,
    active: rb !== undefined || map.moves.length > 0,
    targetNodes: target,
    drainingNodes: map.nodes.filter((n) => !targetSet.has(n.id)).map((n) => n.id),
    movesTotal,
    movesDone,
    movesLeft,
    keysInFlight: moves.reduce((a, m) => a + m.keys, 0),
    bytesInFlight: moves.reduce((a, m) => a + m.bytes, 0),
    keysStreamed,
    bytesStreamed,
    ...(rb ? { startedAt: rb.startedAt } : {}),
    moves,
  };
}
