import type {
  KubernetesObject,
  V1Deployment,
  V1PodDisruptionBudget,
  V1Role,
  V1RoleBinding,
  V1Service,
  V1ServiceAccount,
  V1StatefulSet,
} from '@kubernetes/client-node';
import type { KVClusterSpec } from '../../crds/kvcluster-spec';
import { gatewayDeployment } from './gateway-deployment';
import type { ClusterRef } from './names';
import { podDisruptionBudget } from './pod-disruption-budget';
import { mapReaderRole, mapReaderRoleBinding, serviceAccount } from './rbac';
import { serviceMonitor, type ServiceMonitor } from './service-monitor';
import { gatewayService, headlessService } from './services';
import { nodeStatefulSet } from './stateful-set';

/**
 * What a KVCluster becomes (docs/design.md, "Operator"): pure, from the cluster's identity and parsed
 * spec to the objects the reconciler applies with server-side apply. Nothing here reads the API
 * server or the clock, so the same spec always gives the same objects and a reconcile that changes
 * nothing is a no-op apply. One builder per kind sits beside this file.
 */

export interface DesiredResourcesOptions {
  /** StatefulSet replicas, decided by the scaling logic (not blindly spec.replicas) */
  readonly nodeReplicas: number;
  /** the Redis fast copy the processes read the map from, if any (spec.redis.url, or the managed one) */
  readonly redisUrl?: string;
  /** the monitoring.coreos.com/v1 ServiceMonitor CRD exists on this API server */
  readonly serviceMonitorAvailable: boolean;
}

export interface DesiredResources {
  readonly serviceAccount: V1ServiceAccount;
  readonly role: V1Role;
  readonly roleBinding: V1RoleBinding;
  readonly headlessService: V1Service;
  readonly statefulSet: V1StatefulSet;
  readonly podDisruptionBudget: V1PodDisruptionBudget;
  readonly gatewayDeployment: V1Deployment;
  readonly gatewayService: V1Service;
  /** only when spec.monitoring.serviceMonitor.enabled and the CRD exists */
  readonly serviceMonitor?: ServiceMonitor;
}

/** Every object of a KVCluster, in the order they are applied (identity first, then what uses it). */
export function desiredResources(
  cluster: ClusterRef,
  spec: KVClusterSpec,
  opts: DesiredResourcesOptions,
): DesiredResources {
  if (!Number.isSafeInteger(opts.nodeReplicas) || opts.nodeReplicas < 0) {
    throw new RangeError(`nodeReplicas must be a non-negative integer, got ${opts.nodeReplicas}`);
  }
  const wantMonitor = spec.monitoring.serviceMonitor.enabled && opts.serviceMonitorAvailable;
  return {
    serviceAccount: serviceAccount(cluster),
    role: mapReaderRole(cluster),
    roleBinding: mapReaderRoleBinding(cluster),
    headlessService: headlessService(cluster),
    statefulSet: nodeStatefulSet(cluster, spec, opts.nodeReplicas, opts.redisUrl),
    podDisruptionBudget: podDisruptionBudget(cluster),
    gatewayDeployment: gatewayDeployment(cluster, spec, opts.redisUrl),
    gatewayService: gatewayService(cluster, spec),
    ...(wantMonitor ? { serviceMonitor: serviceMonitor(cluster, spec) } : {}),
  };
}

/** The objects of desiredResources as a list, in apply order. */
export function resourceList(resources: DesiredResources): KubernetesObject[] {
  return [
    resources.serviceAccount,
    resources.role,
    resources.roleBinding,
    resources.headlessService,
    resources.statefulSet,
    resources.podDisruptionBudget,
    resources.gatewayDeployment,
    resources.gatewayService,
    ...(resources.serviceMonitor ? [resources.serviceMonitor] : []),
  ];
}
