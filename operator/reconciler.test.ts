import { MetadataError } from '../common/metadata-store';
import type {
  KubernetesObject,
  V1PersistentVolumeClaim,
  V1Pod,
  V1Secret,
  V1StatefulSet,
} from '@kubernetes/client-node';
import pino from 'pino';
import { MemoryMetadataStore } from '../common/metadata-store';
import { validatePartitionMap } from '../common/partition-map';
import { Rebalancer } from '../common/rebalancer';
import type { KVClusterObject } from './kube-api';
import type { MapOwner } from './map-owners';
import { clusterKey } from './map-owners';
import { Reconciler, type ReconcilerApi, type ReconcilerOptions } from './reconciler';
import type { ClusterRef } from './specs/names';

/*
 * The reconciler's decisions with the API server and the map owners faked in memory (the e2e
 * suite e2e/k8s/operator.test.ts runs the same paths against a real API server). Covered here:
 * what a real API server never lets through (a spec its schema refuses), deletion policies, and
 * a map the operator cannot drive.
 */

const log = pino({ level: 'silent' });
const NS = 'prod';

class FakeApi implements ReconcilerApi {
  kv: KVClusterObject | undefined;
  applied: KubernetesObject[] = [];
  statusWrites: Array<Record<string, unknown>> = [];
  pods: V1Pod[] = [];
  volumes: V1PersistentVolumeClaim[] = [];
  deleted: string[] = [];
  statefulSet: V1StatefulSet | undefined;

  async getKVCluster(): Promise<KVClusterObject | undefined> {
    return this.kv ? structuredClone(this.kv) : undefined;
  }
  async setFinalizers(_object: KVClusterObject, finalizers: readonly string[]): Promise<void> {
    const kv = this.mustExist();
    kv.metadata.finalizers = [...finalizers];
    // What the API server does with a deleted object whose last finalizer goes.
    if (kv.metadata.deletionTimestamp && finalizers.length === 0) this.kv = undefined;
  }
  async patchStatus(_ns: string, _name: string, status: Record<string, unknown>): Promise<KVClusterObject> {
    const kv = this.mustExist();
    this.statusWrites.push(status);
    const merged: Record<string, unknown> = { ...(kv.status ?? {}) };
    for (const [k, v] of Object.entries(status)) {
      if (v === null) delete merged[k];
      else merged[k] = v;
    }
    kv.status = merged;
    return structuredClone(kv);
  }
  async apply(object: KubernetesObject): Promise<KubernetesObject> {
    this.applied.push(object);
    if (object.kind === 'StatefulSet') this.statefulSet = object as V1StatefulSet;
    return object;
  }
  async deleteIfExists(object: KubernetesObject): Promise<boolean> {
    this.deleted.push(`${object.kind}/${object.metadata?.name}`);
    return true;
  }
  async getStatefulSet(): Promise<V1StatefulSet | undefined> {
    return this.statefulSet;
  }
  async listNodePods(): Promise<V1Pod[]> {
    return this.pods;
  }
  async listNodeVolumes(): Promise<V1PersistentVolumeClaim[]> {
    return this.volumes;
  }
  async deleteVolume(_ns: string, name: string): Promise<void> {
    this.deleted.push(`PersistentVolumeClaim/${name}`);
  }
  async serviceMonitorsAvailable(): Promise<boolean> {
    return false;
  }
  async nodeZone(): Promise<string | undefined> {
    return undefined;
  }
  secrets = new Map<string, V1Secret>();
  async getSecret(_ns: string, name: string): Promise<V1Secret | undefined> {
    return this.secrets.get(name);
  }
  async createSecret(secret: V1Secret): Promise<V1Secret> {
    const name = secret.metadata?.name ?? '';
    if (this.secrets.has(name)) throw new Error(`Secret ${name} exists`);
    this.secrets.set(name, secret);
    return secret;
  }
  private mustExist(): KVClusterObject {
    if (!this.kv) throw new Error('the KVCluster does not exist');
    return this.kv;
  }
}

/** Map owners on an in-memory store, with a real Rebalancer. */
class FakeOwners {
  readonly owners = new Map<string, MapOwner>();
  readonly stores = new Map<string, MemoryMetadataStore>();
  stopped: string[] = [];
  /** removeFastCopy calls, as `<cluster> <redis url>`; a url in `failing` throws */
  removedFastCopies: string[] = [];
  failing = new Set<string>();

  store(cluster: string): MemoryMetadataStore {
    let store = this.stores.get(cluster);
    if (!store) this.stores.set(cluster, (store = new MemoryMetadataStore({ cluster, log })));
    return store;
  }
  async ensure(
    cluster: ClusterRef,
    redisUrl: string | undefined,
    internalToken: string | undefined,
  ): Promise<MapOwner> {
    const key = clusterKey(cluster);
    const existing = this.owners.get(key);
    if (existing) return existing;
    const store = this.store(cluster.name);
    const rebalancer = await Rebalancer.start({ store, log, rpcTimeoutMs: 100, pollIntervalMs: 60_000 });
    const owner: MapOwner = { cluster, store, rebalancer, redisUrl, internalToken };
    this.owners.set(key, owner);
    return owner;
  }
  get(key: string): MapOwner | undefined {
    return this.owners.get(key);
  }
  async stop(key: string): Promise<void> {
    const owner = this.owners.get(key);
    if (!owner) return;
    this.owners.delete(key);
    this.stopped.push(key);
    await owner.rebalancer.stop();
  }
  async removeFastCopy(cluster: ClusterRef, redisUrl: string): Promise<boolean> {
    if (this.failing.has(redisUrl)) throw new MetadataError('unavailable', `cannot reach ${redisUrl}`, {});
    // Only once its owner is stopped: a running rebalancer could publish the map again.
    expect(this.owners.has(clusterKey(cluster))).toBe(false);
    this.removedFastCopies.push(`${cluster.name} ${redisUrl}`);
    return true;
  }
}

interface RecordedEvent {
  type: string;
  reason: string;
  message: string;
}

let api: FakeApi;
let owners: FakeOwners;
let events: RecordedEvent[];
let reconciler: Reconciler;

beforeEach(() => {
  api = new FakeApi();
  owners = new FakeOwners();
  events = [];
  const eventSink: ReconcilerOptions['events'] = {
    record: async (_ref, type, reason, message) => {
      events.push({ type, reason, message });
    },
    forget: () => undefined,
  };
  reconciler = new Reconciler({
    api,
    owners,
    events: eventSink,
    log,
    now: () => new Date('2026-01-01T00:00:00Z'),
  });
});

afterEach(async () => {
  for (const key of [...owners.owners.keys()]) await owners.stop(key);
});

function kvcluster(
  spec: Record<string, unknown>,
  extra: Partial<KVClusterObject['metadata']> = {},
): KVClusterObject {
  return {
    apiVersion: 'kvstore.io/v1alpha1',
    kind: 'KVCluster',
    metadata: { name: 'demo', namespace: NS, uid: 'uid-1', generation: 2, resourceVersion: '10', ...extra },
    spec,
  };
}

function nodePod(k: number, ip?: string): V1Pod {
  return {
    metadata: { name: `demo-node-${k}`, namespace: NS },
    status: ip
      ? { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] }
      : { phase: 'Pending' },
  };
}

const reasons = (): string[] => events.map((e) => e.reason);

describe('Reconciler', () => {
  test('a new cluster: finalizer, every object applied, Creating until the pods have IPs, then the map', async () => {
    api.kv = kvcluster({ replicas: 3, partitions: 16 });
    api.pods = [nodePod(0), nodePod(1), nodePod(2)];
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'done' });
    expect(api.kv?.metadata.finalizers).toEqual(['kvstore.io/finalizer']);
    expect(api.applied.map((o) => o.kind)).toEqual([
      // the API keys of the generated admin key (its token and the internal token are created once)
      'Secret',
      'ServiceAccount',
      'Role',
      'RoleBinding',
      'Service',
      'StatefulSet',
      'PodDisruptionBudget',
      'Deployment',
      'Service',
    ]);
    expect(api.statefulSet?.spec?.replicas).toBe(3);
    expect(api.kv?.status).toMatchObject({ phase: 'Creating', observedGeneration: 2, replicas: 0 });
    expect(reasons()).toEqual(['Created']);
    expect(await owners.store('demo').load()).toBeUndefined();

    api.pods = [nodePod(0, '10.0.0.1'), nodePod(1, '10.0.0.2'), nodePod(2, '10.0.0.3')];
    await reconciler.reconcile(NS, 'demo');
    const map = await owners.store('demo').load();
    expect(map?.nodes.map((n) => n.address)).toEqual(['10.0.0.1:7001', '10.0.0.2:7001', '10.0.0.3:7001']);
    expect(map?.partitionCount).toBe(16);
    expect(reasons()).toContain('PartitionMapCreated');
    // Pods are Ready (faked): the cluster runs.
    expect(api.kv?.status).toMatchObject({ phase: 'Running', mapEpoch: 1, replicas: 3, readyReplicas: 3 });

    // Nothing changed: nothing is written again.
    const writes = api.statusWrites.length;
    await reconciler.reconcile(NS, 'demo');
    expect(api.statusWrites).toHaveLength(writes);
  });

  test('a spec the schema refuses: a Warning and a status, nothing applied, no finalizer', async () => {
    api.kv = kvcluster({ replicas: 2, replicationFactor: 3 });
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'invalid' });
    expect(api.applied).toEqual([]);
    expect(api.kv?.metadata.finalizers).toBeUndefined();
    expect(events).toEqual([
      {
        type: 'Warning',
        reason: 'InvalidSpec',
        message: expect.stringMatching(/replicationFactor must not exceed replicas/),
      },
    ]);
    const ready = api.kv?.status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(api.kv?.status?.observedGeneration).toBe(2);
  });

  test('a map it did not make: scaling is blocked and the StatefulSet never shrinks', async () => {
    api.kv = kvcluster({ replicas: 3, partitions: 4, replicationFactor: 2 });
    await owners.store('demo').compareAndSet(
      validatePartitionMap({
        cluster: 'demo',
        epoch: 3,
        partitionCount: 4,
        replicationFactor: 2,
        nodes: [
          { id: 'n1', address: '10.1.0.1:7001' },
          { id: 'n2', address: '10.1.0.2:7001' },
        ],
        partitions: [
          ['n1', 'n2'],
          ['n2', 'n1'],
          ['n1', 'n2'],
          ['n2', 'n1'],
        ],
        moves: [],
      }),
      undefined,
    );
    api.statefulSet = { spec: { replicas: 5, selector: {}, serviceName: 'demo-nodes', template: {} } };
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'done' });
    expect(reasons()).toContain('ScalingBlocked');
    expect(api.statefulSet?.spec?.replicas).toBe(5);
    const rebalancing = api.kv?.status?.conditions?.find((c) => c.type === 'Rebalancing');
    expect(rebalancing).toMatchObject({ status: 'False', reason: 'ScalingBlocked' });
    expect(rebalancing?.message).toMatch(/n1, n2/);
  });

  test('deletion with Retain: the map owner stops, volumes stay, the finalizer goes', async () => {
    api.kv = kvcluster({ deletionPolicy: 'Retain' });
    await reconciler.reconcile(NS, 'demo');
    expect(owners.owners.size).toBe(1);
    api.kv = { ...api.kv, metadata: { ...api.kv.metadata, deletionTimestamp: new Date() } };
    api.volumes = [{ metadata: { name: 'data-demo-node-0' } }];
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'finalized' });
    expect(owners.stopped).toEqual([`${NS}/demo`]);
    expect(api.deleted).toEqual([]);
    expect(api.kv).toBeUndefined();
    expect(events.at(-1)).toMatchObject({
      reason: 'VolumesRetained',
      message: expect.stringMatching(/data-demo-node-0/),
    });
    // Gone: a later reconcile has nothing to do.
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'gone' });
  });

  test("deletion removes the map from the cluster's Redis after its owner stops; an unreachable Redis is a Warning", async () => {
    api.kv = kvcluster({ redis: { url: 'redis://cache:6379' } });
    await reconciler.reconcile(NS, 'demo');
    api.kv = { ...api.kv, metadata: { ...api.kv.metadata, deletionTimestamp: new Date() } };
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'finalized' });
    expect(owners.removedFastCopies).toEqual(['demo redis://cache:6379']);

    // Without Redis there is nothing to remove.
    owners.removedFastCopies = [];
    api.kv = kvcluster({}, { finalizers: ['kvstore.io/finalizer'], deletionTimestamp: new Date() });
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'finalized' });
    expect(owners.removedFastCopies).toEqual([]);

    // Redis away: the deletion still finishes, and says what it left behind.
    owners.failing.add('redis://gone:6379');
    api.kv = kvcluster(
      { redis: { url: 'redis://gone:6379' } },
      { finalizers: ['kvstore.io/finalizer'], deletionTimestamp: new Date() },
    );
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'finalized' });
    expect(events.find((e) => e.reason === 'MapCopyNotRemoved')).toMatchObject({
      type: 'Warning',
      message: expect.stringMatching(/cannot reach redis:\/\/gone:6379/),
    });
  });

  test('deletion with Delete: the StatefulSet, then its volumes, then the finalizer', async () => {
    api.kv = kvcluster(
      { deletionPolicy: 'Delete' },
      { finalizers: ['kvstore.io/finalizer', 'someone.else/keep'], deletionTimestamp: new Date() },
    );
    api.volumes = [
      { metadata: { name: 'data-demo-node-0' } },
      { metadata: { name: 'data-demo-node-1', deletionTimestamp: new Date() } },
    ];
    expect(await reconciler.reconcile(NS, 'demo')).toEqual({ result: 'finalized' });
    expect(api.deleted).toEqual(['StatefulSet/demo-node', 'PersistentVolumeClaim/data-demo-node-0']);
    // Only our finalizer goes.
    expect(api.kv?.metadata.finalizers).toEqual(['someone.else/keep']);
    expect(api.kv?.status?.phase).toBe('Deleting');
    expect(reasons()).toContain('VolumesDeleted');
  });
});
