import fs from 'node:fs';
import path from 'node:path';
import { parseKVClusterSpec } from '../../crds/kvcluster-spec';
import {
  runTool,
  startControlPlane,
  type CommandResult,
  type ControlPlane,
  eventually,
  runToolOk,
} from './control-plane';

/*
 * The generated KVCluster CRD against a real kube-apiserver: it is accepted
 * and Established; the server fills the same defaults parseKVClusterSpec
 * does; bad specs are refused by the server itself with a message naming the
 * field (OpenAPI validation, CEL rules, transition rules); the scale and
 * status subresources and the printer columns work with plain kubectl; and
 * Helm checks the chart's values.schema.json. The tests share one cluster and
 * run in order: `demo` is created by the defaults test and used after it.
 */

const BUILD_AND_START_TIMEOUT_MS = 40 * 60_000; // a first build of the binaries; cached, ~10 s
const TEST_TIMEOUT_MS = 2 * 60_000;
const repoRoot = path.resolve(__dirname, '..', '..');
const CRD_FILE = path.join(repoRoot, 'crds', 'kvcluster.yaml');

let cp: ControlPlane | undefined;

beforeAll(async () => {
  cp = await startControlPlane();
  await kubectlOk(['apply', '-f', CRD_FILE]);
  await kubectlOk(['wait', '--for=condition=Established', 'crd/kvclusters.kvstore.io', '--timeout=90s']);
}, BUILD_AND_START_TIMEOUT_MS);

afterAll(async () => {
  await cp?.stop();
}, 60_000);

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

/** A KVCluster manifest (JSON is YAML, and kubectl reads it from stdin). */
function kvcluster(name: string, spec?: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: 'kvstore.io/v1alpha1',
    kind: 'KVCluster',
    metadata: { name, namespace: 'default' },
    ...(spec === undefined ? {} : { spec }),
  });
}

interface StoredKVCluster {
  metadata: { generation: number };
  spec: Record<string, unknown> & { replicas: number; partitions: number };
  status?: Record<string, unknown>;
}

async function getKVCluster(name: string): Promise<StoredKVCluster> {
  return JSON.parse(await kubectlOk(['get', 'kvcluster', name, '-o', 'json'])) as StoredKVCluster;
}

/** Applies a manifest that the API server must refuse; returns the server's message. */
async function refused(manifest: string, extraArgs: readonly string[] = []): Promise<string> {
  const result = await kubectl(['apply', ...extraArgs, '-f', '-'], manifest);
  expect(result.code).not.toBe(0);
  return result.stderr;
}

describe('the KVCluster CRD on a real API server', () => {
  test(
    'is Established, with its names and short name',
    async () => {
      const crd = JSON.parse(await kubectlOk(['get', 'crd', 'kvclusters.kvstore.io', '-o', 'json'])) as {
        status: {
          conditions: Array<{ type: string; status: string }>;
          acceptedNames: { shortNames: string[] };
        };
      };
      const conditions = Object.fromEntries(crd.status.conditions.map((c) => [c.type, c.status]));
      expect(conditions).toMatchObject({ Established: 'True', NamesAccepted: 'True' });
      expect(crd.status.acceptedNames.shortNames).toEqual(['kvc']);
      // Descriptions reach kubectl explain, once the server publishes the CRD's OpenAPI (it lags a little
      // behind Established) and kubectl's discovery cache, filled before the CRD existed, refreshes.
      const explained = await eventually('kubectl explain kvc.spec.replicationFactor', async () => {
        const result = await kubectl(['explain', 'kvc.spec.replicationFactor']);
        return result.code === 0 ? result.stdout : undefined;
      });
      expect(explained).toMatch(/must not exceed replicas/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'a minimal KVCluster comes back with every default filled in by the server, as parseKVClusterSpec fills them',
    async () => {
      expect(await kubectlOk(['apply', '-f', '-'], kvcluster('demo'))).toMatch(
        /kvcluster.kvstore.io\/demo created/,
      );
      const demo = await getKVCluster('demo');
      expect(demo.spec).toEqual(parseKVClusterSpec(undefined));
      expect(demo.spec).toMatchObject({
        replicas: 3,
        replicationFactor: 3,
        partitions: 256,
        deletionPolicy: 'Retain',
      });

      // Nested defaults inside a partly written object are filled in too, the same on both sides.
      const partial = {
        gateway: { replicas: 0 },
        storage: { size: '5Gi' },
        monitoring: { serviceMonitor: {} },
      };
      await kubectlOk(['apply', '-f', '-'], kvcluster('partial', partial));
      expect((await getKVCluster('partial')).spec).toEqual(parseKVClusterSpec(partial));
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "refuses bad specs with the server's own message naming the field, and stores nothing",
    async () => {
      // CEL rule on spec (RF <= replicas)
      expect(await refused(kvcluster('bad-rf', { replicas: 2, replicationFactor: 3 }))).toMatch(
        /The KVCluster "bad-rf" is invalid: spec\.replicationFactor: Invalid value: .*replicationFactor must not exceed replicas/,
      );
      // OpenAPI minimum (the CEL rule fires as well, since the default RF 3 > 0)
      expect(await refused(kvcluster('bad-zero', { replicas: 0 }))).toMatch(
        /spec\.replicas: Invalid value: 0: spec\.replicas in body should be greater than or equal to 1/,
      );
      // OpenAPI enum
      expect(await refused(kvcluster('bad-pull', { imagePullPolicy: 'Sometimes' }))).toMatch(
        /spec\.imagePullPolicy: Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"/,
      );
      // CEL rule on spec.redis
      expect(
        await refused(kvcluster('bad-redis', { redis: { url: 'redis://redis:6379', managed: true } })),
      ).toMatch(
        /spec\.redis\.url: Invalid value: .*redis\.url and redis\.managed=true are mutually exclusive/,
      );
      // CEL rule on spec.auth: your own API keys, or none at all, not both
      expect(
        await refused(kvcluster('bad-auth', { auth: { secretRef: { name: 'keys' }, disabled: true } })),
      ).toMatch(
        /spec\.auth\.disabled: Invalid value: .*auth\.secretRef and auth\.disabled=true are mutually exclusive/,
      );
      // pattern on an int-or-string quantity
      expect(await refused(kvcluster('bad-size', { storage: { size: 'lots' } }))).toMatch(
        /spec\.storage\.size: Invalid value: "lots": spec\.storage\.size in body should match/,
      );
      // CEL rule on metadata.name: the operator derives Service names from it
      expect(await refused(kvcluster('1cluster'))).toMatch(
        /metadata\.name: Invalid value: "1cluster": must be a DNS-1035 label .* of at most 40 characters/,
      );
      const listed = await kubectlOk(['get', 'kvc', '-o', 'jsonpath={.items[*].metadata.name}']);
      expect(listed.split(' ').sort()).toEqual(['demo', 'partial']);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'refuses a change of partitions (transition rule) but allows other changes',
    async () => {
      expect(await refused(kvcluster('demo', { partitions: 512 }))).toMatch(
        /The KVCluster "demo" is invalid: spec\.partitions: Forbidden: partitions is immutable/,
      );
      expect((await getKVCluster('demo')).spec.partitions).toBe(256);
      await kubectlOk(['apply', '-f', '-'], kvcluster('demo', { partitions: 256, image: 'kvstore:0.2.0' }));
      expect((await getKVCluster('demo')).spec).toMatchObject({ partitions: 256, image: 'kvstore:0.2.0' });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "an unknown field: refused by kubectl's default strict field validation, pruned when validation is relaxed",
    async () => {
      // kubectl asks for server-side strict field validation by default: the server names the field.
      expect(await refused(kvcluster('typo', { replicaz: 5 }))).toMatch(
        /strict decoding error: unknown field "spec\.replicaz"/,
      );
      // --validate=warn: stored, with a warning; the structural schema prunes the field.
      const warn = await kubectl(['apply', '--validate=warn', '-f', '-'], kvcluster('typo', { replicaz: 5 }));
      expect(warn.code).toBe(0);
      expect(warn.stderr).toMatch(/Warning: unknown field "spec\.replicaz"/);
      expect((await getKVCluster('typo')).spec).toEqual(parseKVClusterSpec({}));
      // --validate=false: stored and pruned without a word.
      const silent = await kubectl(
        ['apply', '--validate=false', '-f', '-'],
        kvcluster('typo2', { replicaz: 5 }),
      );
      expect(silent.code).toBe(0);
      expect(silent.stderr).toBe('');
      expect((await getKVCluster('typo2')).spec).not.toHaveProperty('replicaz');
      await kubectlOk(['delete', 'kvc', 'typo', 'typo2']);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'kubectl scale changes spec.replicas through the scale subresource, and CEL still applies',
    async () => {
      const before = await getKVCluster('demo');
      expect(await kubectlOk(['scale', 'kvcluster/demo', '--replicas=5'])).toMatch(
        /kvcluster.kvstore.io\/demo scaled/,
      );
      const after = await getKVCluster('demo');
      expect(after.spec.replicas).toBe(5);
      expect(after.metadata.generation).toBe(before.metadata.generation + 1);
      const scale = JSON.parse(
        await kubectlOk([
          'get',
          '--raw',
          '/apis/kvstore.io/v1alpha1/namespaces/default/kvclusters/demo/scale',
        ]),
      ) as { kind: string; spec: { replicas: number } };
      expect(scale).toMatchObject({ kind: 'Scale', spec: { replicas: 5 } });

      // Scaling below the replication factor is refused with the same rule as an apply.
      const below = await kubectl(['scale', 'kvcluster/demo', '--replicas=2']);
      expect(below.code).not.toBe(0);
      expect(below.stderr).toMatch(
        /spec\.replicationFactor: Invalid value: .*replicationFactor must not exceed replicas/,
      );
      expect((await getKVCluster('demo')).spec.replicas).toBe(5);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'status is a subresource: patched only through it, validated, and fed to the scale subresource',
    async () => {
      const status = {
        observedGeneration: 3,
        phase: 'Running',
        replicas: 5,
        readyReplicas: 4,
        selector: 'app.kubernetes.io/instance=demo,app.kubernetes.io/component=node',
        mapEpoch: 7,
        partitionsMoving: 12,
        conditions: [
          {
            type: 'Ready',
            status: 'False',
            reason: 'NodesNotReady',
            message: '4 of 5 nodes ready',
            lastTransitionTime: '2025-01-01T00:00:00Z',
            observedGeneration: 3,
          },
        ],
      };
      const generation = (await getKVCluster('demo')).metadata.generation;
      await kubectlOk([
        'patch',
        'kvcluster',
        'demo',
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify({ status }),
      ]);
      const patched = await getKVCluster('demo');
      expect(patched.status).toEqual(status);
      expect(patched.metadata.generation).toBe(generation); // status writes do not bump the generation

      // Through the main resource, status is ignored (that is what the subresource means).
      await kubectlOk([
        'patch',
        'kvcluster',
        'demo',
        '--type=merge',
        '-p',
        '{"status":{"phase":"Deleting"}}',
      ]);
      expect((await getKVCluster('demo')).status?.phase).toBe('Running');

      // The status schema is enforced too.
      const bad = await kubectl([
        'patch',
        'kvcluster',
        'demo',
        '--subresource=status',
        '--type=merge',
        '-p',
        '{"status":{"phase":"Exploding"}}',
      ]);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/status\.phase: Unsupported value: "Exploding"/);

      const scale = JSON.parse(
        await kubectlOk([
          'get',
          '--raw',
          '/apis/kvstore.io/v1alpha1/namespaces/default/kvclusters/demo/scale',
        ]),
      ) as { status: { replicas: number; selector: string } };
      expect(scale.status).toEqual({ replicas: 5, selector: status.selector });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'kubectl get kvc shows the printer columns',
    async () => {
      const lines = (await kubectlOk(['get', 'kvc'])).trim().split('\n');
      expect(lines[0]?.split(/\s+/)).toEqual([
        'NAME',
        'REPLICAS',
        'READY',
        'PHASE',
        'EPOCH',
        'MOVING',
        'AGE',
      ]);
      const demo = lines.find((l) => l.startsWith('demo '))?.split(/\s+/);
      expect(demo?.slice(0, 6)).toEqual(['demo', '5', '4', 'Running', '7', '12']);
      expect(demo?.[6]).toMatch(/^\d+s$|^\d+m/);
      // A cluster without status shows blanks, not errors.
      const partial = lines.find((l) => l.startsWith('partial '))?.split(/\s+/);
      expect(partial?.slice(0, 2)).toEqual(['partial', '3']);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "helm checks values against the chart's values.schema.json before anything reaches the server",
    async () => {
      // A scratch chart with the generated schema and a template that renders the cluster section.
      const chart = path.join(plane().workDir, 'schema-chart');
      fs.mkdirSync(path.join(chart, 'templates'), { recursive: true });
      fs.writeFileSync(
        path.join(chart, 'Chart.yaml'),
        'apiVersion: v2\nname: schema-chart\nversion: 0.1.0\n',
      );
      fs.copyFileSync(
        path.join(repoRoot, 'charts', 'kvstore', 'values.schema.json'),
        path.join(chart, 'values.schema.json'),
      );
      fs.writeFileSync(
        path.join(chart, 'values.yaml'),
        'cluster:\n  enabled: true\n  name: from-helm\noperator: {}\n',
      );
      fs.writeFileSync(
        path.join(chart, 'templates', 'kvcluster.yaml'),
        'apiVersion: kvstore.io/v1alpha1\nkind: KVCluster\nmetadata:\n  name: {{ .Values.cluster.name }}\n' +
          'spec:\n{{ toYaml (omit .Values.cluster "enabled" "name") | indent 2 }}\n',
      );
      const helm = (args: readonly string[]): Promise<CommandResult> => runTool(plane(), 'helm', args);

      const rendered = await helm([
        'template',
        chart,
        '--set',
        'cluster.replicas=5',
        '--set',
        'cluster.resources.node.limits.cpu=2',
      ]);
      expect(rendered.stderr).toBe('');
      expect(rendered.code).toBe(0);
      // What Helm renders, the API server accepts.
      expect(await kubectlOk(['apply', '--dry-run=server', '-f', '-'], rendered.stdout)).toMatch(
        /from-helm created/,
      );

      const zero = await helm(['template', chart, '--set', 'cluster.replicas=0']);
      expect(zero.code).not.toBe(0);
      expect(zero.stderr).toMatch(/at '\/cluster\/replicas': minimum: got 0, want 1/);
      const typo = await helm(['template', chart, '--set', 'cluster.replicaz=5']);
      expect(typo.code).not.toBe(0);
      expect(typo.stderr).toMatch(/at '\/cluster': additional properties 'replicaz' not allowed/);
      const policy = await helm(['template', chart, '--set', 'cluster.deletionPolicy=Orphan']);
      expect(policy.code).not.toBe(0);
      expect(policy.stderr).toMatch(
        /at '\/cluster\/deletionPolicy': value must be one of 'Retain', 'Delete'/,
      );
    },
    TEST_TIMEOUT_MS,
  );
});
