import type { NodeInfo, PartitionMap } from '../common/partition-map';
import { initialPartitionMap } from '../common/owner-maps';
import { KvError } from '../common/errors';
import type { KVClusterSpec } from '../crds/kvcluster-spec';
import {
  nodeAddress,
  nodeOrdinal,
  wantedNodeIds,
  withCurrentAddresses,
  type AddressChange,
  type ObservedNode,
} from './node-addresses';

/**
 * What the map owner does next for one KVCluster, decided from the spec, the map and the node
 * pods (docs/design.md, "Rebalancing"; local/map-owner.ts plays the same part on one machine). Pure: the
 * reconciler carries the decision out and comes back when something changed.
 *
 * - No map yet: the StatefulSet runs spec.replicas pods (all at once: Parallel), and the first map
 *   is written once every one of them has an IP (its address). Nodes are ready only once a map
 *   exists, so readiness cannot be waited for here.
 * - A node's pod has a new IP: a new epoch with the new address comes before anything else.
 * - Scale-out: the StatefulSet grows first; once the new pods have IPs and are ready (a node
 *   that is not in the map is ready as soon as it has read the map), the rebalance is planned.
 * - Scale-in: the rebalance to the first spec.replicas ordinals is planned at once, and the
 *   StatefulSet keeps every node of the map until the drained ones have left the map (the
 *   rebalancer removes them when their moves are done); then it shrinks, highest ordinals
 *   first, which is the order a StatefulSet removes pods in.
 * - The target of a rebalance already recorded is left alone: the Rebalancer resumes it.
 */

export type ScalingAction =
  | { readonly kind: 'none' }
  /** nothing can be done until pods change; `reason` says what is awaited */
  | { readonly kind: 'wait'; readonly reason: string; readonly nodes: readonly string[] }
  | { readonly kind: 'create-map'; readonly map: PartitionMap }
  | {
      readonly kind: 'update-addresses';
      readonly map: PartitionMap;
      readonly changed: readonly AddressChange[];
    }
  /** plan a rebalance to exactly these nodes (Rebalancer.scale) */
  | { readonly kind: 'scale'; readonly target: readonly NodeInfo[]; readonly from: number };

export interface ScalingDecision {
  /** the StatefulSet's replicas */
  readonly statefulSetReplicas: number;
  readonly action: ScalingAction;
  /** address changes held back this time (see withCurrentAddresses) */
  readonly heldAddresses: readonly AddressChange[];
}

export interface ScalingInput {
  readonly cluster: string;
  readonly spec: Pick<KVClusterSpec, 'replicas' | 'replicationFactor' | 'partitions'>;
  readonly map: PartitionMap | undefined;
  readonly nodes: ReadonlyMap<string, ObservedNode>;
}

export type ScalingErrorCode = 'foreign_map' | 'partition_count_mismatch' | 'not_enough_nodes';

/** The map cannot be driven towards the spec; a person has to look (the spec or the ConfigMap). */
export class ScalingError extends KvError {
  declare readonly code: ScalingErrorCode;

  constructor(code: ScalingErrorCode, message: string, context: Record<string, unknown> = {}) {
    super(code, message, context);
  }
}

export function decideScaling(input: ScalingInput): ScalingDecision {
  const { cluster, spec, map, nodes } = input;
  const wanted = wantedNodeIds(cluster, spec.replicas);
  if (!map) {
    const missing = wanted.filter((id) => !nodes.get(id)?.ip);
    if (missing.length > 0) {
      return {
        statefulSetReplicas: spec.replicas,
        action: { kind: 'wait', reason: 'waiting for node pods to get an IP', nodes: missing },
        heldAddresses: [],
      };
    }
    return {
      statefulSetReplicas: spec.replicas,
      action: { kind: 'create-map', map: initialMap(cluster, spec, wanted, nodes) },
      heldAddresses: [],
    };
  }

  checkMap(cluster, spec, map);
  const highest = Math.max(...map.nodes.map((n) => nodeOrdinal(cluster, n.id) ?? 0));
  // Never fewer pods than nodes in the map: a drained node keeps running until it has left.
  const statefulSetReplicas = Math.max(spec.replicas, highest + 1);

  const addresses = withCurrentAddresses(map, nodes);
  if (addresses.map) {
    return {
      statefulSetReplicas,
      action: { kind: 'update-addresses', map: addresses.map, changed: addresses.changed },
      heldAddresses: addresses.held,
    };
  }
  const result = (action: ScalingAction): ScalingDecision => ({
    statefulSetReplicas,
    action,
    heldAddresses: addresses.held,
  });

  const heading = map.rebalance?.targetNodes ?? map.nodes.map((n) => n.id);
  if (sameIdSet(heading, wanted)) return result({ kind: 'none' });
  if (spec.replicas < map.replicationFactor) {
    // The API server refuses RF > replicas in the spec, but the map's RF is what counts here.
    throw new ScalingError(
      'not_enough_nodes',
      `cannot scale to ${spec.replicas} nodes: the partition map keeps ${map.replicationFactor} replicas of every partition`,
      { replicas: spec.replicas, replicationFactor: map.replicationFactor },
    );
  }

  const inMap = new Map(map.nodes.map((n) => [n.id, n]));
  const joining = wanted.filter((id) => !inMap.has(id));
  const notUp = joining.filter((id) => {
    const node = nodes.get(id);
    return !node?.ip || !node.ready;
  });
  if (notUp.length > 0) {
    return result({ kind: 'wait', reason: 'waiting for new node pods to be ready', nodes: notUp });
  }
  const target: NodeInfo[] = wanted.map((id) => {
    const known = inMap.get(id);
    // IP and readiness checked just above.
    return known ?? mapNode(id, nodes.get(id));
  });
  return result({ kind: 'scale', target, from: map.nodes.length });
}

/** The first map: every wanted node at its pod's IP, partitions placed from scratch. */
function initialMap(
  cluster: string,
  spec: ScalingInput['spec'],
  wanted: readonly string[],
  nodes: ReadonlyMap<string, ObservedNode>,
): PartitionMap {
  const mapNodes: NodeInfo[] = wanted.map((id) => mapNode(id, nodes.get(id)));
  return initialPartitionMap({
    cluster,
    nodes: mapNodes,
    partitionCount: spec.partitions,
    replicationFactor: spec.replicationFactor,
  });
}

/** A node as a map lists it: at its pod's IP, with the zone when Kubernetes knows it. */
function mapNode(id: string, node: ObservedNode | undefined): NodeInfo {
  const address = nodeAddress(node?.ip ?? '');
  return node?.zone ? { id, address, zone: node.zone } : { id, address };
}

function checkMap(cluster: string, spec: ScalingInput['spec'], map: PartitionMap): void {
  const foreign = map.nodes.filter((n) => nodeOrdinal(cluster, n.id) === undefined).map((n) => n.id);
  if (foreign.length > 0) {
    throw new ScalingError(
      'foreign_map',
      `the partition map lists nodes the operator did not make (${foreign.join(', ')}); node ids must be the pod names ${cluster}-node-<ordinal>`,
      { nodes: foreign, epoch: map.epoch },
    );
  }
  if (map.partitionCount !== spec.partitions) {
    throw new ScalingError(
      'partition_count_mismatch',
      `spec.partitions is ${spec.partitions} but the partition map has ${map.partitionCount} partitions; the partition count cannot change`,
      { partitions: spec.partitions, mapPartitions: map.partitionCount },
    );
  }
}

function sameIdSet(a: readonly string[], b: readonly string[]): boolean {
  const set = new Set(a);
  return set.size === b.length && b.every((id) => set.has(id));
}
