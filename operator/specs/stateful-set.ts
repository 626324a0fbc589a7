import type { V1Container, V1PodSpec, V1StatefulSet } from '@kubernetes/client-node';
import type { KVClusterSpec } from '../../crds/kvcluster-spec';
import { nodeCommand, processEnv } from './commands';
import {
  ADMIN_PORT,
  DATA_DIR,
  headlessServiceName,
  INTERNAL_TOKEN_DIR,
  objectLabels,
  objectMetadata,
  RPC_PORT,
  selectorLabels,
  serviceAccountName,
  statefulSetName,
  type ClusterRef,
} from './names';
import {
  containerSecurityContext,
  internalTokenVolume,
  podSecurityContext,
  TMP_VOLUME,
} from './pod-security';

/**
 * The storage nodes' StatefulSet. `nodeReplicas` is what the scaling logic decided, not blindly
 * spec.replicas; `redisUrl` the Redis fast copy the nodes read the map from, if any.
 */
export function nodeStatefulSet(
  cluster: ClusterRef,
  spec: KVClusterSpec,
  nodeReplicas: number,
  redisUrl: string | undefined,
): V1StatefulSet {
  const selector = selectorLabels(cluster.name, 'node');
  const container: V1Container = {
    name: 'node',
    image: spec.image,
    imagePullPolicy: spec.imagePullPolicy,
    command: nodeCommand(cluster, redisUrl),
    env: processEnv(spec),
    ports: [
      { name: 'rpc', containerPort: RPC_PORT, protocol: 'TCP' },
      { name: 'admin', containerPort: ADMIN_PORT, protocol: 'TCP' },
    ],
    // Ready = has a partition map and is not refilling an empty disk (node/main.ts).
    readinessProbe: {
      httpGet: { path: '/readyz', port: 'admin' },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 2,
    },
    livenessProbe: {
      httpGet: { path: '/healthz', port: 'admin' },
      periodSeconds: 10,
      timeoutSeconds: 3,
      failureThreshold: 6,
    },
    // A node builds its hash trees from disk before it listens: a large volume takes a while,
    // and the liveness probe must not kill it meanwhile (up to 10 minutes here).
    startupProbe: {
      httpGet: { path: '/healthz', port: 'admin' },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 120,
    },
    ...(spec.resources.node ? { resources: spec.resources.node } : {}),
    securityContext: containerSecurityContext(),
    volumeMounts: [
      { name: 'data', mountPath: DATA_DIR },
      { name: 'tmp', mountPath: '/tmp' },
      { name: 'internal-token', mountPath: INTERNAL_TOKEN_DIR, readOnly: true },
    ],
  };
  const podSpec: V1PodSpec = {
    serviceAccountName: serviceAccountName(cluster.name),
    securityContext: podSecurityContext(),
    // Service links would put every Service of the namespace into the environment.
    enableServiceLinks: false,
    // A node flushes and closes LMDB on SIGTERM; give it time.
    terminationGracePeriodSeconds: 30,
    containers: [container],
    volumes: [TMP_VOLUME, internalTokenVolume(cluster)],
    // Passed through unchanged (the API server validates them when the pods are created).
    ...(spec.affinity ? { affinity: spec.affinity as V1PodSpec['affinity'] } : {}),
    ...(spec.topologySpreadConstraints
      ? {
          topologySpreadConstraints:
            spec.topologySpreadConstraints as unknown as V1PodSpec['topologySpreadConstraints'],
        }
      : {}),
  };
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: objectMetadata(cluster, statefulSetName(cluster.name), 'node'),
    spec: {
      replicas: nodeReplicas,
      serviceName: headlessServiceName(cluster.name),
      // A fresh cluster's nodes must all run before the operator writes the first map (it needs
      // every address), and none is ready before that map: OrderedReady would wait forever.
      podManagementPolicy: 'Parallel',
      selector: { matchLabels: selector },
      updateStrategy: { type: 'RollingUpdate' },
      // A node that left the map was drained; if it is added again it must start empty (old keys
      // could bring back deleted ones), as the local launcher does. Deletion of the KVCluster is
      // handled by spec.deletionPolicy, in the operator's finalizer.
      persistentVolumeClaimRetentionPolicy: { whenScaled: 'Delete', whenDeleted: 'Retain' },
      template: {
        metadata: { labels: objectLabels(cluster.name, 'node') },
        spec: podSpec,
      },
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: 'data', labels: selector },
          spec: {
            accessModes: ['ReadWriteOnce'],
            resources: { requests: { storage: spec.storage.size } },
            ...(spec.storage.storageClassName ? { storageClassName: spec.storage.storageClassName } : {}),
          },
        },
      ],
    },
  };
}
