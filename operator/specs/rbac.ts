import type { V1Role, V1RoleBinding, V1ServiceAccount } from '@kubernetes/client-node';
import { configMapName } from '../../common/configmap-metadata-store';
import { objectMetadata, serviceAccountName, type ClusterRef } from './names';

/** The identity nodes and gateways run as: a service account, its Role and the binding of the two. */

export function serviceAccount(cluster: ClusterRef): V1ServiceAccount {
  return {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: objectMetadata(cluster, serviceAccountName(cluster.name), 'node'),
  };
}

/**
 * Nodes and gateways follow the map's authoritative copy (`--kube-namespace`): read and watch that
 * one ConfigMap, nothing else. A watch with fieldSelector metadata.name is authorised by name.
 */
export function mapReaderRole(cluster: ClusterRef): V1Role {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: objectMetadata(cluster, serviceAccountName(cluster.name), 'node'),
    rules: [
      {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: [configMapName(cluster.name)],
        verbs: ['get', 'list', 'watch'],
      },
    ],
  };
}

export function mapReaderRoleBinding(cluster: ClusterRef): V1RoleBinding {
  const name = serviceAccountName(cluster.name);
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: objectMetadata(cluster, name, 'node'),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
    subjects: [{ kind: 'ServiceAccount', name, namespace: cluster.namespace }],
  };
}
