import type { V1StatefulSet } from '@kubernetes/client-node';
import { KvError } from '../common/errors';
import type { PartitionMap } from '../common/partition-map';
import type { KVClusterSpec } from '../crds/kvcluster-spec';
import type { KVClusterObject } from './kube-api';
import { clusterKey, type MapOwner } from './map-owners';
import type { ObservedNode } from './node-addresses';
import type { ScalingDecision } from './scaling';
import type { ClusterRef } from './specs/names';

/**
 * What one converge pass over a KVCluster learns, step by step (operator/reconciler.ts): each
 * step sets what it found or decided, and the steps after it read it.
 */
export interface ConvergeFacts {
  readonly spec: KVClusterSpec;
  /** the Redis the cluster's map is mirrored to, if any */
  readonly redisUrl: string | undefined;
  readonly owner: MapOwner;
  readonly nodes: Map<string, ObservedNode>;
  /** the map as the pass last saw it (the map steps update it) */
  readonly map: PartitionMap | undefined;
  readonly statefulSet: V1StatefulSet | undefined;
  readonly decision: ScalingDecision;
  /** why scaling cannot go on, for status */
  readonly blocked: string | undefined;
}

/** A step read a fact no step before it had set: the steps are out of order (a bug, not the cluster's fault). */
export class ConvergeOrderError extends KvError {
  constructor(fact: string, step: string) {
    super('converge_step_order', `converge step ${step} reads ${fact} before any step has set it`, {
      fact,
      step,
    });
  }
}

export class ConvergeContext {
  private readonly facts: Partial<Record<keyof ConvergeFacts, unknown>> = {};
  /** the step now running, for errors */
  step = '(none)';

  constructor(
    readonly kv: KVClusterObject,
    readonly ref: ClusterRef,
  ) {}

  /** `namespace/name`, the cluster's key in logs and among the map owners. */
  get key(): string {
    return clusterKey(this.ref);
  }

  set<K extends keyof ConvergeFacts>(fact: K, value: ConvergeFacts[K]): void {
    this.facts[fact] = value;
  }

  get<K extends keyof ConvergeFacts>(fact: K): ConvergeFacts[K] {
    if (!(fact in this.facts)) throw new ConvergeOrderError(fact, this.step);
    return this.facts[fact] as ConvergeFacts[K];
  }
}
