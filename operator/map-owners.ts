import type { KubeConfig } from '@kubernetes/client-node';
import { ConfigMapMetadataStore } from '../common/configmap-metadata-store';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import type { MetadataStore } from '../common/metadata-store';
import { MirroredMetadataStore } from '../common/mirrored-metadata-store';
import type { PartitionMap } from '../common/partition-map';
import { Rebalancer } from '../common/rebalancer';
import { RedisMetadataStore } from '../common/redis-metadata-store';
import { objectLabels, ownerReference, type ClusterRef } from './specs/names';

/**
 * The operator owns each KVCluster's partition map (docs/design.md, "Metadata: ConfigMap and Redis"): one metadata store
 * (the ConfigMap, mirrored to Redis when the cluster has one) and one Rebalancer per KVCluster,
 * kept across reconciles, so a rebalance keeps running between them and a restarted operator
 * resumes the plan recorded in the map (Rebalancer.start does).
 */
export interface MapOwner {
  readonly cluster: ClusterRef;
  readonly store: MetadataStore;
  readonly rebalancer: Rebalancer;
  /** the Redis URL the store mirrors to, if any */
  readonly redisUrl: string | undefined;
  /** what its rebalancer presents to the nodes' internal API */
  readonly internalToken: string | undefined;
}

export interface MapOwnersOptions {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  /** called with `namespace/name` whenever a cluster's map changes (a reconcile should follow) */
  readonly onMapChange: (key: string, map: PartitionMap) => void;
  /** Rebalancer poll interval (default: the Rebalancer's) */
  readonly rebalancePollIntervalMs?: number;
  /** Rebalancer per-RPC timeout (default: the Rebalancer's) */
  readonly rpcTimeoutMs?: number;
}

export function clusterKey(cluster: { namespace: string; name: string }): string {
  return `${cluster.namespace}/${cluster.name}`;
}

export class MapOwners {
  private readonly owners = new Map<string, MapOwner>();

  constructor(private readonly opts: MapOwnersOptions) {}

  get size(): number {
    return this.owners.size;
  }

  get(key: string): MapOwner | undefined {
    return this.owners.get(key);
  }

  /**
   * The owner of this cluster's map, started if needed. A KVCluster recreated under the same
   * name (another uid) or pointed at another Redis gets a fresh one. Callers serialize per key.
   */
  async ensure(
    cluster: ClusterRef,
    redisUrl: string | undefined,
    internalToken: string | undefined,
  ): Promise<MapOwner> {
    const key = clusterKey(cluster);
    const current = this.owners.get(key);
    if (
      current &&
      current.cluster.uid === cluster.uid &&
      current.redisUrl === redisUrl &&
      current.internalToken === internalToken
    )
      return current;
    if (current) await this.stop(key);

    const log = this.opts.log.child({ cluster: key });
    const authoritative = new ConfigMapMetadataStore({
      kube: this.opts.kubeConfig,
      namespace: cluster.namespace,
      cluster: cluster.name,
      labels: objectLabels(cluster.name, 'partition-map'),
      // Deleting the KVCluster garbage-collects its map with everything else.
      ownerReferences: [ownerReference(cluster)],
      log,
    });
    const store: MetadataStore = redisUrl
      ? new MirroredMetadataStore({
          authoritative,
          fast: new RedisMetadataStore({ url: redisUrl, cluster: cluster.name, log }),
          writer: true,
          log,
        })
      : authoritative;
    let rebalancer: Rebalancer;
    try {
      rebalancer = await Rebalancer.start({
        store,
        log,
        ...(this.opts.rebalancePollIntervalMs ? { pollIntervalMs: this.opts.rebalancePollIntervalMs } : {}),
        ...(this.opts.rpcTimeoutMs ? { rpcTimeoutMs: this.opts.rpcTimeoutMs } : {}),
        ...(internalToken ? { internalToken } : {}),
      });
    } catch (err) {
      await closeLogged(store, log);
      throw err;
    }
    rebalancer.on('map', (map) => this.opts.onMapChange(key, map));
    const owner: MapOwner = { cluster, store, rebalancer, redisUrl, internalToken };
    this.owners.set(key, owner);
    log.info({ redis: redisUrl !== undefined }, 'owning the partition map');
    return owner;
  }

  /** Stops the rebalancer and closes the store of one cluster (deleted, or leadership lost). */
  async stop(key: string): Promise<void> {
    const owner = this.owners.get(key);
    if (!owner) return;
    this.owners.delete(key);
    owner.rebalancer.removeAllListeners('map');
    await owner.rebalancer.stop();
    await closeLogged(owner.store, this.opts.log.child({ cluster: key }));
  }

  /**
   * Removes a deleted cluster's map from its Redis (the ConfigMap goes by garbage collection).
   * Call after stop(): nothing may publish it again. True if a copy was there.
   */
  async removeFastCopy(cluster: ClusterRef, redisUrl: string): Promise<boolean> {
    const log = this.opts.log.child({ cluster: clusterKey(cluster) });
    const fast = new RedisMetadataStore({ url: redisUrl, cluster: cluster.name, log });
    try {
      return await fast.remove();
    } finally {
      await closeLogged(fast, log);
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.owners.keys()].map((key) => this.stop(key)));
  }

  keys(): string[] {
    return [...this.owners.keys()];
  }
}

async function closeLogged(store: MetadataStore, log: Logger): Promise<void> {
  try {
    await store.close();
  } catch (err) {
    // Closing releases connections; a failure leaves nothing to undo, but say so.
    log.warn({ err: errorMessage(err) }, 'closing the partition map store failed');
  }
}
