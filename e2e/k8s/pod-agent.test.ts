import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from './control-plane';
import { expand, PodAgent } from './pod-agent';

/*
 * The pod agent (e2e/k8s/pod-agent.ts) against the real control plane: a pod running a tiny HTTP
 * server becomes Running and Ready with its own loopback address, keeps its data folder, and its
 * process dies when the pod is deleted.
 */

const BUILD_AND_START_TIMEOUT_MS = 40 * 60_000;
const NS = 'agent';

let cp: ControlPlane | undefined;
let core: CoreV1Api;
let agent: PodAgent | undefined;

beforeAll(async () => {
  cp = await startControlPlane();
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  agent = await PodAgent.start({
    kubeConfig: kc,
    kubeconfigPath: cp.kubeconfigPath,
    workDir: cp.workDir,
    ipPrefix: '127.0.41',
  });
}, BUILD_AND_START_TIMEOUT_MS);

afterAll(async () => {
  await agent?.stop();
  await cp?.stop();
}, 60_000);

// Listens on the pod IP it was given (0.0.0.0 is rewritten to it), answers /readyz once it wrote
// a file into its volume, and records its pid there so the test can check the process is gone.
const SERVER = `
const fs = require('node:fs');
const http = require('node:http');
const listen = process.argv[1];
const dataDir = process.argv[2].slice('--data='.length);
const [host, port] = listen.split(':');
fs.writeFileSync(dataDir + '/pid', String(process.pid));
fs.appendFileSync(dataDir + '/starts', process.env.POD_NAME + '@' + process.env.POD_IP + '\\n');
http.createServer((req, res) => res.end(req.url + ' from ' + process.env.POD_NAME)).listen(Number(port), host);
process.on('SIGTERM', () => process.exit(0));
`;

function testPod(name: string): V1Pod {
  return {
    metadata: { name, namespace: NS, labels: { 'app.kubernetes.io/name': 'kvstore' } },
    spec: {
      terminationGracePeriodSeconds: 5,
      containers: [
        {
          name: 'main',
          image: 'kvstore:test',
          command: ['node', '-e', SERVER, '0.0.0.0:8080', '--data=/data'],
          env: [
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
          ],
          ports: [{ name: 'http', containerPort: 8080 }],
          readinessProbe: { httpGet: { path: '/readyz', port: 'http' } },
          volumeMounts: [
            { name: 'data', mountPath: '/data' },
            { name: 'tmp', mountPath: '/tmp' },
          ],
        },
      ],
      volumes: [
        { name: 'data', emptyDir: {} },
        { name: 'tmp', emptyDir: {} },
      ],
    },
  };
}

async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function readyPod(name: string): Promise<V1Pod> {
  return eventually(`pod ${name} Ready`, async () => {
    const pod = await core.readNamespacedPod({ name, namespace: NS });
    const ready = pod.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    return pod.status?.phase === 'Running' && ready ? pod : undefined;
  });
}

test('$(VAR) expansion follows Kubernetes: known names replaced, $$ escapes, unknown kept', () => {
  expect(expand('--id=$(POD_NAME) $(NOPE) $$(POD_NAME)', { POD_NAME: 'a-0' })).toBe(
    '--id=a-0 $(NOPE) $(POD_NAME)',
  );
});

test('a pod is bound, runs as a process on its own loopback IP and becomes Running and Ready', async () => {
  await core.createNamespacedPod({ namespace: NS, body: testPod('web-0') });
  await core.createNamespacedPod({ namespace: NS, body: testPod('web-1') });
  const [a, b] = await Promise.all([readyPod('web-0'), readyPod('web-1')]);
  expect(a.spec?.nodeName).toBe(agent?.name);
  expect(a.status?.podIP).toMatch(/^127\.0\.41\.\d+$/);
  expect(b.status?.podIP).toMatch(/^127\.0\.41\.\d+$/);
  expect(a.status?.podIP).not.toBe(b.status?.podIP);
  expect(a.status?.containerStatuses?.[0]).toMatchObject({ name: 'main', ready: true, restartCount: 0 });
  // Both listen on port 8080, each on its own address.
  for (const pod of [a, b]) {
    const res = await fetch(`http://${pod.status?.podIP}:8080/hello`);
    expect(await res.text()).toBe(`/hello from ${pod.metadata?.name}`);
  }
  const node = await core.readNode({ name: agent?.name ?? '' });
  expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
}, 60_000);

test('deleting a pod kills its process and removes the object; a new pod of that name keeps the data folder', async () => {
  const dataDir = path.join(cp?.workDir ?? '', 'volumes', `${NS}_web-0`, 'data');
  const pid = Number(fs.readFileSync(path.join(dataDir, 'pid'), 'utf8'));
  expect(alive(pid)).toBe(true);
  await core.deleteNamespacedPod({ name: 'web-0', namespace: NS });
  await eventually('the process to exit', () => Promise.resolve(alive(pid) ? undefined : true));
  await eventually('the pod object to go', async () => {
    try {
      await core.readNamespacedPod({ name: 'web-0', namespace: NS });
      return undefined;
    } catch {
      return true;
    }
  });
  await core.createNamespacedPod({ namespace: NS, body: testPod('web-0') });
  await readyPod('web-0');
  const starts = fs.readFileSync(path.join(dataDir, 'starts'), 'utf8').trim().split('\n');
  expect(starts).toHaveLength(2);
  // The volume substitution is one rewrite: the folder (under /tmp) is not rewritten as /tmp.
  expect(fs.readFileSync(agent?.logFile(NS, 'web-0') ?? '', 'utf8')).toContain(`--data=${dataDir} `);
  expect(fs.readFileSync(agent?.logFile(NS, 'web-0') ?? '', 'utf8')).toMatch(/exited code=0/);
}, 60_000);
