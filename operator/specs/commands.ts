import type { V1Container } from '@kubernetes/client-node';
import type { KVClusterSpec } from '../../crds/kvcluster-spec';
import {
  ADMIN_PORT,
  API_KEYS_DIR,
  API_KEYS_FILE,
  apiKeysSecretName,
  DATA_DIR,
  GATEWAY_PORT,
  GATEWAY_SHUTDOWN_DELAY_MS,
  INTERNAL_TOKEN_DIR,
  INTERNAL_TOKEN_KEY,
  RPC_PORT,
  TLS_DIR,
  type ClusterRef,
} from './names';

/** What the node and gateway processes are told: their command lines and environment. */

function redisArgs(redisUrl: string | undefined): string[] {
  return redisUrl ? [`--redis=${redisUrl}`] : [];
}

export function processEnv(spec: KVClusterSpec): NonNullable<V1Container['env']> {
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
