import type { PartitionMap } from '../common/partition-map';
import { rebalanceCounts } from '../common/rebalance-plan';
import type {
  KVClusterCondition,
  KVClusterConditionType,
  KVClusterPhase,
  KVClusterStatus,
} from '../crds/kvcluster-spec';
import type { ObservedNode } from './node-addresses';
import { nodeSelectorString } from './specs/names';

/**
 * The KVCluster's status, computed from what the operator observed. Pure: the reconciler writes
 * the result through the status subresource when it differs from what is stored.
 */

export interface StatusInput {
  readonly cluster: string;
  readonly generation: number;
  /** the stored status, for lastTransitionTime and the phase history */
  readonly previous: KVClusterStatus | undefined;
  readonly now: Date;
  /** the spec was refused (InvalidKVClusterSpecError's message): nothing was changed */
  readonly invalidSpec?: string;
  /** deletionTimestamp is set */
  readonly deleting?: boolean;
  readonly map: PartitionMap | undefined;
  /** the node pods, by node id */
  readonly nodes: ReadonlyMap<string, ObservedNode>;
  /** a scale-out waits for new pods (the plan is not in the map yet) */
  readonly waitingForNodes?: readonly string[];
  /** the map cannot be driven to the spec (ScalingError's message) */
  readonly scalingBlocked?: string;
}

const CONDITION_ORDER: readonly KVClusterConditionType[] = ['Ready', 'Rebalancing', 'Degraded'];

interface ConditionValue {
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
}

export function computeStatus(input: StatusInput): KVClusterStatus {
  const { map, nodes, previous } = input;
  const mapIds = map?.nodes.map((n) => n.id) ?? [];
  const notReady = mapIds.filter((id) => !nodes.get(id)?.ready);
  const readyReplicas = [...nodes.values()].filter((n) => n.ready).length;
  const moving = map !== undefined && (map.moves.length > 0 || map.rebalance !== undefined);
  const waiting = input.waitingForNodes ?? [];
  const rebalancing = moving || (map !== undefined && waiting.length > 0);

  const phase = computePhase(input, notReady.length, rebalancing);
  const creating = phase === 'Creating' || (phase === 'Pending' && !map);

  const ready: ConditionValue = input.invalidSpec
    ? { status: 'False', reason: 'InvalidSpec', message: input.invalidSpec }
    : input.deleting
      ? { status: 'False', reason: 'Deleting', message: 'the KVCluster is being deleted' }
      : !map
        ? {
            status: 'False',
            reason: 'NoPartitionMap',
            message:
              waiting.length > 0
                ? `waiting for node pods to get an IP: ${waiting.join(', ')}`
                : 'the partition map is not written yet',
          }
        : notReady.length > 0
          ? {
              status: 'False',
              reason: 'NodesNotReady',
              message: `${mapIds.length - notReady.length} of ${mapIds.length} nodes ready; not ready: ${notReady.join(', ')}`,
            }
          : {
              status: 'True',
              reason: 'AllNodesReady',
              message: `${mapIds.length} of ${mapIds.length} nodes ready at map epoch ${map.epoch}`,
            };

  let rebalancingCondition: ConditionValue;
  if (moving && map) {
    const counts = rebalanceCounts(map);
    const target = map.rebalance?.targetNodes ?? mapIds;
    const draining = mapIds.filter((id) => !target.includes(id));
    rebalancingCondition = {
      status: 'True',
      reason: 'PartitionsMoving',
      message: `${counts.movesDone} of ${counts.movesTotal} partition moves done, towards ${target.length} nodes${
        draining.length > 0 ? `; draining ${draining.join(', ')}` : ''
      }`,
    };
  } else if (map && waiting.length > 0) {
    rebalancingCondition = {
      status: 'True',
      reason: 'WaitingForNodes',
      message: `waiting for new node pods to be ready before planning: ${waiting.join(', ')}`,
    };
  } else if (input.scalingBlocked) {
    rebalancingCondition = { status: 'False', reason: 'ScalingBlocked', message: input.scalingBlocked };
  } else if (map) {
    rebalancingCondition = {
      status: 'False',
      reason: 'Balanced',
      message: `${mapIds.length} nodes, no partition moving`,
    };
  } else {
    rebalancingCondition = { status: 'False', reason: 'NoPartitionMap', message: 'no partition map yet' };
  }

  const degraded: ConditionValue =
    !creating && !input.deleting && map && notReady.length > 0
      ? {
          status: 'True',
          reason: 'NodesNotReady',
          message: `not ready: ${notReady.join(', ')}`,
        }
      : creating
        ? { status: 'False', reason: 'Creating', message: 'the cluster is being created' }
        : { status: 'False', reason: 'AllNodesReady', message: 'every node of the map is ready' };

  const values: Record<KVClusterConditionType, ConditionValue> = {
    Ready: ready,
    Rebalancing: rebalancingCondition,
    Degraded: degraded,
  };
  const conditions = CONDITION_ORDER.map((type) =>
    condition(type, values[type], previous?.conditions, input.generation, input.now),
  );

  const status: KVClusterStatus = {
    observedGeneration: input.generation,
    phase,
    replicas: mapIds.length,
    readyReplicas,
    selector: nodeSelectorString(input.cluster),
    ...(map ? { mapEpoch: map.epoch } : {}),
    partitionsMoving: map ? new Set(map.moves.map((m) => m.partition)).size : 0,
    ...(moving && map
      ? {
          rebalance: {
            movesTotal: rebalanceCounts(map).movesTotal,
            movesDone: rebalanceCounts(map).movesDone,
            targetReplicas: map.rebalance?.targetNodes.length ?? mapIds.length,
          },
        }
      : {}),
    conditions,
  };
  return status;
}

function computePhase(input: StatusInput, notReady: number, rebalancing: boolean): KVClusterPhase {
  const before = input.previous?.phase;
  if (input.deleting) return 'Deleting';
  // A refused spec changes nothing, so the cluster is where it was.
  if (input.invalidSpec) return before ?? 'Pending';
  if (!input.map) return 'Creating';
  // Until every node has been ready once, nodes that are not are still starting.
  const everRunning = before !== undefined && before !== 'Pending' && before !== 'Creating';
  if (notReady > 0) return everRunning ? 'Degraded' : 'Creating';
  if (rebalancing) return 'Rebalancing';
  return 'Running';
}

/** A metav1.Condition whose lastTransitionTime moves only when its status does. */
function condition(
  type: KVClusterConditionType,
  value: ConditionValue,
  previous: readonly KVClusterCondition[] | undefined,
  generation: number,
  now: Date,
): KVClusterCondition {
  const before = previous?.find((c) => c.type === type);
  const lastTransitionTime =
    before && before.status === value.status ? before.lastTransitionTime : rfc3339(now);
  return {
    type,
    status: value.status,
    reason: value.reason,
    // The CRD caps messages at 32 KiB; a list of hundreds of nodes must not make the write fail.
    message: value.message.length > 4096 ? `${value.message.slice(0, 4093)}...` : value.message,
    lastTransitionTime,
    observedGeneration: generation,
  };
}

/** metav1.Time: RFC 3339 with second precision, as the API server writes it. */
export function rfc3339(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

/**
 * Whether two statuses say the same thing. Key order and absent-versus-undefined fields do not
 * count, so a reconcile that observes nothing new writes nothing.
 */
export function sameStatus(a: KVClusterStatus | undefined, b: KVClusterStatus | undefined): boolean {
  return canonical(a ?? {}) === canonical(b ?? {});
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y)),
        )
      : v,
  );
}
