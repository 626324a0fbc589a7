import { KvError } from './errors';

export interface NodeInfo {
  readonly id: string;
  /** host:port of the node's internal RPC listener. */
  readonly address: string;
  readonly zone?: string;
}

/** A partition being copied to a new replica (docs/design.md, "Rebalancing"). */
export interface PartitionMove {
  readonly partition: number;
  readonly from: string;
  readonly to: string;
}

/**
 * Who holds what. Written only by the map's owner (the operator, or the local
 * launcher), read by everyone; nobody acts on an epoch older than one it has seen.
 */
export interface PartitionMap {
  readonly cluster: string;
  readonly epoch: number;
  readonly partitionCount: number;
  readonly replicationFactor: number;
  readonly nodes: readonly NodeInfo[];
  /** partitions[p] lists the node ids holding partition p, in placement order. */
  readonly partitions: readonly (readonly string[])[];
  readonly moves: readonly PartitionMove[];
  /** Present while a rebalance is under way: the recorded plan a restarted map owner resumes. */
  readonly rebalance?: RebalanceRecord;
}

/**
 * The plan of a rebalance, kept in the map itself so whoever owns the map (the
 * operator, or the local launcher) can die mid-move and resume from it.
 */
export interface RebalanceRecord {
  /** node ids the cluster is moving to; nodes in `nodes` but not here are being drained */
  readonly targetNodes: readonly string[];
  /** moves in the plan when it was made: progress is (movesTotal - moves.length) / movesTotal */
  readonly movesTotal: number;
  /** ms since the Unix epoch */
  readonly startedAt: number;
}

export class InvalidMapError extends KvError {
  constructor(message: string, context: Record<string, unknown> = {}) {
    super('invalid_partition_map', message, context);
  }
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const ADDRESS_RE = /^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks a map read from outside (file, Redis, ConfigMap) before anyone acts on it. */
export function validatePartitionMap(input: unknown): PartitionMap {
  if (!isObject(input)) throw new InvalidMapError('partition map must be an object');
  const { cluster, epoch, partitionCount, replicationFactor, nodes, partitions, moves, rebalance } = input;
  if (typeof cluster !== 'string' || !ID_RE.test(cluster))
    throw new InvalidMapError('bad cluster name', { cluster });
  if (!Number.isSafeInteger(epoch) || (epoch as number) < 1)
    throw new InvalidMapError('epoch must be >= 1', { epoch });
  if (
    !Number.isInteger(partitionCount) ||
    (partitionCount as number) < 1 ||
    (partitionCount as number) > 65535
  ) {
    throw new InvalidMapError('partitionCount must be in [1, 65535]', { partitionCount });
  }
  if (!Number.isInteger(replicationFactor) || (replicationFactor as number) < 1) {
    throw new InvalidMapError('replicationFactor must be >= 1', { replicationFactor });
  }
  if (!Array.isArray(nodes) || nodes.length === 0)
    throw new InvalidMapError('nodes must be a non-empty array');
  const ids = new Set<string>();
  const cleanNodes: NodeInfo[] = nodes.map((n: unknown, i) => {
    if (!isObject(n)) throw new InvalidMapError(`nodes[${i}] must be an object`);
    if (typeof n.id !== 'string' || !ID_RE.test(n.id))
      throw new InvalidMapError(`nodes[${i}].id is invalid`, { id: n.id });
    if (ids.has(n.id)) throw new InvalidMapError(`duplicate node id ${n.id}`);
    ids.add(n.id);
    if (typeof n.address !== 'string' || !ADDRESS_RE.test(n.address)) {
      throw new InvalidMapError(`nodes[${i}].address must be host:port`, { address: n.address });
    }
    if (n.zone !== undefined && typeof n.zone !== 'string')
      throw new InvalidMapError(`nodes[${i}].zone must be a string`);
    return n.zone === undefined
      ? { id: n.id, address: n.address }
      : { id: n.id, address: n.address, zone: n.zone };
  });
  if (!Array.isArray(partitions) || partitions.length !== partitionCount) {
    throw new InvalidMapError(`partitions must have exactly ${partitionCount} entries`);
  }
  const cleanPartitions = partitions.map((owners: unknown, p) => {
    if (!Array.isArray(owners) || owners.length === 0)
      throw new InvalidMapError(`partition ${p} has no replicas`);
    const seen = new Set<string>();
    for (const o of owners) {
      if (typeof o !== 'string' || !ids.has(o))
        throw new InvalidMapError(`partition ${p} names unknown node`, { node: o });
      if (seen.has(o)) throw new InvalidMapError(`partition ${p} lists node ${o} twice`);
      seen.add(o);
    }
    return [...(owners as string[])];
  });
  const cleanMoves: PartitionMove[] = [];
  if (moves !== undefined) {
    if (!Array.isArray(moves)) throw new InvalidMapError('moves must be an array');
    for (const m of moves) {
      if (
        !isObject(m) ||
        !Number.isInteger(m.partition) ||
        (m.partition as number) < 0 ||
        (m.partition as number) >= (partitionCount as number) ||
        typeof m.from !== 'string' ||
        typeof m.to !== 'string' ||
        !ids.has(m.from) ||
        !ids.has(m.to)
      ) {
        throw new InvalidMapError('malformed move', { move: m });
      }
      cleanMoves.push({ partition: m.partition as number, from: m.from, to: m.to });
    }
  }
  let cleanRebalance: RebalanceRecord | undefined;
  if (rebalance !== undefined) {
    if (
      !isObject(rebalance) ||
      !Array.isArray(rebalance.targetNodes) ||
      rebalance.targetNodes.length === 0 ||
      !rebalance.targetNodes.every((id) => typeof id === 'string' && ids.has(id)) ||
      new Set(rebalance.targetNodes).size !== rebalance.targetNodes.length ||
      !Number.isSafeInteger(rebalance.movesTotal) ||
      (rebalance.movesTotal as number) < 0 ||
      !Number.isSafeInteger(rebalance.startedAt) ||
      (rebalance.startedAt as number) < 0
    ) {
      throw new InvalidMapError('malformed rebalance record', { rebalance });
    }
    cleanRebalance = {
      targetNodes: [...(rebalance.targetNodes as string[])],
      movesTotal: rebalance.movesTotal as number,
      startedAt: rebalance.startedAt as number,
    };
  }
  return {
    ...(cleanRebalance ? { rebalance: cleanRebalance } : {}),
    cluster,
    epoch: epoch as number,
    partitionCount: partitionCount as number,
    replicationFactor: replicationFactor as number,
    nodes: cleanNodes,
    partitions: cleanPartitions,
    moves: cleanMoves,
  };
}

export function parsePartitionMap(json: string): PartitionMap {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    throw new InvalidMapError('partition map is not valid JSON', { cause: String(err) });
  }
  return validatePartitionMap(parsed);
}

export function serializePartitionMap(map: PartitionMap): string {
  return JSON.stringify(map);
}

export function nodeById(map: PartitionMap, id: string): NodeInfo | undefined {
  return map.nodes.find((n) => n.id === id);
}

/** Replicas that count toward W and R for partition p. */
export function replicasOf(map: PartitionMap, partition: number): readonly string[] {
  const owners = map.partitions[partition];
  if (!owners) throw new RangeError(`partition ${partition} out of range 0..${map.partitionCount - 1}`);
  return owners;
}

/** Nodes receiving p by a move in progress: written to, never counted toward W (docs/design.md, "Rebalancing"). */
export function pendingReplicasOf(map: PartitionMap, partition: number): string[] {
  return map.moves.filter((m) => m.partition === partition).map((m) => m.to);
}
