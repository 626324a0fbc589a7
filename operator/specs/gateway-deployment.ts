import type { V1Container, V1Deployment, V1Volume } from '@kubernetes/client-node';
import type { KVClusterSpec } from '../../crds/kvcluster-spec';
import { gatewayCommand, processEnv } from './commands';
import {
  API_KEYS_DIR,
  apiKeysSecretName,
  GATEWAY_PORT,
  gatewayDeploymentName,
  INTERNAL_TOKEN_DIR,
  objectLabels,
  objectMetadata,
  selectorLabels,
  serviceAccountName,
  TLS_DIR,
  type ClusterRef,
} from './names';
import {
  containerSecurityContext,
  internalTokenVolume,
  podSecurityContext,
  secretVolume,
  TMP_VOLUME,
} from './pod-security';

/** The gateways' Deployment; `redisUrl` the Redis fast copy they read the map from, if any. */
export function gatewayDeployment(
  cluster: ClusterRef,
  spec: KVClusterSpec,
  redisUrl: string | undefined,
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
    command: gatewayCommand(cluster, spec, redisUrl),
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
    metadata: objectMetadata(cluster, gatewayDeploymentName(cluster.name), 'gateway'),
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
