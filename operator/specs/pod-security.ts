import type { V1PodSecurityContext, V1SecurityContext, V1Volume } from '@kubernetes/client-node';
import { internalTokenSecretName, type ClusterRef } from './names';

/** How every pod of a cluster is locked down: its security contexts and the volumes it mounts. */

/** The non-root user every container runs as (the image's `node` user). */
export const RUN_AS_USER = 1000;

/** Non-root, no privilege escalation, no capabilities, nothing written outside the volumes. */
export function containerSecurityContext(): V1SecurityContext {
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

export function podSecurityContext(): V1PodSecurityContext {
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
export const TMP_VOLUME: V1Volume = { name: 'tmp', emptyDir: {} };

/** Read-only for the container's user and group (fsGroup), nobody else. */
const SECRET_FILE_MODE = 0o440;

export function secretVolume(name: string, secretName: string): V1Volume {
  return { name, secret: { secretName, defaultMode: SECRET_FILE_MODE } };
}

export function internalTokenVolume(cluster: ClusterRef): V1Volume {
  return secretVolume('internal-token', internalTokenSecretName(cluster.name));
}
