import { InvalidMapError, type NodeInfo, type PartitionMap } from './partition-map';
import { placePartitions } from './placement';

/**
 * The maps a map owner (the operator, or the local launcher) writes outside a rebalance
 * (docs/design.md, "Metadata: ConfigMap and Redis"): the first one, and the same one with new node
 * addresses. Pure: the owner decides the nodes and their addresses and compare-and-sets the result.
 */

export interface InitialPartitionMapInput {
  readonly cluster: string;
  /** every node of the new cluster, in map order */
  readonly nodes: readonly NodeInfo[];
  readonly partitionCount: number;
  readonly replicationFactor: number;
}

/**
 * The first partition map: every node, partitions placed from scratch, epoch 1, nothing moving.
 * Throws PlacementError when the nodes cannot hold the replication factor.
 */
export function initialPartitionMap(input: InitialPartitionMapInput): PartitionMap {
  const { cluster, nodes, partitionCount, replicationFactor } = input;
  return {
    cluster,
    epoch: 1,
    partitionCount,
    replicationFactor,
    nodes,
    partitions: placePartitions({ nodes, partitionCount, replicationFactor }),
    moves: [],
  };
}

/**
 * The map with these node addresses (node id → address; nodes not named keep theirs): `map`
 * itself when no address differs, else the next epoch with the new addresses and everything else
 * (partitions, moves, the rebalance record, zones) unchanged. A node that got a new address holds
 * the same data, so nothing moves; the new epoch is what tells every process. Throws
 * InvalidMapError for an address of a node the map does not list.
 */
export function withNodeAddresses(map: PartitionMap, addresses: ReadonlyMap<string, string>): PartitionMap {
  for (const id of addresses.keys()) {
    if (!map.nodes.some((n) => n.id === id)) {
      throw new InvalidMapError(`cannot set the address of ${id}: the map does not list it`, {
        node: id,
        epoch: map.epoch,
      });
    }
  }
  if (map.nodes.every((n) => (addresses.get(n.id) ?? n.address) === n.address)) return map;
  const nodes: NodeInfo[] = map.nodes.map((n) => ({ ...n, address: addresses.get(n.id) ?? n.address }));
  return { ...map, epoch: map.epoch + 1, nodes };
}
