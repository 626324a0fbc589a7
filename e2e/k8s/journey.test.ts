import path from 'node:path';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import pino from 'pino';
import { KeyValueStoreClient } from '../../client/client';
import { partitionOf } from '../../common/hash';
import { HybridLogicalClock } from '../../common/hlc';
import { RpcClient, RpcError } from '../../common/rpc-client';
import { startRecordedLoad, stopAndCheckLoad, type RecordedLoad } from '../recorded-load';
import http from 'node:http';
import {
  ConfigMapMetadataStore,
  CONFIGMAP_MAP_KEY,
  configMapName,
} from '../../common/configmap-metadata-store';
import type { PartitionMap } from '../../common/partition-map';
import { rebalanceCounts } from '../../common/rebalance-plan';
import { RedisMetadataStore } from '../../common/redis-metadata-store';
import type { KVClusterStatus } from '../../crds/kvcluster-spec';
import { Operator } from '../../operator/operator';
import {
  runTool,
  startControlPlane,
  type CommandResult,
  type ControlPlane,
  eventually,
  runToolOk,
} from './control-plane';
import { startRedis, type RunningRedis } from '../redis-server';
import { PodAgent } from './pod-agent';

/*
 * The user journey on Kubernetes (issue 6), on the real control plane of e2e/k8s/control-plane.ts
 * with the pod agent (e2e/k8s/pod-agent.ts) running the node and gateway pods as local processes
 * from dist/ (build first). The operator runs in this process with the admin kubeconfig. A real
 * redis-server on 127.0.0.1 is the cluster's spec.redis.url (the pods are local processes, so they
 * reach it), so the final map is checked in status, ConfigMap and Redis.
 * Each step is its own test; they run in order and share one cluster, so a failure stops the
 * later steps making sense but shows how far the journey got.
 */

const BUILD_AND_START_TIMEOUT_MS = 40 * 60_000;
const STEP_TIMEOUT_MS = 5 * 60_000;
const repoRoot = path.resolve(__dirname, '..', '..');
const CHART = path.join(repoRoot, 'charts', 'kvstore');
const NS = 'journey';
const LEASE_NS = 'kvstore-system';
const RF = 3;
const GATEWAY_PORT = 8080;

const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' });

let cp: ControlPlane | undefined;
let kc: KubeConfig;
let core: CoreV1Api;
let agent: PodAgent | undefined;
let operator: Operator | undefined;
let redis: RunningRedis | undefined;
let load: RecordedLoad | undefined;
/** the admin API key the operator generated (Secret demo-admin-token) */
let adminToken: string | undefined;

beforeAll(async () => {
  cp = await startControlPlane();
  kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  redis = await startRedis();
  agent = await PodAgent.start({
    kubeConfig: kc,
    kubeconfigPath: cp.kubeconfigPath,
    workDir: cp.workDir,
    ipPrefix: '127.0.42',
    log: process.env.LOG_LEVEL === 'debug' ? (line) => process.stderr.write(`${line}\n`) : undefined,
  });
}, BUILD_AND_START_TIMEOUT_MS);

afterAll(async () => {
  load?.abort.abort();
  await load?.done.catch(() => undefined);
  await operator?.stop();
  await agent?.stop();
  await redis?.stop();
  await cp?.stop();
}, 120_000);

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

function startOperator(identity: string): Promise<Operator> {
  return Operator.start({
    kubeConfig: kc,
    log: log.child({ operator: identity }),
    identity,
    leaseNamespace: LEASE_NS,
    leaseDurationMs: 4000,
    renewDeadlineMs: 3000,
    retryPeriodMs: 500,
    metricsListen: { host: '127.0.0.1', port: 0 },
    resyncIntervalMs: 2000,
    rebalancePollIntervalMs: 500,
    backoffBaseMs: 100,
  });
}

/** The map in the ConfigMap, read straight from the API (cheap enough to poll fast). */
async function rawStoredMap(): Promise<PartitionMap | undefined> {
  const cm = await core.readNamespacedConfigMap({ name: configMapName('demo'), namespace: NS });
  const text = cm.data?.[CONFIGMAP_MAP_KEY];
  return text === undefined ? undefined : (JSON.parse(text) as PartitionMap);
}

/** The map in Redis (spec.redis.url). */
async function redisMap(): Promise<PartitionMap | undefined> {
  if (!redis) throw new Error('redis did not start');
  const store = new RedisMetadataStore({ url: redis.url, cluster: 'demo' });
  try {
    return await store.load();
  } finally {
    await store.close();
  }
}

/** Does anything accept connections on host:port? */
function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/healthz', timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'ECONNREFUSED'));
  });
}

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
    STEP_TIMEOUT_MS - 30_000,
  );
}

/** The map as the operator stored it (the ConfigMap the nodes and gateways read). */
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

/** Status and ConfigMap agree; the map holds exactly the node pods, at their pod IPs, each a replica of something. */
async function expectMapMatches(s: KVClusterStatus, replicas: number): Promise<void> {
  const map = await storedMap();
  expect(s.mapEpoch).toBe(map.epoch);
  // Redis is the fast copy, written after the ConfigMap: it catches up with the same map.
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
  const pods = await core.listNamespacedPod({
    namespace: NS,
    labelSelector: 'app.kubernetes.io/instance=demo,app.kubernetes.io/component=node',
  });
  const live = pods.items.filter((p) => !p.metadata?.deletionTimestamp);
  const addresses = Object.fromEntries(live.map((p) => [p.metadata?.name, `${p.status?.podIP}:7001`]));
  expect(Object.fromEntries(map.nodes.map((n) => [n.id, n.address]))).toEqual(addresses);
  expect(map.nodes).toHaveLength(replicas);
  for (const replicasOf of map.partitions) expect(new Set(replicasOf).size).toBe(RF);
  const holders = new Set(map.partitions.flat());
  expect([...holders].sort()).toEqual(map.nodes.map((n) => n.id).sort());
}

/** A Ready gateway pod's URL. */
async function gatewayUrl(): Promise<string> {
  return eventually('a Ready gateway pod', async () => {
    const pods = await core.listNamespacedPod({
      namespace: NS,
      labelSelector: 'app.kubernetes.io/instance=demo,app.kubernetes.io/component=gateway',
    });
    const ready = pods.items.find((p: V1Pod) =>
      p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
    );
    return ready?.status?.podIP ? `http://${ready.status.podIP}:${GATEWAY_PORT}` : undefined;
  });
}

describe('the journey on Kubernetes, with process-backed pods', () => {
  test(
    'helm install the chart (CRD, RBAC, operator Deployment at 0 replicas); the operator runs as a local process',
    async () => {
      // No image can run here, so the chart's operator Deployment is scaled to 0 and the operator runs
      // in this process with the admin kubeconfig, electing itself on the chart's lease namespace.
      const install = await runTool(plane(), 'helm', [
        'install',
        'kvstore',
        CHART,
        '--namespace',
        LEASE_NS,
        '--create-namespace',
        '--set',
        'operator.replicas=0',
      ]);
      if (install.code !== 0) throw new Error(`helm install exited ${install.code}: ${install.stderr}`);
      expect(install.stdout).toMatch(/STATUS: deployed/);
      await kubectlOk(['wait', '--for=condition=Established', 'crd/kvclusters.kvstore.io', '--timeout=90s']);
      const deployment = JSON.parse(
        await kubectlOk(['-n', LEASE_NS, 'get', 'deployment', 'kvstore-operator', '-o', 'json']),
      ) as { spec: { replicas: number } };
      expect(deployment.spec.replicas).toBe(0);
      await kubectlOk([
        '-n',
        LEASE_NS,
        'get',
        'serviceaccount/kvstore-operator',
        'role/kvstore-leader-election',
      ]);
      await kubectlOk(['create', 'namespace', NS]);
      operator = await startOperator('op');
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'kubectl apply a KVCluster (3 nodes, RF 3): it becomes Ready',
    async () => {
      const cluster = {
        apiVersion: 'kvstore.io/v1alpha1',
        kind: 'KVCluster',
        metadata: { name: 'demo', namespace: NS },
        spec: {
          replicas: 3,
          replicationFactor: RF,
          partitions: 32,
          gateway: { replicas: 1 },
          redis: { url: redis?.url },
          // The CRD's default, said out loud: step 7 checks the volumes stay.
          deletionPolicy: 'Retain',
        },
      };
      await kubectlOk(['apply', '-f', '-'], JSON.stringify(cluster));
      const s = await settled(3);
      expect(s.phase).toBe('Running');
      await expectMapMatches(s, 3);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'put, get and delete through the gateway pod',
    async () => {
      // Auth is on without any configuration: the operator made an admin key, readable by whoever may
      // read Secrets in the namespace, and gave the gateways only its hash.
      adminToken = await eventually('the generated admin key', async () => {
        const secret = await core
          .readNamespacedSecret({ name: 'demo-admin-token', namespace: NS })
          .catch(() => undefined);
        const b64 = secret?.data?.token;
        return b64 ? Buffer.from(b64, 'base64').toString('utf8') : undefined;
      });
      const keysFile = await core.readNamespacedSecret({ name: 'demo-api-keys', namespace: NS });
      expect(Buffer.from(keysFile.data?.['keys.json'] ?? '', 'base64').toString('utf8')).not.toContain(
        adminToken,
      );
      const anonymous = new KeyValueStoreClient({ url: await gatewayUrl() });
      await expect(anonymous.get('journey')).rejects.toMatchObject({ code: 'unauthorized', status: 401 });

      const kv = new KeyValueStoreClient({
        url: await gatewayUrl(),
        consistency: 'quorum',
        token: adminToken,
      });
      await eventually('a first put', () => kv.put('journey', 'hello').then(() => true), 60_000);
      expect(await kv.get('journey')).toBe('hello');
      await kv.put('journey', 'again');
      expect(await kv.get('journey', { consistency: 'all' })).toBe('again');

      // A caller that reaches a node pod's port without the cluster's internal token reads nothing.
      const map = await rawStoredMap();
      const node = map?.nodes[0];
      if (!map || !node) throw new Error('no partition map');
      const key = Buffer.from('journey');
      const outsider = new RpcClient({
        nodeId: node.id,
        address: node.address,
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

      await kv.delete('journey');
      expect(await kv.get('journey')).toBeNull();

      // The original design's routes, as its client calls them, through the same pod.
      const url = await gatewayUrl();
      const auth = { authorization: `Bearer ${adminToken}` };
      const put = await fetch(`${url}/put`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: JSON.stringify({ key: 'legacy', value: 'old client' }),
      });
      expect({ status: put.status, body: await put.json() }).toEqual({
        status: 200,
        body: { success: true },
      });
      const got = await fetch(`${url}/get?key=legacy`, { headers: auth });
      expect({ status: got.status, body: await got.json() }).toEqual({
        status: 200,
        body: { key: 'legacy', value: 'old client' },
      });
      expect(await kv.get('legacy')).toBe('old client');
      const del = await fetch(`${url}/delete?key=legacy`, { method: 'DELETE', headers: auth });
      expect({ status: del.status, body: await del.json() }).toEqual({
        status: 200,
        body: { success: true },
      });
      expect(await kv.get('legacy')).toBeNull();
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'kubectl scale to 5 under load: the rebalance finishes',
    async () => {
      const url = await gatewayUrl();
      load = startRecordedLoad(url, 15 * 60_000, adminToken);
      await new Promise((resolve) => setTimeout(resolve, 2000));
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
    'the history of the load: no failed request, no violation',
    async () => {
      if (!load) throw new Error('the load did not run');
      await stopAndCheckLoad(load, { replicationFactor: RF, readUrl: await gatewayUrl() });
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'a deleted node pod comes back (StatefulSet) with its data; no acknowledged write lost',
    async () => {
      const url = await gatewayUrl();
      load = startRecordedLoad(url, 5 * 60_000, adminToken);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const before = await core.readNamespacedPod({ name: 'demo-node-1', namespace: NS });
      await kubectlOk(['-n', NS, 'delete', 'pod', 'demo-node-1', '--wait=false']);
      await eventually('demo-node-1 recreated', async () => {
        const pod = await core.readNamespacedPod({ name: 'demo-node-1', namespace: NS });
        return pod.metadata?.uid !== before.metadata?.uid ? pod : undefined;
      });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await expectMapMatches(await settled(3), 3);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      if (!load) throw new Error('the load did not run');
      // Requests that hit the killed node's moment may fail; report them, they are not data loss.
      const failed = await stopAndCheckLoad(load, {
        replicationFactor: RF,
        readUrl: await gatewayUrl(),
        allowFailures: true,
      });
      if (failed.length > 0) process.stderr.write(`node pod delete: ${failed.length} requests failed\n`);
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'the operator restarted mid-rebalance (scale to 5): a new one resumes and finishes; no failed request, no violation',
    async () => {
      const url = await gatewayUrl();
      load = startRecordedLoad(url, 10 * 60_000, adminToken);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      await kubectlOk(['-n', NS, 'scale', 'kvcluster/demo', '--replicas=5']);
      // The rebalance is planned once the two new node pods are Ready, then runs in steps paced by
      // the operator's poll (500 ms): the ConfigMap is polled fast and the operator stopped as soon
      // as the plan is recorded there with moves left.
      await eventually(
        'a rebalance recorded in the ConfigMap',
        async () => ((await rawStoredMap())?.rebalance ? true : undefined),
        120_000,
        50,
      );
      // Freeze one receiving node at once, so its moves cannot finish while the operator stops.
      // Writes still succeed: a partition moving to it needs W + 1 (or W + 2 when it also moves to
      // demo-node-3) acks, which the three current replicas and demo-node-3 give.
      const receivers = ['demo-node-4'];
      for (const pod of receivers) expect(agent?.signal(NS, pod, 'SIGSTOP')).toBe(true);
      const first = operator;
      operator = undefined;
      try {
        await first?.stop();
      } finally {
        for (const pod of receivers) agent?.signal(NS, pod, 'SIGCONT');
      }
      const atStop = await rawStoredMap();
      if (!atStop?.rebalance)
        throw new Error('the rebalance finished before the operator stopped: nothing left to resume');
      const leftAtStop = rebalanceCounts(atStop);
      expect(leftAtStop.movesLeft).toBeGreaterThan(0);
      process.stderr.write(
        `operator stopped mid-rebalance at epoch ${atStop.epoch}: ${leftAtStop.movesDone}/${leftAtStop.movesTotal} moves done\n`,
      );
      // Nobody owns the map now; the status still shows the rebalance.
      const s = await status();
      expect(condition(s, 'Rebalancing')).toBe('True');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      operator = await startOperator('op-2');
      const finished = await settled(5);
      await expectMapMatches(finished, 5);
      expect(finished.mapEpoch).toBeGreaterThan(atStop.epoch);

      if (!load) throw new Error('the load did not run');
      await stopAndCheckLoad(load, { replicationFactor: RF, readUrl: await gatewayUrl() });
      load = undefined;
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'kubectl delete the KVCluster: what it owns goes, the processes stop, the volumes stay (deletionPolicy Retain)',
    async () => {
      const pods = await core.listNamespacedPod({
        namespace: NS,
        labelSelector: 'app.kubernetes.io/instance=demo',
      });
      const endpoints = pods.items.map((p) => {
        const node = p.metadata?.labels?.['app.kubernetes.io/component'] === 'node';
        return { name: p.metadata?.name, ip: p.status?.podIP ?? '', port: node ? 7101 : GATEWAY_PORT };
      });
      expect(endpoints).toHaveLength(6); // 5 nodes, 1 gateway
      for (const e of endpoints) expect(await listening(e.ip, e.port)).toBe(true);
      const claimsBefore = (await core.listNamespacedPersistentVolumeClaim({ namespace: NS })).items.map(
        (c) => c.metadata?.name,
      );
      const nodeClaims = [0, 1, 2, 3, 4].map((i) => `data-demo-node-${i}`);
      expect(claimsBefore.sort()).toEqual(nodeClaims);

      await kubectlOk(['-n', NS, 'delete', 'kvcluster', 'demo', '--timeout=120s']);
      await expect(kubectl(['-n', NS, 'get', 'kvcluster', 'demo'])).resolves.toMatchObject({ code: 1 });

      // Garbage collection (the real controller manager) removes what the KVCluster owned.
      const kinds =
        'statefulsets,deployments,services,poddisruptionbudgets,configmaps,serviceaccounts,roles,rolebindings,pods,secrets';
      await eventually('every object the KVCluster owned gone', async () => {
        const left = (
          await kubectlOk(['-n', NS, 'get', kinds, '-l', 'app.kubernetes.io/instance=demo', '-o', 'name'])
        ).trim();
        if (left) throw new Error(`left: ${left.replace(/\n/g, ' ')}`);
        return true;
      });
      const cm = await kubectl(['-n', NS, 'get', 'configmap', configMapName('demo')]);
      expect(cm.code).toBe(1);
      // The agent stopped every pod's process: nothing listens on their addresses any more.
      await eventually('the pod processes stopped', async () => {
        for (const e of endpoints)
          if (await listening(e.ip, e.port)) throw new Error(`${e.name} still listens on ${e.ip}:${e.port}`);
        return true;
      });
      // deletionPolicy Retain: the node volumes (PersistentVolumeClaims) stay, and not being owned, they are
      // not garbage collected either.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const claimsAfter = (await core.listNamespacedPersistentVolumeClaim({ namespace: NS })).items.filter(
        (c) => !c.metadata?.deletionTimestamp,
      );
      expect(claimsAfter.map((c) => c.metadata?.name).sort()).toEqual(nodeClaims);
    },
    STEP_TIMEOUT_MS,
  );
});
