import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { AppsV1Api, CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import pino from 'pino';
import { KeyValueStoreClient } from '../../client';
import { partitionOf } from '../../common/hash';
import { HybridLogicalClock } from '../../common/hlc';
import { RpcClient, RpcError } from '../../common/rpc-client';
import { startRecordedLoad, stopAndCheckLoad, type RecordedLoad } from '../recorded-load';
import {
  ConfigMapMetadataStore,
  CONFIGMAP_MAP_KEY,
  configMapName,
} from '../../common/configmap-metadata-store';
import type { PartitionMap } from '../../common/partition-map';
import { rebalanceCounts } from '../../common/rebalance-plan';
import type { KVClusterStatus } from '../../crds/kvcluster-spec';
import { KVSTORE_VERSION } from '../../common/version';
import {
  eventually,
  runTool,
  runToolOk,
  startControlPlane,
  type ControlPlane,
  type KubeNode,
} from './control-plane';

/*
 * The user journey on real Kubernetes parts (issue 16): the control plane of e2e/k8s/start.sh with
 * one real node (node.sh: containerd, runc, the CNI bridge, kubelet, kube-proxy, CoreDNS, a storage
 * provisioner), our image built from the repository's Dockerfile (images.sh). The operator runs only
 * as the chart's Deployment, with the chart's ServiceAccount and RBAC; the managed Redis is the
 * chart's pod; every request of the tests goes through the gateway Service's ClusterIP (kube-proxy's
 * rules) or the cluster DNS name. Each step is its own test; they run in order and share one cluster.
 */

const BUILD_AND_START_TIMEOUT_MS = 60 * 60_000;
const STEP_TIMEOUT_MS = 6 * 60_000;
const repoRoot = path.resolve(__dirname, '..', '..');
const CHART = path.join(repoRoot, 'charts', 'kvstore');
const NS = 'journey';
const RELEASE_NS = 'kvstore-system';
const RF = 3;
const IMAGE = `kvstore:${KVSTORE_VERSION}`;
/** the second build the rollout step makes: same sources, another label, another tag */
const ROLLOUT_IMAGE = `${IMAGE}-rollout`;
const NODE_RPC_PORT = 7001;

const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' });
const execFileP = promisify(execFile);

let cp: ControlPlane | undefined;
let kc: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
let load: RecordedLoad | undefined;
/** the admin API key the operator generated (Secret demo-admin-token) */
let adminToken: string | undefined;
/** http://<ClusterIP of the gateway Service>:<port> */
let serviceUrl = '';

beforeAll(async () => {
  cp = await startControlPlane({ node: true });
  kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  apps = kc.makeApiClient(AppsV1Api);
}, BUILD_AND_START_TIMEOUT_MS);

afterAll(async () => {
  load?.abort.abort();
  await load?.done.catch(() => undefined);
  await cp?.stop();
}, 180_000);

function plane(): ControlPlane {
  if (!cp) throw new Error('the control plane did not start (see beforeAll)');
  return cp;
}

function node(): KubeNode {
  const n = plane().node;
  if (!n) throw new Error('the control plane has no node');
  return n;
}

function kubectlOk(args: readonly string[], input?: string): Promise<string> {
  return runToolOk(plane(), 'kubectl', args, input);
}

/** `ctr` against the node's containerd, in the namespace the kubelet uses. */
async function ctr(args: readonly string[]): Promise<string> {
  const { stdout } = await execFileP('ctr', ['--address', node().containerdSocket, '-n', 'k8s.io', ...args]);
  return stdout;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function status(): Promise<KVClusterStatus> {
  const out = await kubectlOk(['-n', NS, 'get', 'kvcluster', 'demo', '-o', 'json']);
  return (JSON.parse(out) as { status?: KVClusterStatus }).status ?? {};
}

function condition(s: KVClusterStatus, type: string): string | undefined {
  return s.conditions?.find((c) => c.type === type)?.status;
}

/** Status Ready, not rebalancing, with `replicas` ready nodes. */
function settled(replicas: number): Promise<KVClusterStatus> {
  return eventually(
    `KVCluster demo Ready with ${replicas} nodes and no moves`,
    async () => {
      const s = await status();
      const ok =
        condition(s, 'Ready') === 'True' &&
        condition(s, 'Rebalancing') !== 'True' &&
        s.readyReplicas === replicas &&
        s.replicas === replicas &&
        !s.partitionsMoving;
      if (!ok) throw new Error(`status ${JSON.stringify(s)}`);
      return s;
    },
    STEP_TIMEOUT_MS - 60_000,
    500,
  );
}

async function rawStoredMap(): Promise<PartitionMap | undefined> {
  const cm = await core.readNamespacedConfigMap({ name: configMapName('demo'), namespace: NS });
  const text = cm.data?.[CONFIGMAP_MAP_KEY];
  return text === undefined ? undefined : (JSON.parse(text) as PartitionMap);
}

/** The map in the managed Redis, read through the Redis pod's own redis-cli. */
async function redisMap(): Promise<PartitionMap | undefined> {
  const out = await kubectlOk([
    '-n',
    RELEASE_NS,
    'exec',
    'deploy/kvstore-redis',
    '--',
    'redis-cli',
    '--raw',
    'GET',
    'kvstore:demo:map',
  ]);
  return out.trim() ? (JSON.parse(out) as PartitionMap) : undefined;
}

async function storedMap(): Promise<PartitionMap> {
  const store = new ConfigMapMetadataStore({ kube: kc, namespace: NS, cluster: 'demo', log });
  try {
    const map = await store.load();
    if (!map) throw new Error('no partition map stored');
    return map;
  } finally {
    await store.close();
  }
}

async function pods(component: 'node' | 'gateway'): Promise<V1Pod[]> {
  const list = await core.listNamespacedPod({
    namespace: NS,
    labelSelector: `app.kubernetes.io/instance=demo,app.kubernetes.io/component=${component}`,
  });
  return list.items.filter((p) => !p.metadata?.deletionTimestamp);
}

const isReady = (p: V1Pod): boolean =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/** Status, ConfigMap and Redis agree; the map holds exactly the node pods, at their pod IPs. */
async function expectMapMatches(s: KVClusterStatus, replicas: number): Promise<void> {
  const map = await storedMap();
  expect(s.mapEpoch).toBe(map.epoch);
  const cached = await eventually(
    `Redis holding map epoch ${map.epoch}`,
    async () => {
      const m = await redisMap();
      if (m?.epoch !== map.epoch) throw new Error(`Redis has epoch ${m?.epoch}`);
      return m;
    },
    30_000,
  );
  expect(cached).toEqual(map);
  expect(map.moves).toEqual([]);
  expect(map.rebalance).toBeUndefined();
  const live = await pods('node');
  const addresses = Object.fromEntries(
    live.map((p) => [p.metadata?.name, `${p.status?.podIP}:${NODE_RPC_PORT}`]),
  );
  expect(Object.fromEntries(map.nodes.map((n) => [n.id, n.address]))).toEqual(addresses);
  expect(map.nodes).toHaveLength(replicas);
  for (const replicasOf of map.partitions) expect(new Set(replicasOf).size).toBe(RF);
}

/** kubectl apply the journey's KVCluster: 3 nodes, RF 3, our locally built image, the managed Redis. */
async function applyDemo(o: {
  image: string;
  gatewayReplicas: number;
  deletionPolicy: 'Retain' | 'Delete';
}): Promise<void> {
  const cluster = {
    apiVersion: 'kvstore.io/v1alpha1',
    kind: 'KVCluster',
    metadata: { name: 'demo', namespace: NS },
    spec: {
      replicas: 3,
      replicationFactor: RF,
      partitions: 32,
      image: o.image,
      // Built here (images.sh) and loaded into the node: there is nowhere to pull it from.
      imagePullPolicy: 'Never',
      storage: { size: '256Mi' },
      gateway: { replicas: o.gatewayReplicas, port: 80 },
      redis: { managed: true },
      deletionPolicy: o.deletionPolicy,
    },
  };
  await kubectlOk(['apply', '-f', '-'], JSON.stringify(cluster));
}

/** The admin API key the operator generated for the cluster (Secret demo-admin-token). */
function readAdminToken(): Promise<string> {
  return eventually('the generated admin key', async () => {
    const secret = await core
      .readNamespacedSecret({ name: 'demo-admin-token', namespace: NS })
      .catch(() => undefined);
    const b64 = secret?.data?.token;
    return b64 ? Buffer.from(b64, 'base64').toString('utf8') : undefined;
  });
}

/** The gateway Service's ClusterIP URL. */
async function gatewayServiceUrl(): Promise<string> {
  const svc = await core.readNamespacedService({ name: 'demo', namespace: NS });
  const ip = svc.spec?.clusterIP;
  const port = svc.spec?.ports?.[0]?.port;
  if (!ip || !port) throw new Error(`Service demo has no ClusterIP or port: ${JSON.stringify(svc.spec)}`);
  return `http://${ip}:${port}`;
}

/** The containerd id of a pod's first container (`containerd://<id>` in its status). */
function containerId(pod: V1Pod): string {
  const id = pod.status?.containerStatuses?.[0]?.containerID ?? '';
  if (!id.startsWith('containerd://')) throw new Error(`${pod.metadata?.name} has container id '${id}'`);
  return id.slice('containerd://'.length);
}

/** The host pid of a running container, from containerd. */
async function containerPid(id: string): Promise<number> {
  const out = await ctr(['tasks', 'ls']);
  const line = out.split('\n').find((l) => l.startsWith(id));
  const pid = Number(line?.split(/\s+/)[1]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no running task ${id} in:\n${out}`);
  return pid;
}

/** The pod's node volume folder (a local-path PersistentVolume under the node's volume dir). */
async function volumePathOf(claim: string): Promise<string> {
  const pvc = await core.readNamespacedPersistentVolumeClaim({ name: claim, namespace: NS });
  const pvName = pvc.spec?.volumeName;
  if (!pvName) throw new Error(`${claim} is not bound`);
  const pv = await core.readPersistentVolume({ name: pvName });
  const p = pv.spec?.hostPath?.path ?? pv.spec?.local?.path;
  if (!p) throw new Error(`PersistentVolume ${pvName} has no path`);
  return p;
}

describe('the journey on a real node: kubelet, containerd, kube-proxy, CoreDNS', () => {
  test(
    "helm install: the operator runs as the chart's Deployment, in a container on the node",
    async () => {
      const install = await runTool(plane(), 'helm', [
        'install',
        'kvstore',
        CHART,
        '--namespace',
        RELEASE_NS,
        '--create-namespace',
        // Images are built here (images.sh) and cannot be pulled from anywhere.
        '--set',
        'image.pullPolicy=Never',
        '--set',
        'redis.managed=true',
        '--set',
        'redis.image.repository=localhost/kvstore-redis',
        '--set-string',
        'redis.image.tag=7',
        '--set',
        'redis.image.pullPolicy=Never',
        '--wait',
        '--timeout',
        '5m',
      ]);
      if (install.code !== 0) throw new Error(`helm install exited ${install.code}: ${install.stderr}`);
      expect(install.stdout).toMatch(/STATUS: deployed/);
      const [op] = (
        await core.listNamespacedPod({
          namespace: RELEASE_NS,
          labelSelector: 'app.kubernetes.io/component=operator',
        })
      ).items;
      if (!op) throw new Error('no operator pod');
      expect(op.status?.phase).toBe('Running');
      expect(op.spec?.nodeName).toBe(node().name);
      expect(op.spec?.serviceAccountName).toBe('kvstore-operator');
      expect(containerId(op)).toMatch(/^[0-9a-f]{64}$/);
      await kubectlOk(['create', 'namespace', NS]);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'our image holds the server package alone (no bench, kvctl, tests or dev tools) and OCI labels naming its version',
    async () => {
      // Looked at from inside the operator's container, as `docker run --entrypoint node` would.
      const inside = JSON.parse(
        await kubectlOk([
          '-n',
          RELEASE_NS,
          'exec',
          'deploy/kvstore-operator',
          '--',
          'node',
          '-e',
          `const fs = require('fs');
           const unwanted = ['dist/bench', 'dist/kvctl', 'dist/verify', 'dist/e2e', 'node_modules/commander',
             'node_modules/typescript', 'node_modules/jest', 'node_modules/@kvstore'];
           console.log(JSON.stringify({
             name: require('/app/package.json').name,
             version: require('/app/package.json').version,
             unwanted: unwanted.filter((p) => fs.existsSync('/app/' + p)),
             tests: fs.readdirSync('/app/dist', { recursive: true }).filter((f) => /\\.test\\.js$/.test(f)),
             servers: ['node', 'gateway', 'operator', 'local'].filter((m) => fs.existsSync('/app/dist/' + m + '/main.js')),
           }));`,
        ]),
      ) as { name: string; version: string; unwanted: string[]; tests: string[]; servers: string[] };
      expect(inside).toEqual({
        name: '@kvstore/server',
        version: KVSTORE_VERSION,
        unwanted: [],
        tests: [],
        servers: ['node', 'gateway', 'operator', 'local'],
      });
      const image = JSON.parse(
        await runToolOk(plane(), 'crictl', [
          '--runtime-endpoint',
          `unix://${node().containerdSocket}`,
          'inspecti',
          '-o',
          'json',
          `docker.io/library/${IMAGE}`,
        ]),
      ) as { info?: { imageSpec?: { config?: { Labels?: Record<string, string> } } } };
      const labels = image.info?.imageSpec?.config?.Labels ?? {};
      expect(labels).toMatchObject({
        'org.opencontainers.image.title': 'kvstore',
        'org.opencontainers.image.version': KVSTORE_VERSION,
        'org.opencontainers.image.licenses': 'Apache-2.0',
      });
      expect(labels['org.opencontainers.image.source']).toMatch(/^https:\/\//);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    "kubectl apply a KVCluster: it becomes Ready, its pods Running in containers under the chart's security context",
    async () => {
      await applyDemo({ image: IMAGE, gatewayReplicas: 2, deletionPolicy: 'Retain' });
      const s = await settled(3);
      expect(s.phase).toBe('Running');
      await expectMapMatches(s, 3);

      // What a user sees: every pod Running on the real Node, with a containerd container id.
      const wide = await kubectlOk(['-n', NS, 'get', 'pods', '-o', 'wide', '--no-headers']);
      const rows = wide.trim().split('\n');
      expect(rows).toHaveLength(5);
      for (const row of rows) expect(row).toMatch(new RegExp(`\\sRunning\\s.*\\s${node().name}\\s`));
      const all = [...(await pods('node')), ...(await pods('gateway'))];
      for (const pod of all) {
        // The process really runs as uid 1000, on a read-only root filesystem.
        const pid = await containerPid(containerId(pod));
        const procStatus = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
        expect(procStatus).toMatch(/^Uid:\s+1000\s+1000\s+1000\s+1000$/m);
        expect(procStatus).toMatch(/^CapEff:\s+0+$/m);
        const rootMount = fs
          .readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
          .split('\n')
          .find((l) => l.split(' ')[4] === '/');
        expect(rootMount?.split(' ')[5]).toMatch(/(^|,)ro(,|$)/);
      }
      // The node volumes are PersistentVolumes the provisioner made: folders on this machine.
      for (let i = 0; i < 3; i++) {
        const dir = await volumePathOf(`data-demo-node-${i}`);
        expect(fs.readdirSync(dir).length).toBeGreaterThan(0);
      }
    },
    STEP_TIMEOUT_MS,
  );

  test(
    "put, get and delete through the Service's ClusterIP, and the original design's /put /get /delete",
    async () => {
      adminToken = await readAdminToken();
      serviceUrl = await gatewayServiceUrl();
      expect(serviceUrl).toMatch(/^http:\/\/198\.18\./);

      const anonymous = new KeyValueStoreClient({ url: serviceUrl });
      await expect(anonymous.get('journey')).rejects.toMatchObject({ code: 'unauthorized', status: 401 });
      const kv = new KeyValueStoreClient({ url: serviceUrl, consistency: 'quorum', token: adminToken });
      await eventually('a first put through the ClusterIP', () =>
        kv.put('journey', 'hello').then(() => true),
      );
      expect(await kv.get('journey')).toBe('hello');
      await kv.put('journey', 'again');
      expect(await kv.get('journey', { consistency: 'all' })).toBe('again');
      await kv.delete('journey');
      expect(await kv.get('journey')).toBeNull();

      const auth = { authorization: `Bearer ${adminToken}` };
      const put = await fetch(`${serviceUrl}/put`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: JSON.stringify({ key: 'legacy', value: 'old client' }),
      });
      expect({ status: put.status, body: await put.json() }).toEqual({
        status: 200,
        body: { success: true },
      });
      const got = await fetch(`${serviceUrl}/get?key=legacy`, { headers: auth });
      expect({ status: got.status, body: await got.json() }).toEqual({
        status: 200,
        body: { key: 'legacy', value: 'old client' },
      });
      const del = await fetch(`${serviceUrl}/delete?key=legacy`, { method: 'DELETE', headers: auth });
      expect({ status: del.status, body: await del.json() }).toEqual({
        status: 200,
        body: { success: true },
      });
      expect(await kv.get('legacy')).toBeNull();

      // A caller that reaches a node pod's RPC port without the cluster's internal token reads nothing.
      const map = await rawStoredMap();
      const first = map?.nodes[0];
      if (!map || !first) throw new Error('no partition map');
      const key = Buffer.from('journey');
      const outsider = new RpcClient({
        nodeId: first.id,
        address: first.address,
        clock: new HybridLogicalClock('journey-outsider'),
        epoch: () => map.epoch,
        timeoutMs: 5000,
      });
      try {
        const refused = await outsider
          .call({ op: 'read', items: [{ p: partitionOf(key, map.partitionCount), k: key }] })
          .catch((err: unknown) => err);
        expect(refused).toBeInstanceOf(RpcError);
        expect((refused as RpcError).remote?.code).toBe('unauthorized');
      } finally {
        outsider.close();
      }
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'a client pod reaches the gateway at its cluster DNS name',
    async () => {
      const kv = new KeyValueStoreClient({ url: serviceUrl, token: adminToken });
      await kv.put('dns-check', 'found by name');
      const script = [
        "fetch('http://demo.journey.svc.cluster.local/v1/kv/dns-check',",
        "{ headers: { authorization: 'Bearer ' + process.env.TOKEN } })",
        ".then(async (r) => { console.log('status', r.status, await r.text()); })",
        ".catch((e) => { console.log('error', e.cause ? e.cause.code : e.message); process.exit(1); });",
      ].join(' ');
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'client', namespace: NS },
        spec: {
          restartPolicy: 'Never',
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 1000,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          containers: [
            {
              name: 'client',
              image: IMAGE,
              imagePullPolicy: 'Never',
              command: ['node', '-e', script],
              env: [{ name: 'TOKEN', value: adminToken }],
              securityContext: {
                readOnlyRootFilesystem: true,
                allowPrivilegeEscalation: false,
                capabilities: { drop: ['ALL'] },
              },
            },
          ],
        },
      };
      await kubectlOk(['apply', '-f', '-'], JSON.stringify(pod));
      const phase = await eventually('the client pod to finish', async () => {
        const p = await core.readNamespacedPod({ name: 'client', namespace: NS });
        const ph = p.status?.phase;
        return ph === 'Succeeded' || ph === 'Failed' ? ph : undefined;
      });
      const logs = await kubectlOk(['-n', NS, 'logs', 'client']);
      expect({ phase, logs: logs.trim() }).toEqual({ phase: 'Succeeded', logs: 'status 200 found by name' });
      await kubectlOk(['-n', NS, 'delete', 'pod', 'client', '--wait=true']);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'kubectl scale to 5 under load through the ClusterIP: the rebalance finishes',
    async () => {
      load = startRecordedLoad(serviceUrl, 20 * 60_000, adminToken);
      await sleep(2000);
      await kubectlOk(['-n', NS, 'scale', 'kvcluster/demo', '--replicas=5']);
      await eventually('the rebalance to start', async () =>
        (await status()).replicas === 5 ? true : undefined,
      );
      await expectMapMatches(await settled(5), 5);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'kubectl scale back to 3 under load: the rebalance finishes',
    async () => {
      await kubectlOk(['-n', NS, 'scale', 'kvcluster/demo', '--replicas=3']);
      await eventually('the shrink to start', async () => {
        const s = await status();
        return condition(s, 'Rebalancing') === 'True' || s.replicas === 3 ? true : undefined;
      });
      await expectMapMatches(await settled(3), 3);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'the history of the load across both scalings: no failed request, no violation',
    async () => {
      if (!load) throw new Error('the load did not run');
      await stopAndCheckLoad(load, { replicationFactor: RF, readUrl: serviceUrl });
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'a deleted node pod comes back (StatefulSet, same volume) with its data; no acknowledged write lost',
    async () => {
      load = startRecordedLoad(serviceUrl, 5 * 60_000, adminToken);
      await sleep(2000);
      const before = await core.readNamespacedPod({ name: 'demo-node-1', namespace: NS });
      await kubectlOk(['-n', NS, 'delete', 'pod', 'demo-node-1', '--wait=false']);
      await eventually('demo-node-1 recreated and Ready', async () => {
        const pod = await core.readNamespacedPod({ name: 'demo-node-1', namespace: NS });
        return pod.metadata?.uid !== before.metadata?.uid && isReady(pod) ? pod : undefined;
      });
      await expectMapMatches(await settled(3), 3);
      await sleep(2000);
      if (!load) throw new Error('the load did not run');
      // Requests that hit the killed node's moment may fail; they are reported, they are not data loss.
      const failed = await stopAndCheckLoad(load, {
        replicationFactor: RF,
        readUrl: serviceUrl,
        allowFailures: true,
      });
      if (failed.length > 0) process.stderr.write(`node pod delete: ${failed.length} requests failed\n`);
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'an eviction through the Eviction API: the PodDisruptionBudget refuses a second one until the first pod is back',
    async () => {
      load = startRecordedLoad(serviceUrl, 5 * 60_000, adminToken);
      await sleep(2000);
      const evict = (name: string): Promise<unknown> =>
        core.createNamespacedPodEviction({
          name,
          namespace: NS,
          body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name, namespace: NS } },
        });
      const before = await core.readNamespacedPod({ name: 'demo-node-0', namespace: NS });
      await evict('demo-node-0');
      // While demo-node-0 is gone or not Ready, the budget (maxUnavailable 1) has no disruption left.
      const refused = await evict('demo-node-2').then(
        () => undefined,
        (err: unknown) => err as { code?: number; body?: unknown },
      );
      expect(refused?.code).toBe(429);
      expect(JSON.stringify(refused?.body)).toMatch(/disruption budget/);
      const still = await core.readNamespacedPod({ name: 'demo-node-2', namespace: NS });
      expect(still.metadata?.deletionTimestamp).toBeUndefined();
      await eventually('demo-node-0 back and Ready', async () => {
        const pod = await core.readNamespacedPod({ name: 'demo-node-0', namespace: NS });
        return pod.metadata?.uid !== before.metadata?.uid && isReady(pod) ? pod : undefined;
      });
      await expectMapMatches(await settled(3), 3);
      // With the first pod back, the budget allows the next eviction again.
      await eventually(
        'a second eviction allowed',
        () => evict('demo-node-2').then(() => true),
        60_000,
        1000,
      );
      await eventually('demo-node-2 back and Ready', async () => {
        const pod = await core.readNamespacedPod({ name: 'demo-node-2', namespace: NS });
        return pod.metadata?.uid !== still.metadata?.uid && isReady(pod) ? pod : undefined;
      });
      await expectMapMatches(await settled(3), 3);
      if (!load) throw new Error('the load did not run');
      const failed = await stopAndCheckLoad(load, {
        replicationFactor: RF,
        readUrl: serviceUrl,
        allowFailures: true,
      });
      if (failed.length > 0) process.stderr.write(`evictions: ${failed.length} requests failed\n`);
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    "a new image tag rolls out (a second build): the operator's rolling update keeps quorum; no failed request",
    async () => {
      const build = await execFileP('bash', [path.join(__dirname, 'images.sh'), 'build', 'kvstore'], {
        env: {
          ...process.env,
          KVSTORE_IMAGE_TAG: ROLLOUT_IMAGE.split(':')[1],
          KVSTORE_IMAGE_LABEL: 'rollout',
        },
        maxBuffer: 64 * 1024 * 1024,
      });
      // images.sh names each image it made, with its archive.
      expect(build.stdout).toContain(`docker.io/library/${ROLLOUT_IMAGE}\t`);
      await execFileP('bash', [path.join(__dirname, 'images.sh'), 'import', node().containerdSocket]);
      const images = await ctr(['images', 'ls', '-q']);
      expect(images).toContain(`docker.io/library/${ROLLOUT_IMAGE}`);

      load = startRecordedLoad(serviceUrl, 10 * 60_000, adminToken);
      await sleep(2000);
      await kubectlOk([
        '-n',
        NS,
        'patch',
        'kvcluster',
        'demo',
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { image: ROLLOUT_IMAGE } }),
      ]);
      await eventually(
        'every pod on the new image and Ready',
        async () => {
          const all = [...(await pods('node')), ...(await pods('gateway'))];
          const old = all.filter((p) => p.spec?.containers[0]?.image !== ROLLOUT_IMAGE || !isReady(p));
          if (all.length !== 5 || old.length > 0)
            throw new Error(`${old.length} of ${all.length} pods not yet on ${ROLLOUT_IMAGE} and Ready`);
          return true;
        },
        STEP_TIMEOUT_MS - 90_000,
        1000,
      );
      const sts = await apps.readNamespacedStatefulSet({ name: 'demo-node', namespace: NS });
      expect(sts.status?.updatedReplicas).toBe(3);
      await expectMapMatches(await settled(3), 3);
      if (!load) throw new Error('the load did not run');
      await stopAndCheckLoad(load, { replicationFactor: RF, readUrl: serviceUrl });
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'the operator pod deleted mid-rebalance (scale to 5): its replacement resumes and finishes; no failed request',
    async () => {
      load = startRecordedLoad(serviceUrl, 10 * 60_000, adminToken);
      await sleep(2000);
      await kubectlOk(['-n', NS, 'scale', 'kvcluster/demo', '--replicas=5']);
      await eventually(
        'a rebalance recorded in the ConfigMap',
        async () => ((await rawStoredMap())?.rebalance ? true : undefined),
        180_000,
        50,
      );
      // Stop a receiving node's process (SIGSTOP from the host, an ancestor pid namespace, which its
      // container's init cannot ignore), so its moves cannot finish while the operator is replaced.
      // (`ctr tasks pause`, the freezer cgroup, was refused here when a thread sat in an fsync:
      // "unable to freeze".) Writes still succeed: a partition moving to it needs W + 1 acks, which
      // the current replicas and demo-node-3 give.
      const receiver = await core.readNamespacedPod({ name: 'demo-node-4', namespace: NS });
      const frozen = await containerPid(containerId(receiver));
      process.kill(frozen, 'SIGSTOP');
      const [oldOperator] = (
        await core.listNamespacedPod({
          namespace: RELEASE_NS,
          labelSelector: 'app.kubernetes.io/component=operator',
        })
      ).items;
      if (!oldOperator?.metadata?.name) throw new Error('no operator pod');
      try {
        await kubectlOk(['-n', RELEASE_NS, 'delete', 'pod', oldOperator.metadata.name, '--wait=true']);
      } finally {
        process.kill(frozen, 'SIGCONT');
      }
      const atStop = await rawStoredMap();
      if (!atStop?.rebalance)
        throw new Error('the rebalance finished before the operator stopped: nothing to resume');
      const left = rebalanceCounts(atStop);
      expect(left.movesLeft).toBeGreaterThan(0);
      process.stderr.write(
        `operator pod deleted mid-rebalance at epoch ${atStop.epoch}: ${left.movesDone}/${left.movesTotal} moves done\n`,
      );
      const finished = await settled(5);
      await expectMapMatches(finished, 5);
      expect(finished.mapEpoch).toBeGreaterThan(atStop.epoch);
      const [newOperator] = (
        await core.listNamespacedPod({
          namespace: RELEASE_NS,
          labelSelector: 'app.kubernetes.io/component=operator',
        })
      ).items;
      expect(newOperator?.metadata?.name).not.toBe(oldOperator.metadata.name);
      if (!load) throw new Error('the load did not run');
      await stopAndCheckLoad(load, { replicationFactor: RF, readUrl: serviceUrl });
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'kubectl delete the KVCluster (deletionPolicy Retain): what it owns goes, its containers stop, the volumes stay',
    async () => {
      const before = [...(await pods('node')), ...(await pods('gateway'))];
      expect(before).toHaveLength(7); // 5 nodes, 2 gateways
      const ids = before.map(containerId);
      const claims = [0, 1, 2, 3, 4].map((i) => `data-demo-node-${i}`);
      const dirs = await Promise.all(claims.map(volumePathOf));

      await kubectlOk(['-n', NS, 'delete', 'kvcluster', 'demo', '--timeout=120s']);
      const kinds =
        'statefulsets,deployments,services,poddisruptionbudgets,configmaps,serviceaccounts,roles,rolebindings,pods,secrets';
      await eventually('every object the KVCluster owned gone', async () => {
        const left = (
          await kubectlOk(['-n', NS, 'get', kinds, '-l', 'app.kubernetes.io/instance=demo', '-o', 'name'])
        ).trim();
        if (left) throw new Error(`left: ${left.replace(/\n/g, ' ')}`);
        return true;
      });
      await eventually('the containers gone from containerd', async () => {
        const tasks = await ctr(['tasks', 'ls', '-q']);
        const running = ids.filter((id) => tasks.includes(id));
        if (running.length > 0) throw new Error(`${running.length} containers still running`);
        return true;
      });
      // The map's ConfigMap goes too (garbage collection, after the KVCluster itself).
      await eventually('the partition map ConfigMap gone', async () => {
        const cm = await core.readNamespacedConfigMap({ name: configMapName('demo'), namespace: NS }).then(
          () => undefined,
          (err: { code?: number }) => (err.code === 404 ? true : undefined),
        );
        return cm;
      });
      // And the map's copy in Redis, which a cluster made again under this name would otherwise read.
      expect(await redisMap()).toBeUndefined();
      await sleep(3000);
      const after = (await core.listNamespacedPersistentVolumeClaim({ namespace: NS })).items.filter(
        (c) => !c.metadata?.deletionTimestamp,
      );
      expect(after.map((c) => c.metadata?.name).sort()).toEqual(claims);
      for (const dir of dirs) expect(fs.existsSync(dir)).toBe(true);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'the KVCluster again on its kept volumes, then deleted with deletionPolicy Delete: the volumes go too',
    async () => {
      await applyDemo({ image: ROLLOUT_IMAGE, gatewayReplicas: 1, deletionPolicy: 'Delete' });
      await settled(3);
      // The Service and the admin key are the new cluster's own (the old ones were garbage collected).
      serviceUrl = await gatewayServiceUrl();
      adminToken = await readAdminToken();
      const kv = new KeyValueStoreClient({ url: serviceUrl, token: adminToken, consistency: 'all' });
      // The kept volumes carried the data: a key written before the first delete is still there.
      await eventually('a read of dns-check', async () =>
        (await kv.get('dns-check')) === 'found by name' ? true : undefined,
      );
      const claims = (await core.listNamespacedPersistentVolumeClaim({ namespace: NS })).items.map(
        (c) => c.metadata?.name ?? '',
      );
      const dirs = await Promise.all(claims.map(volumePathOf));
      await kubectlOk(['-n', NS, 'delete', 'kvcluster', 'demo', '--timeout=120s']);
      await eventually('the claims, their volumes and their folders gone', async () => {
        const left = (await core.listNamespacedPersistentVolumeClaim({ namespace: NS })).items.length;
        const pvs = (await core.listPersistentVolume()).items.length;
        const folders = dirs.filter((d) => fs.existsSync(d)).length;
        if (left + pvs + folders > 0)
          throw new Error(`${left} claims, ${pvs} volumes, ${folders} folders left`);
        return true;
      });
    },
    STEP_TIMEOUT_MS,
  );
});
