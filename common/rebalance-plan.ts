/**
 * The rebalance planner (docs/design.md, "Rebalancing"): pure functions from one partition map
 * to the next. No I/O, no clock (the caller passes `now`), no randomness.
 *
 * The protocol, one epoch per step:
 * 1. plan: planRebalance lists every move at once, with the rebalance record;
 * 2. the pending replica of each move (`to`) gets dual writes and streams the partition;
 * 3. switch: completeMoves replaces `from` by `to` in partitions[p] and drops the move;
 * 4. in the epoch where the last move is switched, the drained nodes (in `nodes` but not in
 *    the record's targetNodes, and by then holding nothing) leave `nodes` and the record goes.
 *
 * Every map these functions return keeps the invariants mapViolations checks; in particular a
 * partition never has fewer than replicationFactor full replicas at any epoch.
 */
import { KvError } from './errors';
import {
  InvalidMapError,
  validatePartitionMap,
  type NodeInfo,
  type PartitionMap,
  type PartitionMove,
} from './partition-map';
import { movedReplicas, placePartitions } from './placement';

export type RebalancePlanErrorCode =
  /** fewer target nodes than the replication factor */
  | 'not_enough_nodes'
  /** empty target, duplicate ids or addresses, or a node a partition map cannot hold */
  | 'invalid_target'
  /** `now` is not a non-negative integer (ms since the Unix epoch) */
  | 'invalid_start_time'
  /** the map breaks an invariant of mapViolations: nobody should plan from it */
  | 'invalid_map'
  /** partitions does not have partitionCount entries: a rebalance never changes P */
  | 'partition_count_change'
  /** completeMoves was given a move the map does not list (or the same move twice) */
  | 'unknown_move'
  /** a node about to leave the map still holds a partition */
  | 'drained_node_holds_data';

export class RebalancePlanError extends KvError {
  declare readonly code: RebalancePlanErrorCode;

  constructor(code: RebalancePlanErrorCode, message: string, context: Record<string, unknown> = {}) {
    super(code, message, context);
  }
}

/**
 * The map that moves `map` towards the node set `target` (epoch + 1), or `map` itself when
 * there is nothing to do: same nodes, already balanced, no rebalance in flight; or a
 * rebalance to this very target already in flight (so a map owner that re-issues its
 * desired state every reconcile, or after a restart, resumes the plan instead of
 * restarting it).
 *
 * A different target while moves are in flight re-plans from the current full replicas:
 * moves not switched yet are dropped (their pending replicas just stop receiving writes),
 * which is safe because only full replicas count toward W and R.
 *
 * When the plan needs no copy at all, the target node set takes effect in the same epoch
 * (nodes not in the target hold nothing then) and no rebalance record is written.
 */
export function planRebalance(map: PartitionMap, target: readonly NodeInfo[], now: number): PartitionMap {
  checkPlannable(map);
  checkTarget(map, target);
  if (!Number.isSafeInteger(now) || now < 0) {
    throw new RebalancePlanError('invalid_start_time', `now must be ms since the Unix epoch, got ${now}`, {
      now,
    });
  }
  const targetIds = target.map((node) => node.id);
  const targetSet = new Set(targetIds);
  const nodes = mergeNodes(map.nodes, target);
  checkAddresses(nodes);

  if (
    map.rebalance !== undefined &&
    map.moves.length > 0 &&
    sameIdSet(map.rebalance.targetNodes, targetIds) &&
    sameNodes(nodes, map.nodes)
  ) {
    return map;
  }

  const placement = placePartitions({
    nodes: target,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    previous: map.partitions,
  });
  const moves: PartitionMove[] = movedReplicas(map.partitions, placement).map(({ partition, from, to }) => {
    // RF does not change, so every new replica takes the place of one that leaves.
    if (from === undefined)
      throw new Error(`rebalance: move to ${to} in partition ${partition} has no source`);
    return { partition, from, to };
  });

  let next: PartitionMap;
  if (moves.length === 0) {
    // Every partition already sits on target nodes only, so the others hold nothing and can
    // leave now: there is no rebalance to record.
    const finalNodes = nodes.filter((node) => targetSet.has(node.id));
    if (map.moves.length === 0 && map.rebalance === undefined && sameNodes(finalNodes, map.nodes)) return map;
    next = withState(map, finalNodes, map.partitions, []);
  } else {
    next = withState(map, nodes, map.partitions, moves, {
      targetNodes: targetIds,
      movesTotal: moves.length,
      startedAt: now,
    });
  }
  checkWritable(map, next);
  return next;
}

/**
 * Switches finished moves (epoch + 1): `to` takes the place of `from` in partitions[p], at the
 * same position, and the move is dropped. When no move is left, the drained nodes leave the
 * map and the rebalance record goes, in the same epoch. Returns `map` itself when `done` is
 * empty and there is nothing to finish.
 */
export function completeMoves(map: PartitionMap, done: readonly PartitionMove[]): PartitionMap {
  const indexOf = new Map<string, number>();
  map.moves.forEach((move, i) => indexOf.set(moveKey(move), i));
  const finished = new Set<number>();
  const changed = new Map<number, string[]>();
  for (const move of done) {
    const i = indexOf.get(moveKey(move));
    if (i === undefined || finished.has(i)) {
      throw new RebalancePlanError(
        'unknown_move',
        `move of partition ${move.partition} from ${move.from} to ${move.to} is not in the map${
          i === undefined ? '' : ' (listed twice in done)'
        }`,
        { move, epoch: map.epoch },
      );
    }
    finished.add(i);
    const replicas = changed.get(move.partition) ?? [...(map.partitions[move.partition] ?? [])];
    changed.set(move.partition, replicas);
    const at = replicas.indexOf(move.from);
    // The map's own invariants rule both out; checked so a broken map cannot lose a replica.
    if (at < 0 || replicas.includes(move.to)) {
      throw new RebalancePlanError(
        'invalid_map',
        `move of partition ${move.partition} from ${move.from} to ${move.to} does not fit its replicas ${replicas.join(',')}`,
        { move, replicas, epoch: map.epoch },
      );
    }
    replicas[at] = move.to;
  }
  const moves = map.moves.filter((_, i) => !finished.has(i));
  const finishing = moves.length === 0 && map.rebalance !== undefined;
  if (finished.size === 0 && !finishing) return map;

  const partitions = map.partitions.map((replicas, p) => changed.get(p) ?? replicas);
  if (!finishing) return withState(map, map.nodes, partitions, moves, map.rebalance);

  const keep = new Set(map.rebalance?.targetNodes);
  const leaving = new Set(map.nodes.filter((node) => !keep.has(node.id)).map((node) => node.id));
  partitions.forEach((replicas, p) => {
    const holder = replicas.find((id) => leaving.has(id));
    if (holder !== undefined) {
      throw new RebalancePlanError(
        'drained_node_holds_data',
        `node ${holder} is leaving the map but still holds partition ${p}`,
        { node: holder, partition: p, epoch: map.epoch },
      );
    }
  });
  return withState(
    map,
    map.nodes.filter((node) => keep.has(node.id)),
    partitions,
    [],
  );
}

/** Every invariant `map` breaks, human readable; empty when the map is healthy. */
export function mapViolations(map: PartitionMap): string[] {
  const problems: string[] = [];
  const ids = new Set<string>();
  for (const node of map.nodes) {
    if (ids.has(node.id)) problems.push(`node ${node.id} is listed twice`);
    ids.add(node.id);
  }
  if (map.partitions.length !== map.partitionCount) {
    problems.push(`partitions has ${map.partitions.length} entries, partitionCount is ${map.partitionCount}`);
  }
  map.partitions.forEach((replicas, p) => {
    if (replicas.length !== map.replicationFactor) {
      problems.push(
        `partition ${p} has ${replicas.length} replicas, replicationFactor is ${map.replicationFactor}`,
      );
    }
    if (new Set(replicas).size !== replicas.length)
      problems.push(`partition ${p} lists a node twice: ${replicas.join(',')}`);
    for (const id of replicas) if (!ids.has(id)) problems.push(`partition ${p} names unknown node ${id}`);
  });
  const fromsOf = new Map<number, Set<string>>();
  const tosOf = new Map<number, Set<string>>();
  const draining =
    map.rebalance === undefined
      ? new Set<string>()
      : new Set([...ids].filter((id) => !map.rebalance?.targetNodes.includes(id)));
  for (const { partition: p, from, to } of map.moves) {
    const what = `move of partition ${p} from ${from} to ${to}`;
    const replicas = Number.isInteger(p) ? map.partitions[p] : undefined;
    if (replicas === undefined) {
      problems.push(`${what}: no such partition`);
      continue;
    }
    if (!ids.has(from)) problems.push(`${what}: unknown node ${from}`);
    if (!ids.has(to)) problems.push(`${what}: unknown node ${to}`);
    if (!replicas.includes(from)) problems.push(`${what}: ${from} is not a replica of partition ${p}`);
    if (replicas.includes(to)) problems.push(`${what}: ${to} is already a replica of partition ${p}`);
    if (draining.has(to)) problems.push(`${what}: ${to} is being drained`);
    const froms = fromsOf.get(p) ?? new Set<string>();
    const tos = tosOf.get(p) ?? new Set<string>();
    if (froms.has(from)) problems.push(`partition ${p} has two moves from ${from}`);
    if (tos.has(to)) problems.push(`partition ${p} has two moves to ${to}`);
    froms.add(from);
    tos.add(to);
    fromsOf.set(p, froms);
    tosOf.set(p, tos);
  }
  if (map.rebalance !== undefined) {
    const { targetNodes, movesTotal } = map.rebalance;
    for (const id of targetNodes) if (!ids.has(id)) problems.push(`rebalance target ${id} is not in nodes`);
    if (new Set(targetNodes).size !== targetNodes.length)
      problems.push('rebalance target lists a node twice');
    if (movesTotal < map.moves.length)
      problems.push(`rebalance movesTotal ${movesTotal} is below the ${map.moves.length} moves left`);
  }
  return problems;
}

/** Full replicas per node: every node of the map (0 if it holds none), then any other id named. */
export function replicaLoad(map: PartitionMap): Map<string, number> {
  const load = new Map<string, number>(map.nodes.map((node) => [node.id, 0]));
  for (const replicas of map.partitions) for (const id of replicas) load.set(id, (load.get(id) ?? 0) + 1);
  return load;
}

export interface RebalanceCounts {
  readonly movesTotal: number;
  readonly movesDone: number;
  readonly movesLeft: number;
}

/**
 * Move counts of the rebalance in flight; all 0 when there is none. A map with moves but no
 * record (not one this module writes) counts them all as left, never as done.
 */
export function rebalanceCounts(map: PartitionMap): RebalanceCounts {
  const movesLeft = map.moves.length;
  const movesTotal = Math.max(map.rebalance?.movesTotal ?? 0, movesLeft);
  return { movesTotal, movesDone: movesTotal - movesLeft, movesLeft };
}

// ---------------------------------------------------------------------------

function moveKey(move: PartitionMove): string {
  return `${move.partition}\u0000${move.from}\u0000${move.to}`;
}

/** The next epoch of `map` with these contents; no `rebalance` key at all when there is none. */
function withState(
  map: PartitionMap,
  nodes: readonly NodeInfo[],
  partitions: readonly (readonly string[])[],
  moves: readonly PartitionMove[],
  rebalance?: PartitionMap['rebalance'],
): PartitionMap {
  return {
    cluster: map.cluster,
    epoch: map.epoch + 1,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    nodes,
    partitions,
    moves,
    ...(rebalance === undefined ? {} : { rebalance }),
  };
}

function checkPlannable(map: PartitionMap): void {
  if (map.partitions.length !== map.partitionCount) {
    throw new RebalancePlanError(
      'partition_count_change',
      `the map lists ${map.partitions.length} partitions but partitionCount is ${map.partitionCount}; a rebalance cannot change the partition count`,
      { partitions: map.partitions.length, partitionCount: map.partitionCount },
    );
  }
  const violations = mapViolations(map);
  if (violations.length > 0) {
    throw new RebalancePlanError('invalid_map', `cannot plan from an inconsistent map: ${violations[0]}`, {
      violations,
      epoch: map.epoch,
    });
  }
}

function checkTarget(map: PartitionMap, target: readonly NodeInfo[]): void {
  if (target.length === 0) throw new RebalancePlanError('invalid_target', 'the target has no nodes');
  const ids = new Set<string>();
  const addresses = new Set<string>();
  for (const node of target) {
    if (ids.has(node.id))
      throw new RebalancePlanError('invalid_target', `node id ${node.id} appears twice in the target`, {
        id: node.id,
      });
    if (addresses.has(node.address)) {
      throw new RebalancePlanError('invalid_target', `address ${node.address} appears twice in the target`, {
        address: node.address,
      });
    }
    ids.add(node.id);
    addresses.add(node.address);
  }
  if (target.length < map.replicationFactor) {
    throw new RebalancePlanError(
      'not_enough_nodes',
      `replication factor ${map.replicationFactor} needs at least ${map.replicationFactor} target nodes, got ${target.length}`,
      { nodes: target.length, replicationFactor: map.replicationFactor },
    );
  }
}

/** While a rebalance runs, draining and new nodes coexist in `nodes`: one address must mean one node. */
function checkAddresses(nodes: readonly NodeInfo[]): void {
  const owner = new Map<string, string>();
  for (const node of nodes) {
    const other = owner.get(node.address);
    if (other !== undefined) {
      throw new RebalancePlanError(
        'invalid_target',
        `address ${node.address} would belong to both ${other} and ${node.id}`,
        { address: node.address, nodes: [other, node.id] },
      );
    }
    owner.set(node.address, node.id);
  }
}

/** The current nodes in their order, with the target's address and zone, then the new ones. */
function mergeNodes(current: readonly NodeInfo[], target: readonly NodeInfo[]): NodeInfo[] {
  const byId = new Map(target.map((node) => [node.id, node]));
  const known = new Set(current.map((node) => node.id));
  return [
    ...current.map((node) => copyNode(byId.get(node.id) ?? node)),
    ...target.filter((node) => !known.has(node.id)).map(copyNode),
  ];
}

/** Only the map's own fields, so a caller's extra properties never end up in the map. */
function copyNode(node: NodeInfo): NodeInfo {
  return node.zone === undefined
    ? { id: node.id, address: node.address }
    : { id: node.id, address: node.address, zone: node.zone };
}

function sameNodes(a: readonly NodeInfo[], b: readonly NodeInfo[]): boolean {
  return (
    a.length === b.length &&
    a.every((node, i) => node.id === b[i].id && node.address === b[i].address && node.zone === b[i].zone)
  );
}

function sameIdSet(a: readonly string[], b: readonly string[]): boolean {
  const set = new Set(a);
  return set.size === b.length && b.every((id) => set.has(id));
}

/** A bad id, address or zone in the target would make a map nobody can load: refuse it here. */
function checkWritable(map: PartitionMap, next: PartitionMap): void {
  try {
    validatePartitionMap(next);
  } catch (err) {
    if (!(err instanceof InvalidMapError)) throw err;
    let inputValid = true;
    try {
      validatePartitionMap(map);
    } catch {
      inputValid = false;
    }
    throw new RebalancePlanError(
      inputValid ? 'invalid_target' : 'invalid_map',
      `${inputValid ? 'the target' : 'the map'} cannot be written as a partition map: ${err.message}`,
      { ...err.context, epoch: map.epoch },
    );
  }
}
