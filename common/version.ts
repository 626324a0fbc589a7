/**
 * The one version of kvstore: the packages, the image tag, the chart's appVersion and the operator's
 * default image all follow it (common/version.test.ts checks that they do).
 */
export const KVSTORE_VERSION = '0.1.0';

/** The image a KVCluster runs when its spec names none. */
export const DEFAULT_IMAGE = `kvstore:${KVSTORE_VERSION}`;

/**
 * Every HTTP endpoint of kvstore (gateway, node admin, launcher admin, operator) answers with this
 * header, `<component>/<version>`, so a client can tell a kvstore server from anything else on a port.
 */
export const IDENTITY_HEADER = 'x-kvstore';

export type Component = 'gateway' | 'node' | 'operator' | 'launcher';

export function identity(component: Component): string {
  return `${component}/${KVSTORE_VERSION}`;
}
