import type { V1PodDisruptionBudget } from '@kubernetes/client-node';
import { objectMetadata, pdbName, selectorLabels, type ClusterRef } from './names';

export function podDisruptionBudget(cluster: ClusterRef): V1PodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: objectMetadata(cluster, pdbName(cluster.name), 'node'),
    spec: {
      // One node down at a time keeps a quorum of every partition at RF 3.
      maxUnavailable: 1,
      selector: { matchLabels: selectorLabels(cluster.name, 'node') },
    },
  };
}
