import type { KubernetesObject } from '@kubernetes/client-node';
import type { KVClusterSpec } from '../../crds/kvcluster-spec';
import {
  APP_NAME,
  gatewayServiceName,
  LABEL_INSTANCE,
  LABEL_NAME,
  objectMetadata,
  serviceMonitorName,
  type ClusterRef,
} from './names';

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

/**
 * One ServiceMonitor for both Services: Prometheus Operator keeps, per endpoint, only the Services
 * that have a port of that name (`admin` on the nodes' headless Service, `http` on the gateway's).
 */
export function serviceMonitor(cluster: ClusterRef, spec: KVClusterSpec): ServiceMonitor {
  const interval = spec.monitoring.serviceMonitor.interval;
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'ServiceMonitor',
    metadata: objectMetadata(cluster, serviceMonitorName(cluster.name), 'monitoring'),
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
