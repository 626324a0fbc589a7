import { parseKVClusterSpec } from '../../crds/kvcluster-spec';
import { desiredResources, type DesiredResources, type DesiredResourcesOptions } from './desired-resources';
import type { ClusterRef } from './names';

/** The cluster and options the builders' tests build from. */
const ref: ClusterRef = { name: 'demo', namespace: 'prod', uid: '1234-abcd' };
const opts: DesiredResourcesOptions = { nodeReplicas: 3, serviceMonitorAvailable: false };

/** Every object of `ref` with this spec (parsed, so its defaults apply). */
export function build(
  spec: Record<string, unknown> = {},
  extra: Partial<DesiredResourcesOptions> = {},
): DesiredResources {
  return desiredResources(ref, parseKVClusterSpec(spec), { ...opts, ...extra });
}
