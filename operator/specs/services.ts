import type { V1Service } from '@kubernetes/client-node';
import type { KVClusterSpec } from '../../crds/kvcluster-spec';
import {
  ADMIN_PORT,
  gatewayServiceName,
  headlessServiceName,
  objectMetadata,
  RPC_PORT,
  selectorLabels,
  type ClusterRef,
} from './names';

/** The Services: the nodes' headless one (peers, the operator) and the gateways' (clients). */

export function headlessService(cluster: ClusterRef): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: objectMetadata(cluster, headlessServiceName(cluster.name), 'node'),
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

export function gatewayService(cluster: ClusterRef, spec: KVClusterSpec): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: objectMetadata(cluster, gatewayServiceName(cluster.name), 'gateway'),
    spec: {
      type: spec.gateway.serviceType,
      selector: selectorLabels(cluster.name, 'gateway'),
      ports: [{ name: 'http', port: spec.gateway.port, targetPort: 'http', protocol: 'TCP' }],
    },
  };
}
