import type { V1OwnerReference } from '@kubernetes/client-node';
import { API_VERSION, KIND, type KVClusterSpec } from '../../crds/kvcluster-spec';

/**
 * The names, labels, ports and paths every object of a KVCluster is built from, and the owner
 * reference that ties each object to it (docs/design.md, "Operator"). Pure.
 */

/** The KVCluster an object belongs to. */
export interface ClusterRef {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
}

export const FIELD_MANAGER = 'kvstore-operator';
export const FINALIZER = 'kvstore.io/finalizer';

export const RPC_PORT = 7001;
export const ADMIN_PORT = 7101;
export const GATEWAY_PORT = 8080;
/**
 * How long a terminating gateway keeps serving (gateway --shutdown-delay-ms): the endpoint
 * controller and every node's kube-proxy must first drop it from the Service, which takes a
 * moment after SIGTERM; requests routed to it meanwhile are answered, not refused. Well inside
 * the pod's 30 s grace period.
 */
export const GATEWAY_SHUTDOWN_DELAY_MS = 5000;
/** The node's data directory: the PersistentVolume of volumeClaimTemplates `data`. */
export const DATA_DIR = '/data';
/**
 * Secrets are mounted as folders (the kubelet swaps their files in place when the Secret changes,
 * which is how the gateway sees new API keys and renewed certificates without a restart).
 */
export const INTERNAL_TOKEN_DIR = '/etc/kvstore/internal';
export const API_KEYS_DIR = '/etc/kvstore/api-keys';
export const TLS_DIR = '/etc/kvstore/tls';
/** The file of the API-key Secret the gateway reads (`kvctl auth create-key` prints its entries). */
export const API_KEYS_FILE = 'keys.json';
export const INTERNAL_TOKEN_KEY = 'token';

export type Component = 'node' | 'gateway';

export const LABEL_NAME = 'app.kubernetes.io/name';
export const LABEL_INSTANCE = 'app.kubernetes.io/instance';
export const LABEL_COMPONENT = 'app.kubernetes.io/component';
export const LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const APP_NAME = 'kvstore';
export const MANAGED_BY = 'kvstore-operator';

export const statefulSetName = (cluster: string): string => `${cluster}-node`;
export const headlessServiceName = (cluster: string): string => `${cluster}-nodes`;
export const gatewayDeploymentName = (cluster: string): string => `${cluster}-gateway`;
export const gatewayServiceName = (cluster: string): string => cluster;
export const pdbName = (cluster: string): string => `${cluster}-node`;
export const serviceMonitorName = (cluster: string): string => cluster;
/** Nodes and gateways read the partition map ConfigMap with this identity (`--kube-namespace`). */
export const serviceAccountName = (cluster: string): string => `${cluster}-kvstore`;
/** The token every node, gateway and the operator present on the nodes' internal API. */
export const internalTokenSecretName = (cluster: string): string => `${cluster}-internal-token`;
/** Without spec.auth.secretRef: the API keys the gateway reads (the hash of the admin key)... */
export const generatedApiKeysSecretName = (cluster: string): string => `${cluster}-api-keys`;
/** ...and the admin key itself, for the user to read once (`kubectl get secret`). */
export const adminTokenSecretName = (cluster: string): string => `${cluster}-admin-token`;

/** The Secret of API keys the gateways read, or undefined when auth is disabled. */
export function apiKeysSecretName(cluster: string, spec: KVClusterSpec): string | undefined {
  if (spec.auth.disabled) return undefined;
  return spec.auth.secretRef?.name ?? generatedApiKeysSecretName(cluster);
}

/**
 * Labels that select a component's pods. Never changes for a given cluster: a StatefulSet's and a
 * Deployment's selector are immutable.
 */
export function selectorLabels(cluster: string, component: Component): Record<string, string> {
  return { [LABEL_NAME]: APP_NAME, [LABEL_INSTANCE]: cluster, [LABEL_COMPONENT]: component };
}

/** Every object (and pod) the operator makes carries these. */
export function objectLabels(cluster: string, component: string): Record<string, string> {
  return {
    [LABEL_NAME]: APP_NAME,
    [LABEL_INSTANCE]: cluster,
    [LABEL_COMPONENT]: component,
    [LABEL_MANAGED_BY]: MANAGED_BY,
  };
}

/** The label selector of the storage node pods as a string: status.selector (the scale subresource). */
export function nodeSelectorString(cluster: string): string {
  return Object.entries(selectorLabels(cluster, 'node'))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

/** Makes the KVCluster the controller of an object: deleting it garbage-collects the object. */
export function ownerReference(cluster: ClusterRef): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: cluster.name,
    uid: cluster.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The metadata of every object of a cluster: its namespace, labels and owner reference. */
export function objectMetadata(
  cluster: ClusterRef,
  name: string,
  component: string,
): {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  ownerReferences: V1OwnerReference[];
} {
  return {
    name,
    namespace: cluster.namespace,
    labels: objectLabels(cluster.name, component),
    ownerReferences: [ownerReference(cluster)],
  };
}
