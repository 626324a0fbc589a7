import { UsageError } from '../common/cli-options';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import type { MetadataStore } from '../common/metadata-store';
import { openMetadataStore } from '../common/open-metadata-store';
import { initialPartitionMap, withNodeAddresses } from '../common/owner-maps';
import type { NodeInfo, PartitionMap } from '../common/partition-map';
import type { RebalanceProgress } from '../common/rebalance-progress';
import { Rebalancer } from '../common/rebalancer';
import { LocalClusterError } from './errors';
import { localNodes, MAX_NODES, nodeAddress, nodeOrdinal } from './node-ports';

/**
 * The launcher's part as owner of the partition map, as the operator's on Kubernetes: creates the
 * first map, gives the nodes new addresses when the ports changed, and scales through a
 * Rebalancer. It follows the store, so `map` is the newest map seen. Which processes run is the
 * cluster's business (local/cluster.ts).
 */
export interface MapOwnerOptions {
  readonly cluster: string;
  readonly dataDir: string;
  /** the map's file (when there is no Redis) */
  readonly file: string;
  readonly redisUrl?: string;
  /** the gateway port the node addresses derive from (local/node-ports.ts) */
  readonly port: number;
  /** undefined: 3 for a new cluster; otherwise checked against the stored map's bounds */
  readonly nodes?: number;
  readonly replicationFactor?: number;
  readonly partitionCount?: number;
  readonly log?: Logger;
}

export class MapOwner {
  private latest: PartitionMap;
  private rebalancer: Rebalancer | undefined;

  private constructor(
    private readonly store: MetadataStore,
    map: PartitionMap,
  ) {
    this.latest = map;
  }

  /** Opens the cluster's map store and makes sure it holds a map this launcher can run. */
  static async open(opts: MapOwnerOptions): Promise<MapOwner> {
    const store = openMetadataStore(
      { cluster: opts.cluster, file: opts.file, redisUrl: opts.redisUrl },
      opts.log,
    );
    try {
      return new MapOwner(store, await ensureMap(store, opts));
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** The newest partition map seen (it follows the store while the rebalancer runs). */
  get map(): PartitionMap {
    return this.latest;
  }

  /** The node count the map is at or heading to. */
  get targetNodeCount(): number {
    return this.latest.rebalance?.targetNodes.length ?? this.latest.nodes.length;
  }

  get rebalancing(): boolean {
    return this.rebalancer !== undefined;
  }

  /**
   * Starts the Rebalancer: a rebalance recorded in the map resumes (start it once every node the
   * map names runs). `onMap` hears of every newer map, starting with the current one.
   */
  async startRebalancer(
    opts: { log: Logger; internalToken: string; pollIntervalMs?: number },
    onMap: (map: PartitionMap) => void,
  ): Promise<void> {
    const rebalancer = await Rebalancer.start({
      store: this.store,
      log: opts.log,
      internalToken: opts.internalToken,
      ...(opts.pollIntervalMs ? { pollIntervalMs: opts.pollIntervalMs } : {}),
    });
    this.rebalancer = rebalancer;
    const seen = (map: PartitionMap): void => {
      if (map.epoch > this.latest.epoch) this.latest = map;
      onMap(map);
    };
    rebalancer.on('map', seen);
    const current = rebalancer.current();
    if (current) seen(current);
  }

  /** Records the plan of a rebalance to exactly these nodes (progress() then says where it stands). */
  async scale(target: readonly NodeInfo[]): Promise<void> {
    const planned = await this.started().scale(target);
    if (planned.epoch > this.latest.epoch) this.latest = planned;
  }

  /** Where the rebalance stands: the map's plan and what each receiving node reports. */
  progress(): Promise<RebalanceProgress> {
    return this.started().progress();
  }

  /** Resolves when no rebalance is under way. */
  async idle(): Promise<void> {
    await this.rebalancer?.idle();
  }

  /** Stops the rebalancer (first, when the launcher stops: no move starts while nodes go away). */
  async stopRebalancer(log: Logger): Promise<void> {
    try {
      await this.rebalancer?.stop();
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'rebalancer did not stop cleanly');
    }
  }

  async close(): Promise<void> {
    await this.store.close();
  }

  private started(): Rebalancer {
    if (!this.rebalancer) {
      throw new LocalClusterError('no_rebalancer', 'this cluster was started without a rebalancer');
    }
    return this.rebalancer;
  }
}

/**
 * Creates the map for a new cluster, or checks the stored one: the replication factor and the
 * partition count cannot change; a different --nodes is a scale, done once everything runs.
 */
async function ensureMap(store: MetadataStore, opts: MapOwnerOptions): Promise<PartitionMap> {
  const existing = await store.load();
  if (!existing) {
    const n = opts.nodes ?? 3;
    const rf = opts.replicationFactor ?? Math.min(3, n);
    if (rf > n)
      throw new UsageError(`--replication-factor ${rf} needs at least ${rf} nodes, got --nodes ${n}`);
    if (n > MAX_NODES) throw new UsageError(`--nodes must be at most ${MAX_NODES}, got ${n}`);
    const map = initialPartitionMap({
      cluster: opts.cluster,
      nodes: localNodes(opts.port, n),
      partitionCount: opts.partitionCount ?? 256,
      replicationFactor: rf,
    });
    if (!(await store.compareAndSet(map, undefined))) {
      throw new LocalClusterError('map_race', 'another launcher created the partition map at the same time');
    }
    return map;
  }
  const mismatch = (flag: string, asked: number | undefined, stored: number): void => {
    if (asked !== undefined && asked !== stored) {
      throw new UsageError(
        `${opts.dataDir} holds a cluster with ${flag} ${stored}; it cannot change to ${asked} (rebalancing moves partitions between nodes, it keeps their number and replication factor)`,
      );
    }
  };
  mismatch('--replication-factor', opts.replicationFactor, existing.replicationFactor);
  mismatch('--partitions', opts.partitionCount, existing.partitionCount);
  if (opts.nodes !== undefined && (opts.nodes < existing.replicationFactor || opts.nodes > MAX_NODES)) {
    throw new UsageError(
      `--nodes must be from ${existing.replicationFactor} (the replication factor of ${opts.dataDir}) to ${MAX_NODES}, got ${opts.nodes}`,
    );
  }
  const ordinals = existing.nodes.map((n) => nodeOrdinal(n.id));
  if (ordinals.some((k) => k === undefined)) {
    throw new LocalClusterError(
      'foreign_map',
      `the map in ${opts.dataDir} was not made by the local launcher`,
    );
  }
  const addresses = new Map(existing.nodes.map((n, i) => [n.id, nodeAddress(opts.port, ordinals[i] ?? 0)]));
  // Ports changed since the last run: a new epoch tells every component the new addresses.
  const moved = withNodeAddresses(existing, addresses);
  if (moved === existing) return existing;
  if (!(await store.compareAndSet(moved, existing.epoch))) {
    throw new LocalClusterError('map_race', 'the partition map changed while the launcher was updating it');
  }
  return moved;
}
