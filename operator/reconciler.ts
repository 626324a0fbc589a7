import type { V1Pod } from '@kubernetes/client-node';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import { MetadataError } from '../common/metadata-store';
import type { PartitionMap } from '../common/partition-map';
import { RebalancePlanError } from '../common/rebalance-plan';
import {
  InvalidKVClusterSpecError,
  parseKVClusterSpec,
  type KVClusterSpec,
  type KVClusterStatus,
} from '../crds/kvcluster-spec';
import { ensureClusterSecrets } from './cluster-secrets';
import { ConvergeContext } from './converge-context';
import type { EventRecorder } from './events';
import { isConflict, isNotFound, type KubeApi, type KVClusterObject } from './kube-api';
import { clusterKey, type MapOwners } from './map-owners';
import { nodeOrdinal, observeNodes, type ObservedNode } from './node-addresses';
import { desiredResources, resourceList } from './specs/desired-resources';
import { FINALIZER, serviceMonitorName, statefulSetName, type ClusterRef } from './specs/names';
import { decideScaling, ScalingError } from './scaling';
import { computeStatus, sameStatus } from './status';

/**
 * One level-triggered, idempotent pass over one KVCluster: read everything, decide, write only
 * what differs. Run as often as you like; the controller serializes passes per cluster.
 *
 * Order within a pass (Reconciler.steps): validate the spec (a bad one changes nothing), the
 * finalizer, the objects (server-side apply), then the partition map (first map, node addresses,
 * scaling), then status.
 */

export type ReconcileResult =
  /** the cluster matches its spec as far as it can right now */
  | 'done'
  /** the spec is refused: nothing changed, status and an event say why */
  | 'invalid'
  /** the KVCluster was being deleted and is now released (finalizer removed) */
  | 'finalized'
  /** the KVCluster does not exist */
  | 'gone'
  /** someone wrote the KVCluster in between: run again at once */
  | 'conflict';

export interface ReconcileOutcome {
  readonly result: ReconcileResult;
  /** run again after this long even if nothing is observed to change */
  readonly requeueAfterMs?: number;
}

/** The API calls a reconcile makes (KubeApi; a fake in unit tests). */
export type ReconcilerApi = Pick<
  KubeApi,
  | 'getKVCluster'
  | 'setFinalizers'
  | 'patchStatus'
  | 'apply'
  | 'deleteIfExists'
  | 'getStatefulSet'
  | 'listNodePods'
  | 'listNodeVolumes'
  | 'deleteVolume'
  | 'serviceMonitorsAvailable'
  | 'nodeZone'
  | 'getSecret'
  | 'createSecret'
>;

/** One step of a converge pass: an outcome ends the pass there (the later steps do not run). */
interface ConvergeStep {
  readonly name: string;
  run(ctx: ConvergeContext): Promise<ReconcileOutcome | void>;
}

export interface ReconcilerOptions {
  readonly api: ReconcilerApi;
  readonly owners: Pick<MapOwners, 'ensure' | 'get' | 'stop' | 'removeFastCopy'>;
  readonly events: Pick<EventRecorder, 'record' | 'forget'>;
  readonly log: Logger;
  /** the Redis the Helm chart deploys, used by clusters with spec.redis.managed */
  readonly managedRedisUrl?: string;
  readonly now?: () => Date;
}

export class Reconciler {
  private readonly now: () => Date;

  constructor(private readonly opts: ReconcilerOptions) {
    this.now = opts.now ?? (() => new Date());
  }

  async reconcile(namespace: string, name: string): Promise<ReconcileOutcome> {
    const { api, owners } = this.opts;
    const key = clusterKey({ namespace, name });
    const kv = await api.getKVCluster(namespace, name);
    if (!kv) {
      await owners.stop(key);
      return { result: 'gone' };
    }
    const ref: ClusterRef = { name, namespace, uid: kv.metadata.uid };
    try {
      if (kv.metadata.deletionTimestamp) return await this.finalize(kv, ref);
      return await this.converge(kv, ref);
    } catch (err) {
      // The queue retries with backoff and logs; the event tells whoever looks at the KVCluster.
      await this.event(ref, 'Warning', 'ReconcileFailed', errorMessage(err));
      throw err;
    }
  }

  /**
   * Drives a live KVCluster towards its spec: the steps of `steps` in order, until one
   * ends the pass early (the spec is refused, the finalizer write conflicted).
   */
  private async converge(kv: KVClusterObject, ref: ClusterRef): Promise<ReconcileOutcome> {
    const ctx = new ConvergeContext(kv, ref);
    for (const step of this.steps) {
      ctx.step = step.name;
      try {
        const outcome = await step.run(ctx);
        if (outcome) return outcome;
      } catch (err) {
        // The work queue logs the failure itself; this says where in the pass it happened.
        this.opts.log.debug(
          { cluster: ctx.key, step: step.name, err: errorMessage(err) },
          'reconcile step failed',
        );
        throw err;
      }
    }
    return { result: 'done' };
  }

  /** The steps of a converge pass, in the order they run. */
  private readonly steps: readonly ConvergeStep[] = [
    { name: 'validate-spec', run: (ctx) => this.validateSpec(ctx) },
    { name: 'finalizer', run: (ctx) => this.addFinalizer(ctx) },
    { name: 'redis', run: (ctx) => this.chooseRedis(ctx) },
    { name: 'map-owner', run: (ctx) => this.ensureMapOwner(ctx) },
    { name: 'observe', run: (ctx) => this.observeCluster(ctx) },
    { name: 'check-replication-factor', run: (ctx) => this.checkReplicationFactor(ctx) },
    { name: 'decide-scaling', run: (ctx) => this.decide(ctx) },
    { name: 'apply-objects', run: (ctx) => this.applyObjects(ctx) },
    { name: 'write-map', run: (ctx) => this.writeMap(ctx) },
    { name: 'rebalance-finished', run: (ctx) => this.noticeRebalanceFinished(ctx) },
    { name: 'status', run: (ctx) => this.writeConvergedStatus(ctx) },
  ];

  /** A spec the schema refuses changes nothing but status and an event. */
  private async validateSpec(ctx: ConvergeContext): Promise<ReconcileOutcome | void> {
    try {
      ctx.set('spec', parseKVClusterSpec(ctx.kv.spec));
    } catch (err) {
      if (!(err instanceof InvalidKVClusterSpecError)) throw err;
      return this.refuse(ctx.kv, ctx.ref, err);
    }
  }

  private async addFinalizer(ctx: ConvergeContext): Promise<ReconcileOutcome | void> {
    const finalizers = ctx.kv.metadata.finalizers ?? [];
    if (finalizers.includes(FINALIZER)) return;
    try {
      await this.opts.api.setFinalizers(ctx.kv, [...finalizers, FINALIZER]);
    } catch (err) {
      if (isConflict(err)) return { result: 'conflict' };
      throw err;
    }
  }

  private async chooseRedis(ctx: ConvergeContext): Promise<void> {
    const spec = ctx.get('spec');
    ctx.set('redisUrl', spec.redis.url ?? (spec.redis.managed ? this.opts.managedRedisUrl : undefined));
    if (spec.redis.managed && !this.opts.managedRedisUrl) {
      await this.event(
        ctx.ref,
        'Warning',
        'ManagedRedisUnavailable',
        'spec.redis.managed is set but the operator was started without --managed-redis-url: the map is served from its ConfigMap only',
      );
    }
  }

  private async ensureMapOwner(ctx: ConvergeContext): Promise<void> {
    // Before the map owner: its rebalancer calls the nodes with the internal token.
    const secrets = await ensureClusterSecrets(this.opts.api, ctx.ref, ctx.get('spec'));
    ctx.set('owner', await this.opts.owners.ensure(ctx.ref, ctx.get('redisUrl'), secrets.internalToken));
  }

  private async observeCluster(ctx: ConvergeContext): Promise<void> {
    const { api } = this.opts;
    const { namespace, name } = ctx.ref;
    const pods = await api.listNodePods(namespace, name);
    ctx.set('nodes', await this.observe(name, pods));
    ctx.set('map', await ctx.get('owner').store.load());
    ctx.set('statefulSet', await api.getStatefulSet(namespace, statefulSetName(name)));
  }

  private async checkReplicationFactor(ctx: ConvergeContext): Promise<void> {
    const spec = ctx.get('spec');
    const map = ctx.get('map');
    if (map && map.replicationFactor !== spec.replicationFactor) {
      await this.event(
        ctx.ref,
        'Warning',
        'ReplicationFactorUnchanged',
        `spec.replicationFactor is ${spec.replicationFactor} but the partition map keeps ${map.replicationFactor} replicas of every partition: changing the replication factor of an existing cluster is not supported`,
      );
    }
  }

  private async decide(ctx: ConvergeContext): Promise<void> {
    const { name } = ctx.ref;
    const spec = ctx.get('spec');
    const map = ctx.get('map');
    ctx.set('blocked', undefined);
    try {
      ctx.set('decision', decideScaling({ cluster: name, spec, map, nodes: ctx.get('nodes') }));
    } catch (err) {
      if (!(err instanceof ScalingError)) throw err;
      ctx.set('blocked', err.message);
      await this.event(ctx.ref, 'Warning', 'ScalingBlocked', err.message);
      const currentReplicas = ctx.get('statefulSet')?.spec?.replicas;
      // Keep every pod the map may name: never shrink on a map we cannot read as ours.
      ctx.set('decision', {
        statefulSetReplicas: Math.max(spec.replicas, currentReplicas ?? 0, highestOrdinal(name, map) + 1),
        action: { kind: 'none' },
        heldAddresses: [],
      });
    }
  }

  /** The objects. */
  private async applyObjects(ctx: ConvergeContext): Promise<void> {
    const { api } = this.opts;
    const { ref } = ctx;
    const { namespace, name } = ref;
    const spec = ctx.get('spec');
    const decision = ctx.get('decision');
    const statefulSet = ctx.get('statefulSet');
    const currentReplicas = statefulSet?.spec?.replicas;
    const serviceMonitorAvailable = await this.serviceMonitorAvailable(ref, spec);
    const desired = desiredResources(ref, spec, {
      nodeReplicas: decision.statefulSetReplicas,
      redisUrl: ctx.get('redisUrl'),
      serviceMonitorAvailable,
    });
    for (const object of resourceList(desired)) await api.apply(object);
    if (!desired.serviceMonitor && serviceMonitorAvailable) {
      await api.deleteIfExists({
        apiVersion: 'monitoring.coreos.com/v1',
        kind: 'ServiceMonitor',
        metadata: { name: serviceMonitorName(name), namespace },
      });
    }
    if (!statefulSet) {
      await this.event(
        ref,
        'Normal',
        'Created',
        `created StatefulSet ${statefulSetName(name)} with ${decision.statefulSetReplicas} nodes, its Services, PodDisruptionBudget and the gateway Deployment`,
      );
    } else if (currentReplicas !== decision.statefulSetReplicas) {
      await this.event(
        ref,
        'Normal',
        'StatefulSetScaled',
        `StatefulSet ${statefulSetName(name)} scaled from ${currentReplicas ?? 0} to ${decision.statefulSetReplicas} pods`,
      );
    }
    for (const held of decision.heldAddresses) {
      this.opts.log.info(
        { cluster: ctx.key, node: held.id, from: held.from, to: held.to },
        'address change held back: another node of the map still has that address',
      );
    }
  }

  /** The map: the first one, new addresses, or a rebalance planned, as decided. */
  private async writeMap(ctx: ConvergeContext): Promise<void> {
    const { ref } = ctx;
    const action = ctx.get('decision').action;
    const owner = ctx.get('owner');
    const store = owner.store;
    const map = ctx.get('map');
    switch (action.kind) {
      case 'create-map':
        if (await store.compareAndSet(action.map, undefined)) {
          ctx.set('map', action.map);
          await this.event(
            ref,
            'Normal',
            'PartitionMapCreated',
            `partition map created: ${action.map.partitionCount} partitions on ${action.map.nodes.length} nodes, replication factor ${action.map.replicationFactor}`,
          );
        } else {
          ctx.set('map', await store.load());
        }
        break;
      case 'update-addresses':
        if (map && (await store.compareAndSet(action.map, map.epoch))) {
          ctx.set('map', action.map);
          await this.event(
            ref,
            'Normal',
            'NodeAddressChanged',
            `map epoch ${action.map.epoch}: ${action.changed.map((c) => `${c.id} ${c.from} -> ${c.to}`).join(', ')}`,
          );
        } else {
          ctx.set('map', await store.load());
        }
        break;
      case 'scale':
        try {
          const planned = await owner.rebalancer.scale(action.target);
          const moves = planned.rebalance?.movesTotal ?? 0;
          await this.event(
            ref,
            'Normal',
            'RebalancePlanned',
            `scaling from ${action.from} to ${action.target.length} nodes: ${moves} partition move${moves === 1 ? '' : 's'} planned at map epoch ${planned.epoch}`,
          );
          ctx.set('map', planned);
        } catch (err) {
          if (!(err instanceof RebalancePlanError)) throw err;
          // The planner refuses what can never work (e.g. a target a map cannot hold): no retry helps.
          ctx.set('blocked', err.message);
          await this.event(ref, 'Warning', 'RebalancePlanRefused', err.message);
        }
        break;
      case 'wait':
      case 'none':
        break;
    }
  }

  private async noticeRebalanceFinished(ctx: ConvergeContext): Promise<void> {
    const map = ctx.get('map');
    if (ctx.kv.status?.rebalance && map && !map.rebalance && map.moves.length === 0) {
      await this.event(
        ctx.ref,
        'Normal',
        'RebalanceFinished',
        `rebalance finished at map epoch ${map.epoch}: ${map.nodes.length} nodes`,
      );
    }
  }

  private async writeConvergedStatus(ctx: ConvergeContext): Promise<void> {
    const { kv } = ctx;
    const action = ctx.get('decision').action;
    const blocked = ctx.get('blocked');
    await this.writeStatus(
      kv,
      computeStatus({
        cluster: ctx.ref.name,
        generation: kv.metadata.generation ?? 0,
        previous: kv.status,
        now: this.now(),
        map: ctx.get('map'),
        nodes: ctx.get('nodes'),
        ...(action.kind === 'wait' ? { waitingForNodes: action.nodes } : {}),
        ...(blocked ? { scalingBlocked: blocked } : {}),
      }),
    );
  }

  /** A spec the schema refuses: say so (status, event) and change nothing else. */
  private async refuse(
    kv: KVClusterObject,
    ref: ClusterRef,
    err: InvalidKVClusterSpecError,
  ): Promise<ReconcileOutcome> {
    await this.event(ref, 'Warning', 'InvalidSpec', err.message);
    const owner = this.opts.owners.get(clusterKey(ref));
    const pods = await this.opts.api.listNodePods(ref.namespace, ref.name);
    await this.writeStatus(
      kv,
      computeStatus({
        cluster: ref.name,
        generation: kv.metadata.generation ?? 0,
        previous: kv.status,
        now: this.now(),
        invalidSpec: err.message,
        map: owner?.rebalancer.current(),
        nodes: await this.observe(ref.name, pods),
      }),
    );
    return { result: 'invalid' };
  }

  /**
   * Deletion: stop owning the map, apply the deletion policy to the node volumes, then let the
   * KVCluster go. Everything else it owns goes by garbage collection (owner references).
   */
  private async finalize(read: KVClusterObject, ref: ClusterRef): Promise<ReconcileOutcome> {
    const { api, owners } = this.opts;
    const key = clusterKey(ref);
    await owners.stop(key);
    if (!(read.metadata.finalizers ?? []).includes(FINALIZER)) return { result: 'gone' };
    const kv = await this.writeStatus(read, { ...(read.status ?? {}), phase: 'Deleting' });
    const finalizers = kv.metadata.finalizers ?? [];
    // A spec that does not parse keeps the volumes: deleting data is never a default.
    let policy: KVClusterSpec['deletionPolicy'] = 'Retain';
    let redisUrl: string | undefined;
    try {
      const spec = parseKVClusterSpec(kv.spec);
      policy = spec.deletionPolicy;
      redisUrl = spec.redis.url ?? (spec.redis.managed ? this.opts.managedRedisUrl : undefined);
    } catch (err) {
      if (!(err instanceof InvalidKVClusterSpecError)) throw err;
      await this.event(ref, 'Warning', 'InvalidSpec', `${err.message}; keeping the node volumes`);
    }
    if (policy === 'Delete') {
      // The StatefulSet first: while it exists it recreates the claim of any pod it restarts.
      await api.deleteIfExists(
        {
          apiVersion: 'apps/v1',
          kind: 'StatefulSet',
          metadata: { name: statefulSetName(ref.name), namespace: ref.namespace },
        },
        'Background',
      );
      const volumes = await api.listNodeVolumes(ref.namespace, ref.name);
      for (const pvc of volumes) {
        const name = pvc.metadata?.name;
        if (name && !pvc.metadata?.deletionTimestamp) await api.deleteVolume(ref.namespace, name);
      }
      await this.event(
        ref,
        'Normal',
        'VolumesDeleted',
        `deletionPolicy Delete: deleted ${volumes.length} node volume${volumes.length === 1 ? '' : 's'}`,
      );
    } else {
      const volumes = await api.listNodeVolumes(ref.namespace, ref.name);
      await this.event(
        ref,
        'Normal',
        'VolumesRetained',
        `deletionPolicy Retain: kept ${volumes.length} node volume${volumes.length === 1 ? '' : 's'}${
          volumes.length > 0 ? ` (${volumes.map((v) => v.metadata?.name).join(', ')})` : ''
        }`,
      );
    }
    if (redisUrl) {
      // Left in Redis, the map would be read by the nodes and gateways of a KVCluster created
      // again under this name (they read Redis first), with this cluster's nodes and epoch.
      try {
        await owners.removeFastCopy(ref, redisUrl);
      } catch (err) {
        if (!(err instanceof MetadataError)) throw err;
        await this.event(
          ref,
          'Warning',
          'MapCopyNotRemoved',
          `could not remove the partition map from Redis (${err.message}); a KVCluster created again as ${ref.name} would read it until it is deleted`,
        );
      }
    }
    try {
      await api.setFinalizers(
        kv,
        finalizers.filter((f) => f !== FINALIZER),
      );
    } catch (err) {
      if (isConflict(err)) return { result: 'conflict' };
      if (isNotFound(err)) return { result: 'gone' };
      throw err;
    }
    this.opts.events.forget(ref.uid);
    this.opts.log.info({ cluster: key, deletionPolicy: policy }, 'KVCluster released');
    return { result: 'finalized' };
  }

  private async observe(cluster: string, pods: readonly V1Pod[]): Promise<Map<string, ObservedNode>> {
    const zones = new Map<string, string | undefined>();
    for (const nodeName of new Set(pods.map((p) => p.spec?.nodeName).filter((n): n is string => !!n))) {
      zones.set(nodeName, await this.opts.api.nodeZone(nodeName));
    }
    return observeNodes(cluster, pods, (pod) =>
      pod.spec?.nodeName ? zones.get(pod.spec.nodeName) : undefined,
    );
  }

  private async serviceMonitorAvailable(ref: ClusterRef, spec: KVClusterSpec): Promise<boolean> {
    const available = await this.opts.api.serviceMonitorsAvailable();
    if (spec.monitoring.serviceMonitor.enabled && !available) {
      await this.event(
        ref,
        'Warning',
        'ServiceMonitorUnavailable',
        'spec.monitoring.serviceMonitor.enabled is set but this cluster has no monitoring.coreos.com/v1 ServiceMonitor CRD',
      );
    }
    return available;
  }

  /**
   * Writes status when it says something new; fields that went away are removed (null). Returns
   * the object as stored afterwards (a status write changes its resourceVersion).
   */
  private async writeStatus(kv: KVClusterObject, status: KVClusterStatus): Promise<KVClusterObject> {
    if (sameStatus(status, kv.status)) return kv;
    const patch: Record<string, unknown> = { ...status };
    for (const field of Object.keys(kv.status ?? {})) if (!(field in status)) patch[field] = null;
    try {
      return await this.opts.api.patchStatus(kv.metadata.namespace, kv.metadata.name, patch);
    } catch (err) {
      // Deleted since it was read: there is no status left to write.
      if (!isNotFound(err)) throw err;
      return kv;
    }
  }

  private event(ref: ClusterRef, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    return this.opts.events.record(ref, type, reason, message);
  }
}

function highestOrdinal(cluster: string, map: PartitionMap | undefined): number {
  let highest = -1;
  for (const node of map?.nodes ?? []) highest = Math.max(highest, nodeOrdinal(cluster, node.id) ?? -1);
  return highest;
}
