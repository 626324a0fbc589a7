import { createHash } from 'node:crypto';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import pino from 'pino';
import { ConfigMapMetadataStore } from '../../common/configmap-metadata-store';
import type { PartitionMap } from '../../common/partition-map';
import { IDENTITY_HEADER, identity } from '../../common/version';
import { completeMoves } from '../../common/rebalance-plan';
import type { KVClusterStatus } from '../../crds/kvcluster-spec';
import { Operator, type OperatorOptions } from '../../operator/operator';
import {
  runTool,
  startControlPlane,
  type CommandResult,
  type ControlPlane,
  eventually,
  runToolOk,
} from './control-plane';

/*
 * The operator against a real kube-apiserver and kube-controller-manager (e2e/k8s/control-plane.ts):
 * the StatefulSet and Deployment controllers, the garbage collector and the PVC protection
 * controller are real. The operator runs in this process, with the test's admin kubeconfig.
 *
 * There is no kubelet: pods are created and stay Pending, without an IP. Where a test needs node
 * pods to run, it writes their status itself through the status subresource (Running, a pod IP,
 * Ready), standing in for a kubelet; the next issue brings a process-backed node agent that runs
 * real node processes as pods. Without node processes no partition is ever streamed, so the
 * scaling test checks the bookkeeping (plans in the map, StatefulSet sizes, status) and, where a
 * move has to finish, finishes it in the map itself, standing in for the nodes.
 *
 * The tests share one control plane and run in order.
 */

const BUILD_AND_START_TIMEOUT_MS = 40 * 60_000; // a first build of the binaries; cached, ~10 s
const TEST_TIMEOUT_MS = 3 * 60_000;
/** The operators' resync interval here (startOperator). */
const RESYNC_MS = 5000;
const repoRoot = path.resolve(__dirname, '..', '..');
const CRD_FILE = path.join(repoRoot, 'crds', 'kvcluster.yaml');
const NS = 'kv-op';
const LEASE_NS = 'kvstore-system';
const CLUSTER_LABELS =
  'app.kubernetes.io/name=kvstore,app.kubernetes.io/instance=demo,app.kubernetes.io/component=node';

const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' });

let cp: ControlPlane | undefined;
let kc: KubeConfig;
let core: CoreV1Api;
const operators: Operator[] = [];

beforeAll(async () => {
  cp = await startControlPlane();
  kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  await kubectlOk(['apply', '-f', CRD_FILE]);
  await kubectlOk(['wait', '--for=condition=Established', 'crd/kvclusters.kvstore.io', '--timeout=90s']);
  await kubectlOk(['create', 'namespace', NS]);
  await kubectlOk(['create', 'namespace', LEASE_NS]);
  operators.push(await startOperator('op-a'));
}, BUILD_AND_START_TIMEOUT_MS);

afterAll(async () => {
  await Promise.all(operators.map((op) => op.stop()));
  await cp?.stop();
}, 60_000);

/** An operator in this process; short lease times so hand-overs take seconds. */
function startOperator(identity: string, extra: Partial<OperatorOptions> = {}): Promise<Operator> {
  return Operator.start({
    kubeConfig: kc,
    log: log.child({ operator: identity }),
    identity,
    leaseNamespace: LEASE_NS,
    leaseDurationMs: 4000,
    renewDeadlineMs: 3000,
    retryPeriodMs: 500,
    metricsListen: { host: '127.0.0.1', port: 0 },
    resyncIntervalMs: RESYNC_MS,
    rebalancePollIntervalMs: 500,
    // Pod IPs here are documentation addresses nobody answers on: give up on them quickly.
    rpcTimeoutMs: 1000,
    backoffBaseMs: 100,
    ...extra,
  });
}

function plane(): ControlPlane {
  if (!cp) throw new Error('the control plane did not start (see beforeAll)');
  return cp;
}

function kubectlOk(args: readonly string[], input?: string): Promise<string> {
  return runToolOk(plane(), 'kubectl', args, input);
}

function kubectl(args: readonly string[], input?: string): Promise<CommandResult> {
  return runTool(plane(), 'kubectl', args, input);
}

/** `kubectl get -o json` of one object in NS; undefined when it does not exist. */
async function getJson<T>(kind: string, name: string): Promise<T | undefined> {
  const result = await kubectl(['-n', NS, 'get', kind, name, '-o', 'json']);
  if (result.code !== 0) {
    if (/NotFound/.test(result.stderr)) return undefined;
    throw new Error(`kubectl get ${kind} ${name} exited ${result.code}: ${result.stderr}`);
  }
  return JSON.parse(result.stdout) as T;
}

function kvcluster(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: 'kvstore.io/v1alpha1',
    kind: 'KVCluster',
    metadata: { name, namespace: NS },
    spec,
  });
}

interface Owned {
  metadata: {
    name: string;
    uid: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    ownerReferences?: Array<{
      kind: string;
      name: string;
      uid: string;
      controller?: boolean;
      blockOwnerDeletion?: boolean;
    }>;
    finalizers?: string[];
    deletionTimestamp?: string;
    generation?: number;
  };
}
interface StoredKVCluster extends Owned {
  status?: KVClusterStatus;
}
interface StatefulSet extends Owned {
  spec: {
    replicas: number;
    podManagementPolicy: string;
    serviceName: string;
    template: {
      spec: {
        containers: Array<{
          command: string[];
          readinessProbe: { httpGet: { path: string; port: string } };
          securityContext: Record<string, unknown>;
        }>;
      };
    };
    volumeClaimTemplates: Array<{ metadata: { name: string } }>;
  };
}

async function cluster(name = 'demo'): Promise<StoredKVCluster> {
  const kv = await getJson<StoredKVCluster>('kvcluster', name);
  if (!kv) throw new Error(`KVCluster ${name} does not exist`);
  return kv;
}

function expectOwnedBy(object: Owned, owner: Owned): void {
  expect(object.metadata.ownerReferences).toEqual([
    expect.objectContaining({
      kind: 'KVCluster',
      name: owner.metadata.name,
      uid: owner.metadata.uid,
      controller: true,
      blockOwnerDeletion: true,
    }),
  ]);
  expect(object.metadata.labels).toMatchObject({
    'app.kubernetes.io/name': 'kvstore',
    'app.kubernetes.io/instance': owner.metadata.name,
    'app.kubernetes.io/managed-by': 'kvstore-operator',
  });
}

/**
 * Stands in for a kubelet (this control plane has none): marks a pod Running and Ready with this
 * IP, through the status subresource, as a kubelet would once its containers pass readiness.
 */
async function fakeKubelet(name: string, ip: string): Promise<void> {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  await kubectlOk([
    '-n',
    NS,
    'patch',
    'pod',
    name,
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({
      status: {
        phase: 'Running',
        podIP: ip,
        podIPs: [{ ip }],
        conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: now }],
      },
    }),
  ]);
}

async function waitForPod(name: string): Promise<V1Pod> {
  return eventually(`pod ${name}`, async () => {
    try {
      return await core.readNamespacedPod({ name, namespace: NS });
    } catch {
      return undefined;
    }
  });
}

/** The map as the operator stored it (read through the same ConfigMap store the nodes use). */
async function storedMap(clusterName = 'demo'): Promise<PartitionMap | undefined> {
  const store = new ConfigMapMetadataStore({ kube: kc, namespace: NS, cluster: clusterName, log });
  try {
    return await store.load();
  } finally {
    await store.close();
  }
}

/**
 * Stands in for the node processes: completes every move of the map (what the rebalancer does
 * once the new replicas have streamed their partitions and their hash trees match).
 */
async function completeAllMoves(clusterName = 'demo'): Promise<PartitionMap> {
  const store = new ConfigMapMetadataStore({ kube: kc, namespace: NS, cluster: clusterName, log });
  try {
    for (let attempt = 0; attempt < 20; attempt++) {
      const map = await store.load();
      if (!map) throw new Error('no map');
      const next = completeMoves(map, map.moves);
      if (next === map) return map;
      if (await store.compareAndSet(next, map.epoch)) return next;
    }
    throw new Error('the map kept changing');
  } finally {
    await store.close();
  }
}

const ip = (k: number): string => `192.0.2.${10 + k}`;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Every kind of object the operator makes for a KVCluster (no ServiceMonitor CRD here). */
const OWNED_KINDS = [
  'statefulset',
  'service',
  'deployment',
  'poddisruptionbudget',
  'serviceaccount',
  'role',
  'rolebinding',
  'configmap',
];

/** The node labels of a cluster: its StatefulSet's selector, which labels the pods and the claims. */
const nodeLabels = (clusterName: string): string => CLUSTER_LABELS.replace('=demo,', `=${clusterName},`);

interface Versioned {
  kind: string;
  metadata: { name: string; resourceVersion: string; generation?: number };
}

/**
 * `Kind/name` -> resourceVersion (and generation, where the kind has one) of every object the
 * operator made for a cluster: any write to one, by anyone, changes its resourceVersion.
 */
async function ownedVersions(clusterName: string): Promise<Record<string, string>> {
  const list = JSON.parse(
    await kubectlOk([
      '-n',
      NS,
      'get',
      OWNED_KINDS.join(','),
      '-l',
      `app.kubernetes.io/instance=${clusterName},app.kubernetes.io/managed-by=kvstore-operator`,
      '-o',
      'json',
    ]),
  ) as { items: Versioned[] };
  return Object.fromEntries(
    list.items.map((o) => [
      `${o.kind}/${o.metadata.name}`,
      `rv=${o.metadata.resourceVersion}${o.metadata.generation === undefined ? '' : ` generation=${o.metadata.generation}`}`,
    ]),
  );
}

/** The Events about one KVCluster: `reason: message` by event name. */
async function clusterEvents(clusterName: string): Promise<Record<string, string>> {
  const list = JSON.parse(
    await kubectlOk([
      '-n',
      NS,
      'get',
      'events',
      '--field-selector',
      `involvedObject.kind=KVCluster,involvedObject.name=${clusterName}`,
      '-o',
      'json',
    ]),
  ) as { items: Array<{ metadata: { name: string }; reason: string; message: string }> };
  return Object.fromEntries(list.items.map((e) => [e.metadata.name, `${e.reason}: ${e.message}`]));
}

/** The node volumes of a cluster (its StatefulSet's and any labelled alike): name -> being deleted. */
async function nodeVolumes(clusterName: string): Promise<Record<string, boolean>> {
  const list = JSON.parse(
    await kubectlOk(['-n', NS, 'get', 'pvc', '-l', nodeLabels(clusterName), '-o', 'json']),
  ) as { items: Array<{ metadata: { name: string; deletionTimestamp?: string } }> };
  return Object.fromEntries(
    list.items.map((p) => [p.metadata.name, p.metadata.deletionTimestamp !== undefined]),
  );
}

/** A volume labelled as the StatefulSet labels its claims (no provisioner binds it here). */
async function labelledVolume(clusterName: string, name: string): Promise<void> {
  await kubectlOk(
    ['apply', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: {
        name,
        namespace: NS,
        labels: Object.fromEntries(
          nodeLabels(clusterName)
            .split(',')
            .map((kv) => kv.split('=')),
        ),
      },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
    }),
  );
}

/** The instance holding the lease (the one that reconciles). */
function leader(): Operator {
  const op = operators.find((o) => o.isLeader());
  if (!op) throw new Error('no operator instance leads');
  return op;
}

async function scrapeMetrics(op: Operator): Promise<string> {
  const address = op.metricsAddress();
  if (!address) throw new Error('the operator serves no metrics');
  const response = await fetch(`http://127.0.0.1:${address.port}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  // The operator's port names itself, as every kvstore endpoint does (common/version.ts).
  expect(response.headers.get(IDENTITY_HEADER)).toBe(identity('operator'));
  return response.text();
}

describe('the kvstore operator on a real API server', () => {
  test(
    'turns a KVCluster into a StatefulSet, Services, a gateway Deployment and a PDB, owned by it, with a finalizer',
    async () => {
      await kubectlOk(
        ['apply', '-f', '-'],
        kvcluster('demo', { replicas: 3, partitions: 64, deletionPolicy: 'Delete' }),
      );
      const sts = await eventually('StatefulSet demo-node', () =>
        getJson<StatefulSet>('statefulset', 'demo-node'),
      );
      const kv = await cluster();
      expect(kv.metadata.finalizers).toContain('kvstore.io/finalizer');
      expectOwnedBy(sts, kv);
      expect(sts.spec).toMatchObject({
        replicas: 3,
        podManagementPolicy: 'Parallel',
        serviceName: 'demo-nodes',
      });
      expect(sts.spec.volumeClaimTemplates.map((t) => t.metadata.name)).toEqual(['data']);
      const container = sts.spec.template.spec.containers[0];
      expect(container.command).toEqual([
        'node',
        'dist/node/main.js',
        '--id=$(POD_NAME)',
        '--cluster=demo',
        '--data-dir=/data',
        '--listen=0.0.0.0:7001',
        '--admin-listen=0.0.0.0:7101',
        `--kube-namespace=${NS}`,
        '--internal-token-file=/etc/kvstore/internal/token',
      ]);
      expect(container.readinessProbe.httpGet).toMatchObject({ path: '/readyz', port: 'admin' });
      // Generated once, owned by the KVCluster: the nodes' internal token, an admin API key for the
      // user, and the gateways' key file holding only its hash.
      type SecretJson = Owned & { data: Record<string, string> };
      const decoded = (sec: SecretJson, key: string): string =>
        Buffer.from(sec.data[key] ?? '', 'base64').toString('utf8');
      const internal = await eventually('Secret demo-internal-token', () =>
        getJson<SecretJson>('secret', 'demo-internal-token'),
      );
      expectOwnedBy(internal, kv);
      expect(decoded(internal, 'token')).toMatch(/^[0-9a-f]{64}$/);
      const admin = await eventually('Secret demo-admin-token', () =>
        getJson<SecretJson>('secret', 'demo-admin-token'),
      );
      expectOwnedBy(admin, kv);
      const adminKey = decoded(admin, 'token');
      expect(adminKey).toMatch(/^kvs_/);
      const keys = await eventually('Secret demo-api-keys', () =>
        getJson<SecretJson>('secret', 'demo-api-keys'),
      );
      expectOwnedBy(keys, kv);
      expect(JSON.parse(decoded(keys, 'keys.json'))).toEqual({
        keys: [{ id: 'admin', role: 'admin', sha256: createHash('sha256').update(adminKey).digest('hex') }],
      });
      expect(container.securityContext).toMatchObject({
        runAsNonRoot: true,
        runAsUser: 1000,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });

      const headless = await eventually('Service demo-nodes', () =>
        getJson<
          Owned & {
            spec: {
              clusterIP: string;
              publishNotReadyAddresses: boolean;
              ports: Array<{ name: string; port: number }>;
            };
          }
        >('service', 'demo-nodes'),
      );
      expectOwnedBy(headless, kv);
      expect(headless.spec.clusterIP).toBe('None');
      expect(headless.spec.publishNotReadyAddresses).toBe(true);
      expect(headless.spec.ports.map((p) => [p.name, p.port])).toEqual([
        ['rpc', 7001],
        ['admin', 7101],
      ]);
      const gateway = await eventually('Deployment demo-gateway', () =>
        getJson<Owned & { spec: { replicas: number } }>('deployment', 'demo-gateway'),
      );
      expectOwnedBy(gateway, kv);
      expect(gateway.spec.replicas).toBe(2);
      const service = await eventually('Service demo', () =>
        getJson<Owned & { spec: { type: string; ports: Array<{ port: number; targetPort: string }> } }>(
          'service',
          'demo',
        ),
      );
      expectOwnedBy(service, kv);
      expect(service.spec).toMatchObject({
        type: 'ClusterIP',
        ports: [expect.objectContaining({ port: 80, targetPort: 'http' })],
      });
      const pdb = await eventually('PodDisruptionBudget demo-node', () =>
        getJson<Owned & { spec: { maxUnavailable: number } }>('pdb', 'demo-node'),
      );
      expectOwnedBy(pdb, kv);
      expect(pdb.spec.maxUnavailable).toBe(1);

      // No pod has an IP (no kubelet), so there is no map yet: the cluster is being created.
      const status = await eventually('status of a cluster being created', async () => {
        const s = (await cluster()).status;
        return s?.phase === 'Creating' ? s : undefined;
      });
      expect(status).toMatchObject({
        observedGeneration: kv.metadata.generation,
        replicas: 0,
        readyReplicas: 0,
        selector: CLUSTER_LABELS,
      });
      expect(status.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
        status: 'False',
        reason: 'NoPartitionMap',
      });
      expect(await storedMap()).toBeUndefined();
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'writes the partition map once every node pod has an IP, with the nodes at those IPs, and reports Running',
    async () => {
      // The StatefulSet controller creates the three pods at once (podManagementPolicy Parallel).
      for (let k = 0; k < 3; k++) await waitForPod(`demo-node-${k}`);
      await fakeKubelet('demo-node-0', ip(0));
      await fakeKubelet('demo-node-1', ip(1));
      // Two of three pods with an IP: still no map.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(await storedMap()).toBeUndefined();
      await fakeKubelet('demo-node-2', ip(2));

      const map = await eventually('the partition map', () => storedMap());
      expect(map).toMatchObject({
        cluster: 'demo',
        epoch: 1,
        partitionCount: 64,
        replicationFactor: 3,
        moves: [],
      });
      expect(map.nodes).toEqual([0, 1, 2].map((k) => ({ id: `demo-node-${k}`, address: `${ip(k)}:7001` })));
      const configMap = await eventually('ConfigMap demo-partition-map', () =>
        getJson<Owned>('configmap', 'demo-partition-map'),
      );
      expectOwnedBy(configMap, await cluster());

      const status = await eventually('status Running', async () => {
        const s = (await cluster()).status;
        return s?.phase === 'Running' ? s : undefined;
      });
      expect(status).toMatchObject({ mapEpoch: 1, replicas: 3, readyReplicas: 3, partitionsMoving: 0 });
      expect(status.rebalance).toBeUndefined();
      const conditions = Object.fromEntries((status.conditions ?? []).map((c) => [c.type, c]));
      expect(conditions.Ready).toMatchObject({ status: 'True', reason: 'AllNodesReady' });
      expect(conditions.Rebalancing).toMatchObject({ status: 'False', reason: 'Balanced' });
      expect(conditions.Degraded).toMatchObject({ status: 'False' });

      // printer columns read the status
      const table = await kubectlOk(['-n', NS, 'get', 'kvc', 'demo']);
      expect(table).toMatch(/demo\s+3\s+3\s+Running\s+1\s+0/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'a pod that comes back with another IP gets its new address in a new map epoch',
    async () => {
      const before = await cluster();
      const readySince = before.status?.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime;
      await fakeKubelet('demo-node-2', '192.0.2.99');
      const map = await eventually('map epoch 2', async () => {
        const m = await storedMap();
        return m && m.epoch >= 2 ? m : undefined;
      });
      expect(map.epoch).toBe(2);
      expect(map.nodes.find((n) => n.id === 'demo-node-2')?.address).toBe('192.0.2.99:7001');
      expect(map.nodes.find((n) => n.id === 'demo-node-0')?.address).toBe(`${ip(0)}:7001`);
      const status = await eventually('status at epoch 2', async () => {
        const s = (await cluster()).status;
        return s?.mapEpoch === 2 ? s : undefined;
      });
      // Ready stayed True throughout: its transition time does not move.
      expect(status.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime).toBe(readySince);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'reconciling again and again changes nothing: no write to an owned object, the KVCluster or its status, no new event',
    async () => {
      const op = leader();
      await eventually('status Running at map epoch 2', async () => {
        const s = (await cluster()).status;
        return s?.phase === 'Running' && s.mapEpoch === 2 ? s : undefined;
      });
      // Steady first: the previous test's pod change has been through the operator and the
      // controllers (the StatefulSet's and the PodDisruptionBudget's status follow the pods).
      const snapshot = async (): Promise<Record<string, string>> => ({
        ...(await ownedVersions('demo')),
        'KVCluster/demo': `rv=${(await cluster()).metadata.resourceVersion}`,
      });
      let previous = await snapshot();
      let current = previous;
      for (const deadline = Date.now() + 30_000; ; previous = current) {
        await sleep(1000);
        current = await snapshot();
        if (isDeepStrictEqual(current, previous) || Date.now() > deadline) break;
      }
      // Unchanged for a second; what never settles (a write on every pass) shows in the diff.
      expect(current).toEqual(previous);
      const before = await ownedVersions('demo');
      expect(Object.keys(before).sort()).toEqual([
        'ConfigMap/demo-partition-map',
        'Deployment/demo-gateway',
        'PodDisruptionBudget/demo-node',
        'Role/demo-kvstore',
        'RoleBinding/demo-kvstore',
        'Service/demo',
        'Service/demo-nodes',
        'ServiceAccount/demo-kvstore',
        'StatefulSet/demo-node',
      ]);
      const kvBefore = await cluster();
      const eventsBefore = await clusterEvents('demo');
      const doneBefore = await op.metrics.reconcileCount('done');
      const failedBefore = (await op.metrics.reconcileCount()) - doneBefore;

      // Reconciles through the watch: an annotation the operator does not read. It is the only
      // write to the KVCluster: its resourceVersion must stay the one the last annotation made.
      let touchedVersion: string | undefined;
      for (let touch = 1; touch <= 3; touch++) {
        const count = await op.metrics.reconcileCount();
        const touched = JSON.parse(
          await kubectlOk([
            '-n',
            NS,
            'annotate',
            'kvcluster',
            'demo',
            `test.kvstore.io/touch=${touch}`,
            '--overwrite',
            '-o',
            'json',
          ]),
        ) as Versioned;
        touchedVersion = touched.metadata.resourceVersion;
        await eventually(`a reconcile after touch ${touch}`, async () =>
          (await op.metrics.reconcileCount()) > count ? true : undefined,
        );
      }
      // And through the resync, which reconciles every KVCluster every RESYNC_MS.
      const touchedAt = Date.now();
      const afterTouches = await op.metrics.reconcileCount();
      await eventually(
        'a resync',
        async () =>
          Date.now() - touchedAt > RESYNC_MS + 500 && (await op.metrics.reconcileCount()) > afterTouches
            ? true
            : undefined,
        4 * RESYNC_MS,
      );
      // Every one of them a clean pass (no error, no conflict).
      const done = await op.metrics.reconcileCount('done');
      expect(done - doneBefore).toBeGreaterThanOrEqual(4);
      expect((await op.metrics.reconcileCount()) - done).toBe(failedBefore);

      expect(await ownedVersions('demo')).toEqual(before);
      const kvAfter = await cluster();
      expect(kvAfter.status).toEqual(kvBefore.status);
      expect(kvAfter.metadata.generation).toBe(kvBefore.metadata.generation);
      expect(kvAfter.metadata.resourceVersion).toBe(touchedVersion);
      // Not even a repeated warning: a steady cluster has nothing to report.
      const eventsAfter = await clusterEvents('demo');
      expect(Object.entries(eventsAfter).filter(([name]) => !(name in eventsBefore))).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the API server refuses a replication factor above the replicas (one case; crd.test.ts covers the rest)',
    async () => {
      const result = await kubectl([
        '-n',
        NS,
        'patch',
        'kvcluster',
        'demo',
        '--type=merge',
        '-p',
        '{"spec":{"replicationFactor":5}}',
      ]);
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(/replicationFactor must not exceed replicas/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'kubectl scale: the StatefulSet grows first, the plan follows once the new pods run; scale-in keeps the drained nodes until they left the map',
    async () => {
      await kubectlOk(['-n', NS, 'scale', 'kvcluster/demo', '--replicas=5']);
      await eventually('StatefulSet at 5', async () => {
        const sts = await getJson<StatefulSet>('statefulset', 'demo-node');
        return sts?.spec.replicas === 5 ? sts : undefined;
      });
      await waitForPod('demo-node-3');
      await waitForPod('demo-node-4');
      // New pods without an IP: nothing is planned yet, and status says what it waits for.
      const waiting = await eventually('status waiting for new nodes', async () => {
        const s = (await cluster()).status;
        const c = s?.conditions?.find((x) => x.type === 'Rebalancing');
        return c?.reason === 'WaitingForNodes' ? s : undefined;
      });
      expect(waiting.phase).toBe('Rebalancing');
      expect((await storedMap())?.nodes).toHaveLength(3);

      await fakeKubelet('demo-node-3', ip(3));
      await fakeKubelet('demo-node-4', ip(4));
      const planned = await eventually('a plan to 5 nodes', async () => {
        const m = await storedMap();
        return m?.rebalance?.targetNodes.length === 5 ? m : undefined;
      });
      expect(planned.nodes.map((n) => n.id)).toEqual([0, 1, 2, 3, 4].map((k) => `demo-node-${k}`));
      expect(planned.nodes[3].address).toBe(`${ip(3)}:7001`);
      expect(planned.moves.length).toBeGreaterThan(0);
      expect(planned.moves.every((m) => m.to === 'demo-node-3' || m.to === 'demo-node-4')).toBe(true);
      expect(planned.rebalance?.movesTotal).toBe(planned.moves.length);
      // No node process streams anything here: the plan stays in flight, and status shows it.
      const rebalancing = await eventually('status of the rebalance', async () => {
        const s = (await cluster()).status;
        return s?.rebalance && s.mapEpoch === planned.epoch ? s : undefined;
      });
      expect(rebalancing).toMatchObject({
        phase: 'Rebalancing',
        replicas: 5,
        readyReplicas: 5,
        rebalance: { movesTotal: planned.moves.length, movesDone: 0, targetReplicas: 5 },
      });
      expect(rebalancing.partitionsMoving).toBe(new Set(planned.moves.map((m) => m.partition)).size);
      expect(rebalancing.conditions?.find((c) => c.type === 'Rebalancing')).toMatchObject({
        status: 'True',
        reason: 'PartitionsMoving',
      });

      // The moves finish (done here in the map, standing in for the nodes' streaming): 5 nodes hold data.
      const balanced = await completeAllMoves();
      expect(balanced.rebalance).toBeUndefined();
      expect(balanced.nodes).toHaveLength(5);
      await eventually('status Running on 5 nodes', async () => {
        const s = (await cluster()).status;
        return s?.phase === 'Running' && s.replicas === 5 && s.rebalance === undefined ? s : undefined;
      });

      // Scale-in: the drain is planned at once, the StatefulSet keeps the draining pods.
      await kubectlOk(['-n', NS, 'scale', 'kvcluster/demo', '--replicas=3']);
      const draining = await eventually('a plan to 3 nodes', async () => {
        const m = await storedMap();
        return m?.rebalance?.targetNodes.length === 3 ? m : undefined;
      });
      expect(draining.nodes).toHaveLength(5);
      expect(draining.moves.every((m) => m.from === 'demo-node-3' || m.from === 'demo-node-4')).toBe(true);
      const status = await eventually('status of the drain', async () => {
        const s = (await cluster()).status;
        return s?.rebalance?.targetReplicas === 3 ? s : undefined;
      });
      expect(status.conditions?.find((c) => c.type === 'Rebalancing')?.message).toMatch(
        /draining demo-node-3, demo-node-4/,
      );
      // Several reconciles later (resync is 5 s here), the StatefulSet still runs the drained nodes.
      await new Promise((resolve) => setTimeout(resolve, 6000));
      expect((await getJson<StatefulSet>('statefulset', 'demo-node'))?.spec.replicas).toBe(5);

      // The drained nodes' moves finish: they leave the map, then the StatefulSet shrinks.
      const done = await completeAllMoves();
      expect(done.nodes.map((n) => n.id)).toEqual(['demo-node-0', 'demo-node-1', 'demo-node-2']);
      await eventually('StatefulSet back at 3', async () => {
        const sts = await getJson<StatefulSet>('statefulset', 'demo-node');
        return sts?.spec.replicas === 3 ? sts : undefined;
      });
      await eventually('status Running on 3 nodes', async () => {
        const s = (await cluster()).status;
        return s?.phase === 'Running' && s.replicas === 3 && s.rebalance === undefined ? s : undefined;
      });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'kubectl delete with deletionPolicy Delete removes the node volumes, then the finalizer',
    async () => {
      await labelledVolume('demo', 'data-demo-node-7');
      await kubectlOk(['-n', NS, 'delete', 'kvcluster', 'demo', '--wait=false']);
      await eventually(
        'the KVCluster to go',
        async () => ((await getJson<StoredKVCluster>('kvcluster', 'demo')) === undefined ? true : undefined),
        90_000,
      );
      await eventually(
        'the node volumes to go',
        async () => (Object.keys(await nodeVolumes('demo')).length === 0 ? true : undefined),
        90_000,
      );
      // What the cluster owned goes by garbage collection.
      await eventually(
        'the gateway Deployment to go',
        async () => ((await getJson<Owned>('deployment', 'demo-gateway')) === undefined ? true : undefined),
        90_000,
      );
      const events = await kubectlOk([
        '-n',
        NS,
        'get',
        'events',
        '--field-selector',
        'involvedObject.kind=KVCluster,involvedObject.name=demo',
        '-o',
        'jsonpath={.items[*].reason}',
      ]);
      expect(events.split(' ')).toEqual(
        expect.arrayContaining(['Created', 'PartitionMapCreated', 'RebalancePlanned', 'VolumesDeleted']),
      );
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'two operator instances: only the lease holder reconciles; the other takes over when it stops',
    async () => {
      const [a] = operators;
      expect(a.isLeader()).toBe(true);
      const b = await startOperator('op-b');
      operators.push(b);
      // No deletionPolicy: the default (Retain), whose deletion the last test checks.
      await kubectlOk(['apply', '-f', '-'], kvcluster('second', { replicas: 3 }));
      await eventually('StatefulSet second-node', () => getJson<StatefulSet>('statefulset', 'second-node'));
      await new Promise((resolve) => setTimeout(resolve, 2000));
      expect(b.isLeader()).toBe(false);
      expect(await b.metrics.reconcileCount()).toBe(0);
      const lease = await getLease();
      expect(lease.spec.holderIdentity).toBe('op-a');

      // /metrics of the leader
      const metrics = await scrapeMetrics(a);
      expect(metrics).toMatch(/kvstore_operator_reconciles_total\{result="done"\} [1-9]/);
      expect(metrics).toMatch(/kvstore_operator_kvclusters_managed 1/);
      expect(metrics).toMatch(/kvstore_operator_leader 1/);

      // The leader stops (and releases the lease): the standby takes over and reconciles.
      await a.stop();
      await eventually('op-b to lead', async () => (b.isLeader() ? true : undefined), 20_000);
      expect((await getLease()).spec.holderIdentity).toBe('op-b');
      await kubectlOk(['-n', NS, 'scale', 'kvcluster/second', '--replicas=4']);
      await eventually('op-b to scale second', async () => {
        const sts = await getJson<StatefulSet>('statefulset', 'second-node');
        return sts?.spec.replicas === 4 ? sts : undefined;
      });
      expect(await b.metrics.reconcileCount()).toBeGreaterThan(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'a reconcile that fails is counted as an error, retried and reported; /metrics exports reconciles, errors, durations and the queue depth',
    async () => {
      const op = leader();
      const errorsBefore = await op.metrics.reconcileCount('error');
      // A StatefulSet of the name the operator would use, someone else's, with another selector:
      // the API server refuses to apply the operator's over it (a selector is immutable).
      await kubectlOk(
        ['apply', '-f', '-'],
        JSON.stringify({
          apiVersion: 'apps/v1',
          kind: 'StatefulSet',
          metadata: { name: 'blocked-node', namespace: NS },
          spec: {
            replicas: 0,
            serviceName: 'foreign',
            selector: { matchLabels: { app: 'foreign' } },
            template: {
              metadata: { labels: { app: 'foreign' } },
              spec: { containers: [{ name: 'c', image: 'example.invalid/foreign:1' }] },
            },
          },
        }),
      );
      await kubectlOk(['apply', '-f', '-'], kvcluster('blocked', { replicas: 3 }));
      // Retried with backoff: more than one failure.
      await eventually('failed reconciles of blocked', async () =>
        (await op.metrics.reconcileCount('error')) >= errorsBefore + 2 ? true : undefined,
      );
      const failed = await eventually('a ReconcileFailed event', async () =>
        Object.values(await clusterEvents('blocked')).find((e) => e.startsWith('ReconcileFailed: ')),
      );
      expect(failed).toMatch(new RegExp(`apply StatefulSet ${NS}/blocked-node failed with 422`));
      // Not the operator's: left as it was.
      const foreign = await getJson<StatefulSet & { spec: { selector: unknown } }>(
        'statefulset',
        'blocked-node',
      );
      expect(foreign?.metadata.ownerReferences).toBeUndefined();
      expect(foreign?.spec.selector).toEqual({ matchLabels: { app: 'foreign' } });

      const metrics = await scrapeMetrics(op);
      const sample = (series: string): number => {
        const line = metrics.split('\n').find((l) => l.startsWith(`${series} `));
        if (line === undefined) throw new Error(`/metrics has no ${series}`);
        return Number(line.slice(series.length + 1));
      };
      expect(sample('kvstore_operator_reconciles_total{result="error"}')).toBeGreaterThanOrEqual(
        errorsBefore + 2,
      );
      expect(sample('kvstore_operator_reconciles_total{result="done"}')).toBeGreaterThan(0);
      // Every reconcile is timed, the failed ones too.
      expect(sample('kvstore_operator_reconcile_duration_seconds_count')).toBeGreaterThanOrEqual(
        errorsBefore + 2,
      );
      expect(sample('kvstore_operator_reconcile_duration_seconds_bucket{le="+Inf"}')).toBe(
        sample('kvstore_operator_reconcile_duration_seconds_count'),
      );
      expect(sample('kvstore_operator_reconcile_duration_seconds_sum')).toBeGreaterThan(0);
      // Keys waiting for a worker: none for long here (a retry waits outside the queue, for its time).
      expect(sample('kvstore_operator_queue_depth')).toBeGreaterThanOrEqual(0);
      expect(metrics).toMatch(/^# TYPE kvstore_operator_queue_depth gauge$/m);
      expect(sample('kvstore_operator_leader')).toBe(1);
      expect(sample('kvstore_operator_kvclusters_managed')).toBe(2);

      // The finalizer does not need the objects: the KVCluster still goes, the StatefulSet stays.
      await kubectlOk(['-n', NS, 'delete', 'kvcluster', 'blocked', '--wait=false']);
      await eventually('blocked to go', async () =>
        (await getJson<StoredKVCluster>('kvcluster', 'blocked')) === undefined ? true : undefined,
      );
      expect(await getJson<StatefulSet>('statefulset', 'blocked-node')).toBeDefined();
      await kubectlOk(['-n', NS, 'delete', 'statefulset', 'blocked-node']);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'kubectl delete with deletionPolicy Retain (the default) keeps the node volumes; what the cluster owned goes',
    async () => {
      const kv = (await cluster('second')) as StoredKVCluster & { spec: { deletionPolicy: string } };
      expect(kv.spec.deletionPolicy).toBe('Retain');
      await labelledVolume('second', 'data-second-node-7');
      // The claims the StatefulSet controller made for its 4 pods, and ours.
      const volumes = await eventually('the node volumes of second', async () => {
        const v = await nodeVolumes('second');
        return Object.keys(v).length === 5 ? v : undefined;
      });
      expect(volumes).toEqual({
        'data-second-node-0': false,
        'data-second-node-1': false,
        'data-second-node-2': false,
        'data-second-node-3': false,
        'data-second-node-7': false,
      });

      await kubectlOk(['-n', NS, 'delete', 'kvcluster', 'second', '--wait=false']);
      await eventually(
        'the KVCluster to go',
        async () =>
          (await getJson<StoredKVCluster>('kvcluster', 'second')) === undefined ? true : undefined,
        90_000,
      );
      // What it owned goes by garbage collection: the StatefulSet too, which could otherwise still
      // touch its claims.
      for (const [kind, name] of [
        ['statefulset', 'second-node'],
        ['deployment', 'second-gateway'],
        ['configmap', 'second-partition-map'],
      ]) {
        await eventually(
          `${kind} ${name} to go`,
          async () => ((await getJson<Owned>(kind, name)) === undefined ? true : undefined),
          90_000,
        );
      }
      // Every volume is still there, none being deleted.
      expect(await nodeVolumes('second')).toEqual(volumes);
      const retained = Object.values(await clusterEvents('second')).find((e) =>
        e.startsWith('VolumesRetained: '),
      );
      expect(retained).toBe(
        'VolumesRetained: deletionPolicy Retain: kept 5 node volumes (data-second-node-0, data-second-node-1, data-second-node-2, data-second-node-3, data-second-node-7)',
      );
      expect(Object.values(await clusterEvents('second')).some((e) => e.startsWith('VolumesDeleted'))).toBe(
        false,
      );
    },
    TEST_TIMEOUT_MS,
  );
});

async function getLease(): Promise<{ spec: { holderIdentity?: string } }> {
  return JSON.parse(await kubectlOk(['-n', LEASE_NS, 'get', 'lease', 'kvstore-operator', '-o', 'json'])) as {
    spec: { holderIdentity?: string };
  };
}
