import type { KubeConfig } from '@kubernetes/client-node';
import { UsageError } from './cli-options';
import { FileMetadataStore } from './file-metadata-store';
import type { Logger } from './logger';
import { MetadataError, type MetadataStore } from './metadata-store';
import { MirroredMetadataStore } from './mirrored-metadata-store';
import { RedisMetadataStore } from './redis-metadata-store';

export interface MetadataLocation {
  readonly cluster: string;
  /** the map file of a cluster on one machine */
  readonly file?: string;
  /** Redis, the fast copy shared by gateways and nodes */
  readonly redisUrl?: string;
  /**
   * The namespace of the authoritative ConfigMap `<cluster>-partition-map`. The API server is
   * found by KubeConfig.loadFromDefault() (KUBECONFIG, ~/.kube/config, or in-cluster) unless
   * kubeConfig is given.
   */
  readonly kubeNamespace?: string;
  /** a KubeConfig to use instead of loadFromDefault() (tests, tools with a config of their own) */
  readonly kubeConfig?: KubeConfig;
}

/**
 * Picks the metadata store a process (a reader: node, gateway) was pointed at:
 * - kubeNamespace and redisUrl: Redis as the fast copy, the ConfigMap as the authoritative copy
 *   readers fall back to (docs/design.md, "Metadata: ConfigMap and Redis");
 * - kubeNamespace alone: the ConfigMap;
 * - redisUrl alone: Redis; else the file.
 */
export function openMetadataStore(loc: MetadataLocation, log?: Logger): MetadataStore {
  if (loc.kubeNamespace !== undefined) return openKubeStore(loc, loc.kubeNamespace, log);
  if (loc.redisUrl) return new RedisMetadataStore({ url: loc.redisUrl, cluster: loc.cluster, log });
  if (loc.file) return new FileMetadataStore(loc.file, { log });
  throw new UsageError(
    'give --metadata-file PATH, --redis URL, or --kube-namespace NS (with or without --redis) to find the partition map',
  );
}

function openKubeStore(loc: MetadataLocation, namespace: string, log: Logger | undefined): MetadataStore {
  if (loc.file)
    throw new UsageError('--metadata-file cannot be combined with --kube-namespace: pick one map');
  // Loaded only here: @kubernetes/client-node takes about half a second to load and is ESM-only
  // (jest needs a transform for it), so file and Redis setups, and their tests, never load it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const kube = require('./configmap-metadata-store') as typeof import('./configmap-metadata-store');
  let authoritative: MetadataStore;
  try {
    authoritative = new kube.ConfigMapMetadataStore({
      kube: loc.kubeConfig ?? kube.loadDefaultKubeConfig(),
      namespace,
      cluster: loc.cluster,
      // With Redis in front, changes arrive by Redis and by the ConfigMap watch: the poll can be slow.
      ...(loc.redisUrl ? { pollIntervalMs: 30_000 } : {}),
      log,
    });
  } catch (err) {
    // A bad namespace, cluster name or kubeconfig is a start-up mistake: say so in one line.
    if (err instanceof MetadataError && err.failure === 'invalid') {
      throw new UsageError(`--kube-namespace ${namespace}: ${err.message}`);
    }
    throw err;
  }
  if (!loc.redisUrl) return authoritative;
  const fast = new RedisMetadataStore({ url: loc.redisUrl, cluster: loc.cluster, log });
  return new MirroredMetadataStore({ authoritative, fast, log });
}
