import fs from 'node:fs';
import path from 'node:path';
import { runTool, startControlPlane, type CommandResult, type ControlPlane } from './control-plane';

/*
 * Smoke test of the real control plane the operator and chart suites run
 * against: the binaries built from the Kubernetes, etcd and Helm Go modules, a
 * kubeconfig that kubectl and helm accept, and a controller manager that acts
 * on what the API server stores. Without a cached build, beforeAll compiles
 * everything (tens of minutes on 2 cores): CI runs e2e/k8s/build.sh first.
 */

// A first build on a busy 2-core machine; a cached start takes well under a minute.
const BUILD_AND_START_TIMEOUT_MS = 40 * 60_000;
const TEST_TIMEOUT_MS = 3 * 60_000;

let cp: ControlPlane | undefined;

beforeAll(async () => {
  cp = await startControlPlane();
}, BUILD_AND_START_TIMEOUT_MS);

afterAll(async () => {
  await cp?.stop();
}, 60_000);

function plane(): ControlPlane {
  if (!cp) throw new Error('the control plane did not start (see beforeAll)');
  return cp;
}

async function kubectl(args: readonly string[], input?: string): Promise<CommandResult> {
  return runTool(plane(), 'kubectl', args, input);
}

/** Runs a tool and returns its stdout; a non-zero exit fails the test with the tool's own stderr. */
async function toolOk(tool: 'kubectl' | 'helm', args: readonly string[], input?: string): Promise<string> {
  const result = await runTool(plane(), tool, args, input);
  if (result.code !== 0) {
    throw new Error(`${tool} ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  }
  return result.stdout;
}

function kubectlOk(args: readonly string[], input?: string): Promise<string> {
  return toolOk('kubectl', args, input);
}

/** Polls until check returns a value (not undefined); a loaded machine can be slow, so the wait is long. */
async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

interface ObjectList {
  items: Array<{
    metadata: { name: string; ownerReferences?: Array<{ kind: string; name: string }> };
    status?: { phase?: string };
  }>;
}

const SMOKE_MANIFEST = `
apiVersion: v1
kind: ConfigMap
metadata:
  name: smoke-config
  namespace: default
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: { app: smoke }
  template:
    metadata:
      labels: { app: smoke }
    spec:
      containers:
        - name: main
          image: registry.invalid/smoke:1
`;

describe('Kubernetes control plane built from the Go modules', () => {
  test(
    'kubectl reaches the API server and sees the system namespaces',
    async () => {
      const out = await kubectlOk(['get', 'namespaces', '-o', 'jsonpath={.items[*].metadata.name}']);
      const names = out.split(/\s+/);
      expect(names).toEqual(expect.arrayContaining(['default', 'kube-system']));

      const version = JSON.parse(await kubectlOk(['version', '-o', 'json'])) as {
        serverVersion: { gitVersion: string };
      };
      // The build stamps the real version; an unstamped v0.0.0 would fail helm's kubeVersion checks.
      expect(version.serverVersion.gitVersion).toMatch(/^v1\.\d+\.\d+$/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'kubectl apply of a ConfigMap and a Deployment; the controller manager makes the ReplicaSet and pods',
    async () => {
      const applied = await kubectlOk(['apply', '-f', '-'], SMOKE_MANIFEST);
      expect(applied).toMatch(/configmap\/smoke-config (created|configured)/);
      expect(applied).toMatch(/deployment.apps\/smoke (created|configured)/);
      expect(await kubectlOk(['get', 'configmap', 'smoke-config', '-o', 'jsonpath={.data.greeting}'])).toBe(
        'hello',
      );

      const replicaSet = await eventually('the Deployment controller to create a ReplicaSet', async () => {
        const list = JSON.parse(
          await kubectlOk(['get', 'replicasets', '-l', 'app=smoke', '-o', 'json']),
        ) as ObjectList;
        return list.items.find((rs) =>
          rs.metadata.ownerReferences?.some((o) => o.kind === 'Deployment' && o.name === 'smoke'),
        );
      });

      // No kubelet and no scheduler run here, so the pods exist but stay Pending.
      const pods = await eventually('the ReplicaSet controller to create 2 pods', async () => {
        const list = JSON.parse(
          await kubectlOk(['get', 'pods', '-l', 'app=smoke', '-o', 'json']),
        ) as ObjectList;
        return list.items.length === 2 ? list.items : undefined;
      });
      for (const pod of pods) {
        expect(pod.metadata.ownerReferences).toEqual(
          expect.arrayContaining([
            expect.objectContaining({ kind: 'ReplicaSet', name: replicaSet.metadata.name }),
          ]),
        );
        expect(pod.status?.phase).toBe('Pending');
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the API server refuses an invalid object with its own message',
    async () => {
      const result = await kubectl(
        ['create', '-f', '-'],
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\n  namespace: default\n',
      );
      expect(result.code).not.toBe(0);
      // The wording of the API server's validation (apimachinery), not of kubectl's client side.
      expect(result.stderr).toMatch(/ConfigMap "Not_A_Valid_Name" is invalid: metadata\.name: Invalid value/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'helm runs and installs a chart into the cluster',
    async () => {
      expect(await toolOk('helm', ['version', '--short'])).toMatch(/^v3\.\d+\.\d+/);

      const chartDir = path.join(plane().workDir, 'smoke-chart');
      await toolOk('helm', ['create', chartDir]);
      expect(fs.existsSync(path.join(chartDir, 'Chart.yaml'))).toBe(true);
      const installed = await toolOk('helm', ['install', 'smoke-chart', chartDir, '--namespace', 'default']);
      expect(installed).toMatch(/STATUS: deployed/);
      expect(await toolOk('helm', ['list', '--namespace', 'default', '--short'])).toContain('smoke-chart');
      expect(await kubectlOk(['get', 'deployment', 'smoke-chart', '-o', 'jsonpath={.metadata.name}'])).toBe(
        'smoke-chart',
      );
    },
    TEST_TIMEOUT_MS,
  );
});
