import type {
  KubernetesObject,
  V1Container,
  V1Deployment,
  V1OwnerReference,
  V1PodDisruptionBudget,
  V1PodSecurityContext,
  V1PodSpec,
  V1Role,
  V1RoleBinding,
  V1SecurityContext,
  V1Service,
  V1ServiceAccount,
  V1StatefulSet,
  V1Volume,
} from '@kubernetes/client-node';
import { configMapName } from '../common/configmap-metadata-store';
import { API_VERSION, KIND, type KVClusterSpec } from '../crds/kvcluster-spec';

/**
 * What a KVCluster becomes (docs/design.md, "Operator"): pure, from the cluster's identity and parsed
 * spec to the objects the reconciler applies with server-side apply. Nothing here reads the API
 * server or the clock, so the same spec always gives the same objects and a reconcile that changes
 * nothing is a no-op apply.
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
/** The non-root user every container runs as (the image's `node` user). */
export const RUN_AS_USER = 1000;

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

export interface DesiredResourcesOptions {
  /** StatefulSet replicas, decided by the scaling logic (not blindly spec.replicas) */
  readonly nodeReplicas: number;
  /** the Redis fast copy the processes read the map from, if any (spec.redis.url, or the managed one) */
  readonly redisUrl?: string;
  /** the monitoring.coreos.com/v1 ServiceMonitor CRD exists on this API server */
  readonly serviceMonitorAvailable: boolean;
}

/** A ServiceMonitor (monitoring.coreos.com/v1): no type of it in @kubernetes/client-node. */
export interface ServiceMonitor extends KubernetesObject {
  readonly spec: {
    readonly selector: { readonly matchLabels: Record<string, string> };
    readonly namespaceSelector: { readonly matchNames: readonly string[] };
    readonly endpoints: ReadonlyArray<{
      readonly port: string;
      readonly path: string;
      readonly interval: string;
      readonly scheme?: 'http' | 'https';
      readonly tlsConfig?: {
        readonly ca: { readonly secret: { readonly name: string; readonly key: string } };
        readonly serverName: string;
      };
    }>;
  };
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
    statefulSet: nodeStatefulSet(cluster, spec, opts),
    podDisruptionBudget: podDisruptionBudget(cluster),
    gatewayDeployment: gatewayDeployment(cluster, spec, opts),
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

function metadata(
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

function serviceAccount(cluster: ClusterRef): V1ServiceAccount {
  return {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: metadata(cluster, serviceAccountName(cluster.name), 'node'),
  };
}

/**
 * Nodes and gateways follow the map's authoritative copy (`--kube-namespace`): read and watch that
 * one ConfigMap, nothing else. A watch with fieldSelector metadata.name is authorised by name.
 */
function mapReaderRole(cluster: ClusterRef): V1Role {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: metadata(cluster, serviceAccountName(cluster.name), 'node'),
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

function mapReaderRoleBinding(cluster: ClusterRef): V1RoleBinding {
  const name = serviceAccountName(cluster.name);
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: metadata(cluster, name, 'node'),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
    subjects: [{ kind: 'ServiceAccount', name, namespace: cluster.namespace }],
  };
}

function headlessService(cluster: ClusterRef): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(cluster, headlessServiceName(cluster.name), 'node'),
    spec: {
      clusterIP: 'None',
      // Peers and the operator must reach a node that is not ready yet: a new node streams
      // partitions before it serves reads, and a fresh cluster's nodes are ready only once the
      // operator has written the map.
      publishNotReadyAddresses: true,
      selector: selectorLabels(cluster.name, 'node'),
      ports: [
        { name: 'rpc', port: RPC_PORT, targetPort: 'rpc', protocol: 'TCP' },
        { name: 'admin', port: ADMIN_PORT, targetPort: 'admin', protocol: 'TCP' },
      ],
    },
  };
}

/** Non-root, no privilege escalation, no capabilities, nothing written outside the volumes. */
function containerSecurityContext(): V1SecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: RUN_AS_USER,
    runAsGroup: RUN_AS_USER,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

function podSecurityContext(): V1PodSecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: RUN_AS_USER,
    runAsGroup: RUN_AS_USER,
    // The data volume is writable by the container's group whatever the provisioner created.
    fsGroup: RUN_AS_USER,
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

/** The root filesystem is read-only; Node.js and its libraries may still want a scratch /tmp. */
const TMP_VOLUME: V1Volume = { name: 'tmp', emptyDir: {} };

/** Read-only for the container's user and group (fsGroup), nobody else. */
const SECRET_FILE_MODE = 0o440;

function secretVolume(name: string, secretName: string): V1Volume {
  return { name, secret: { secretName, defaultMode: SECRET_FILE_MODE } };
}

function internalTokenVolume(cluster: ClusterRef): V1Volume {
  return secretVolume('internal-token', internalTokenSecretName(cluster.name));
}

function redisArgs(redisUrl: string | undefined): string[] {
  return redisUrl ? [`--redis=${redisUrl}`] : [];
}

function processEnv(spec: KVClusterSpec): NonNullable<V1Container['env']> {
  return [
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'LOG_LEVEL', value: spec.logLevel },
  ];
}

/** The command line of a storage node: its id is its pod name, which is stable across restarts. */
export function nodeCommand(cluster: ClusterRef, redisUrl: string | undefined): string[] {
  return [
    'node',
    'dist/node/main.js',
    '--id=$(POD_NAME)',
    `--cluster=${cluster.name}`,
    `--data-dir=${DATA_DIR}`,
    `--listen=0.0.0.0:${RPC_PORT}`,
    `--admin-listen=0.0.0.0:${ADMIN_PORT}`,
    `--kube-namespace=${cluster.namespace}`,
    `--internal-token-file=${INTERNAL_TOKEN_DIR}/${INTERNAL_TOKEN_KEY}`,
    ...redisArgs(redisUrl),
  ];
}

/** The command line of a gateway; `--host` because the gateway listens on loopback by default. */
export function gatewayCommand(
  cluster: ClusterRef,
  spec: KVClusterSpec,
  redisUrl: string | undefined,
): string[] {
  const { rateLimit, tls } = spec.gateway;
  return [
    'node',
    'dist/gateway/main.js',
    '--id=$(POD_NAME)',
    `--cluster=${cluster.name}`,
    '--host=0.0.0.0',
    `--port=${GATEWAY_PORT}`,
    `--kube-namespace=${cluster.namespace}`,
    `--internal-token-file=${INTERNAL_TOKEN_DIR}/${INTERNAL_TOKEN_KEY}`,
    ...(apiKeysSecretName(cluster.name, spec)
      ? [`--auth-file=${API_KEYS_DIR}/${API_KEYS_FILE}`]
      : ['--no-auth']),
    ...(tls ? [`--tls-cert=${TLS_DIR}/tls.crt`, `--tls-key=${TLS_DIR}/tls.key`] : []),
    ...(rateLimit.perKey > 0 ? [`--rate-limit-per-key=${rateLimit.perKey}`] : []),
    ...(rateLimit.perAddress > 0 ? [`--rate-limit-per-address=${rateLimit.perAddress}`] : []),
    ...(rateLimit.perKey > 0 || rateLimit.perAddress > 0
      ? [`--rate-limit-window-s=${rateLimit.windowSeconds}`]
      : []),
    `--read-hedge-ms=${spec.gateway.readHedgeMs}`,
    `--shutdown-delay-ms=${GATEWAY_SHUTDOWN_DELAY_MS}`,
    ...redisArgs(redisUrl),
  ];
}

function nodeStatefulSet(
  cluster: ClusterRef,
  spec: KVClusterSpec,
  opts: DesiredResourcesOptions,
): V1StatefulSet {
  const selector = selectorLabels(cluster.name, 'node');
  const container: V1Container = {
    name: 'node',
    image: spec.image,
    imagePullPolicy: spec.imagePullPolicy,
    command: nodeCommand(cluster, opts.redisUrl),
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
    metadata: metadata(cluster, statefulSetName(cluster.name), 'node'),
    spec: {
      replicas: opts.nodeReplicas,
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

function podDisruptionBudget(cluster: ClusterRef): V1PodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: metadata(cluster, pdbName(cluster.name), 'node'),
    spec: {
      // One node down at a time keeps a quorum of every partition at RF 3.
      maxUnavailable: 1,
      selector: { matchLabels: selectorLabels(cluster.name, 'node') },
    },
  };
}

function gatewayDeployment(
  cluster: ClusterRef,
  spec: KVClusterSpec,
  opts: DesiredResourcesOptions,
): V1Deployment {
  const apiKeys = apiKeysSecretName(cluster.name, spec);
  const tls = spec.gateway.tls;
  // The kubelet probes HTTPS without verifying the certificate, as it does for every probe.
  const scheme = tls ? 'HTTPS' : 'HTTP';
  const volumes: V1Volume[] = [TMP_VOLUME, internalTokenVolume(cluster)];
  const volumeMounts: NonNullable<V1Container['volumeMounts']> = [
    { name: 'tmp', mountPath: '/tmp' },
    { name: 'internal-token', mountPath: INTERNAL_TOKEN_DIR, readOnly: true },
  ];
  if (apiKeys) {
    volumes.push(secretVolume('api-keys', apiKeys));
    volumeMounts.push({ name: 'api-keys', mountPath: API_KEYS_DIR, readOnly: true });
  }
  if (tls) {
    volumes.push(secretVolume('tls', tls.secretRef.name));
    volumeMounts.push({ name: 'tls', mountPath: TLS_DIR, readOnly: true });
  }
  const container: V1Container = {
    name: 'gateway',
    image: spec.image,
    imagePullPolicy: spec.imagePullPolicy,
    command: gatewayCommand(cluster, spec, opts.redisUrl),
    env: processEnv(spec),
    ports: [{ name: 'http', containerPort: GATEWAY_PORT, protocol: 'TCP' }],
    readinessProbe: {
      httpGet: { path: '/readyz', port: 'http', scheme },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 2,
    },
    livenessProbe: {
      httpGet: { path: '/healthz', port: 'http', scheme },
      initialDelaySeconds: 5,
      periodSeconds: 10,
      timeoutSeconds: 3,
      failureThreshold: 6,
    },
    ...(spec.resources.gateway ? { resources: spec.resources.gateway } : {}),
    securityContext: containerSecurityContext(),
    volumeMounts,
  };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(cluster, gatewayDeploymentName(cluster.name), 'gateway'),
    spec: {
      replicas: spec.gateway.replicas,
      selector: { matchLabels: selectorLabels(cluster.name, 'gateway') },
      // Gateways are stateless: bring the new one up before the old one goes.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: { labels: objectLabels(cluster.name, 'gateway') },
        spec: {
          serviceAccountName: serviceAccountName(cluster.name),
          securityContext: podSecurityContext(),
          enableServiceLinks: false,
          containers: [container],
          volumes,
        },
      },
    },
  };
}

function gatewayService(cluster: ClusterRef, spec: KVClusterSpec): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(cluster, gatewayServiceName(cluster.name), 'gateway'),
    spec: {
      type: spec.gateway.serviceType,
      selector: selectorLabels(cluster.name, 'gateway'),
      ports: [{ name: 'http', port: spec.gateway.port, targetPort: 'http', protocol: 'TCP' }],
    },
  };
}

/**
 * One ServiceMonitor for both Services: Prometheus Operator keeps, per endpoint, only the Services
 * that have a port of that name (`admin` on the nodes' headless Service, `http` on the gateway's).
 */
function serviceMonitor(cluster: ClusterRef, spec: KVClusterSpec): ServiceMonitor {
  const interval = spec.monitoring.serviceMonitor.interval;
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'ServiceMonitor',
    metadata: metadata(cluster, serviceMonitorName(cluster.name), 'monitoring'),
    spec: {
      selector: { matchLabels: { [LABEL_NAME]: APP_NAME, [LABEL_INSTANCE]: cluster.name } },
      namespaceSelector: { matchNames: [cluster.namespace] },
      endpoints: [
        { port: 'admin', path: '/metrics', interval },
        spec.gateway.tls
          ? {
              port: 'http',
              path: '/metrics',
              interval,
              scheme: 'https',
              // Prometheus scrapes pod IPs: verify against the Service name the certificate names,
              // with the CA the Secret carries (cert-manager writes ca.crt).
              tlsConfig: {
                ca: { secret: { name: spec.gateway.tls.secretRef.name, key: 'ca.crt' } },
                serverName: `${gatewayServiceName(cluster.name)}.${cluster.namespace}.svc`,
              },
            }
          : { port: 'http', path: '/metrics', interval },
      ],
    },
  };
}
