import type { V1Pod } from '@kubernetes/client-node';
import { withNodeAddresses } from '../common/owner-maps';
import type { PartitionMap } from '../common/partition-map';
import { RPC_PORT, statefulSetName } from './specs/names';

/**
 * Storage node identity and addresses on Kubernetes. Pure.
 *
 * A node's id is its pod name, `<cluster>-node-<ordinal>`: stable across restarts and
 * rescheduling, as the StatefulSet keeps the name and the volume. Its address in the map is
 * `<podIP>:7001`: pod IPs are what every process can reach without cluster DNS (which the test
 * control plane lacks, and which lags behind a restarted pod anyway). A pod's IP changes when
 * the pod is recreated; the map then gets a new epoch with the new address, as the local launcher
 * does when ports change.
 */

/** What the operator needs to know of one node pod. */
export interface ObservedNode {
  readonly id: string;
  readonly ordinal: number;
  /** set while the pod has an IP that still belongs to it */
  readonly ip?: string;
  /** Running, Ready condition True, not being deleted */
  readonly ready: boolean;
  /** topology.kubernetes.io/zone of the Kubernetes node it runs on, when known */
  readonly zone?: string;
}

export function nodeId(cluster: string, ordinal: number): string {
  return `${statefulSetName(cluster)}-${ordinal}`;
}

/** The ordinal of a node id of this cluster, or undefined for an id the operator did not make. */
export function nodeOrdinal(cluster: string, id: string): number | undefined {
  const prefix = `${statefulSetName(cluster)}-`;
  if (!id.startsWith(prefix)) return undefined;
  const rest = id.slice(prefix.length);
  if (!/^(0|[1-9]\d{0,4})$/.test(rest)) return undefined;
  return Number(rest);
}

/** `ip:7001`, with IPv6 addresses in brackets (what the map's address grammar expects). */
export function nodeAddress(ip: string): string {
  return ip.includes(':') ? `[${ip}]:${RPC_PORT}` : `${ip}:${RPC_PORT}`;
}

/** The ids of the first `count` ordinals: the node set a cluster of `count` replicas converges to. */
export function wantedNodeIds(cluster: string, count: number): string[] {
  return Array.from({ length: count }, (_, k) => nodeId(cluster, k));
}

/**
 * The cluster's node pods by node id. Pods whose name is not a node id of this cluster are
 * ignored (a label selector can match more than the StatefulSet's own pods).
 */
export function observeNodes(
  cluster: string,
  pods: readonly V1Pod[],
  zoneOf: (pod: V1Pod) => string | undefined = () => undefined,
): Map<string, ObservedNode> {
  const out = new Map<string, ObservedNode>();
  for (const pod of pods) {
    const name = pod.metadata?.name;
    if (!name) continue;
    const ordinal = nodeOrdinal(cluster, name);
    if (ordinal === undefined) continue;
    const phase = pod.status?.phase;
    // A pod that ended (Failed, Succeeded: e.g. evicted) no longer owns the IP it reports.
    const ended = phase === 'Failed' || phase === 'Succeeded';
    const ip = ended ? undefined : pod.status?.podIP || undefined;
    const deleting = pod.metadata?.deletionTimestamp !== undefined;
    const readyCondition = pod.status?.conditions?.find((c) => c.type === 'Ready');
    const ready = !deleting && phase === 'Running' && readyCondition?.status === 'True';
    const zone = zoneOf(pod);
    out.set(name, {
      id: name,
      ordinal,
      ...(ip ? { ip } : {}),
      ready,
      ...(zone ? { zone } : {}),
    });
  }
  return out;
}

export interface AddressChange {
  readonly id: string;
  readonly from: string;
  readonly to: string;
}

export interface AddressUpdate {
  /** the next epoch with the new addresses; undefined when nothing changes */
  readonly map: PartitionMap | undefined;
  readonly changed: readonly AddressChange[];
  /**
   * Changes not made this time: the new address is still the map's address of another node
   * (whose pod has not got its new IP yet). One address must mean one node, or requests for
   * one would reach the other; the change is made once the other node moves on.
   */
  readonly held: readonly AddressChange[];
}

/**
 * The map with every node's address set to its pod's current IP: one new epoch for all the
 * changes, the partitions, moves and rebalance record unchanged (a node that got a new IP holds
 * the same volume, so the same data). Nodes whose pod has no IP now keep their address.
 */
export function withCurrentAddresses(
  map: PartitionMap,
  observed: ReadonlyMap<string, ObservedNode>,
): AddressUpdate {
  const wanted = new Map<string, string>();
  for (const node of map.nodes) {
    const ip = observed.get(node.id)?.ip;
    wanted.set(node.id, ip ? nodeAddress(ip) : node.address);
  }
  const proposed: AddressChange[] = map.nodes
    .filter((n) => wanted.get(n.id) !== n.address)
    .map((n) => ({ id: n.id, from: n.address, to: wanted.get(n.id) ?? n.address }));
  if (proposed.length === 0) return { map: undefined, changed: [], held: [] };

  // Hold back changes to an address another node would still have; holding one back keeps its
  // old address in use, which may hold back others: repeat until nothing more is held.
  const held = new Set<string>();
  for (;;) {
    const final = new Map<string, string>();
    for (const n of map.nodes) final.set(n.id, held.has(n.id) ? n.address : (wanted.get(n.id) ?? n.address));
    const users = new Map<string, number>();
    for (const address of final.values()) users.set(address, (users.get(address) ?? 0) + 1);
    const clash = proposed.find((c) => !held.has(c.id) && (users.get(c.to) ?? 0) > 1);
    if (!clash) break;
    held.add(clash.id);
  }
  const changed = proposed.filter((c) => !held.has(c.id));
  const heldChanges = proposed.filter((c) => held.has(c.id));
  if (changed.length === 0) return { map: undefined, changed: [], held: heldChanges };
  const moved = new Map(changed.map((c) => [c.id, c.to]));
  return { map: withNodeAddresses(map, moved), changed, held: heldChanges };
}
