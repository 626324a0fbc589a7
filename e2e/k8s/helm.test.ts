import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import YAML from 'yaml';
import { parseKVClusterSpec } from '../../crds/kvcluster-spec';
import { desiredResources, resourceList } from '../../operator/specs/desired-resources';
import { adminTokenSecretName } from '../../operator/specs/names';
import {
  runTool,
  startControlPlane,
  type CommandResult,
  type ControlPlane,
  eventually,
} from './control-plane';

/*
 * The Helm chart (charts/kvstore) with the real helm binary and a real kube-apiserver: `helm lint
 * --strict`; what `helm template` renders with the defaults and with every optional feature on (the
 * dashboards and alerts are the repository's files, byte for byte; the NetworkPolicy selects the
 * node pods; the RBAC is exactly what the operator needs); values.yaml agrees with the generated
 * values.schema.json, and helm refuses values that break it; `helm install` creates the CRD, the
 * operator and its RBAC and a KVCluster the CRD accepts, whose pods pass the "restricted" Pod Security
 * Standard; the operator's ServiceAccount can do what it needs and no more (`kubectl auth can-i`, and
 * applying as that account every object operator/specs/ makes of a KVCluster); the operator
 * binary (dist/, built by `npm test`) takes the flags the chart gives it; `helm uninstall` removes it
 * all. The tests share one control plane and run in order: the uninstall test removes what the
 * install test made.
 */

const BUILD_AND_START_TIMEOUT_MS = 40 * 60_000; // a first build of the binaries; cached, ~10 s
const TEST_TIMEOUT_MS = 3 * 60_000;
const repoRoot = path.resolve(__dirname, '..', '..');
const CHART = path.join(repoRoot, 'charts', 'kvstore');
const DASHBOARDS_DIR = path.join(CHART, 'dashboards');
const ALERTS_FILE = path.join(CHART, 'rules', 'kvstore-alerts.yaml');

/** Release `kv` in namespace `kvstore-system`, every optional feature on. */
const RELEASE = 'kv';
const NS = 'kvstore-system';
/** A namespace where KVClusters run besides the release's (networkPolicy.extraNamespaces). */
const OTHER_NS = 'team-a';
const SA = `system:serviceaccount:${NS}:kv-kvstore-operator`;

const EVERYTHING_ON = [
  'cluster.enabled=true',
  'redis.managed=true',
  'monitoring.prometheusRule.enabled=true',
  'operator.serviceMonitor.enabled=true',
  `networkPolicy.extraNamespaces={${OTHER_NS}}`,
].flatMap((s) => ['--set', s]);

/** What the operator may do, wherever it watches KVClusters (a ClusterRole, or a Role in watchNamespace). */
const OPERATOR_RULES = [
  {
    apiGroups: ['kvstore.io'],
    resources: ['kvclusters', 'kvclusters/status', 'kvclusters/finalizers'],
    verbs: ['get', 'list', 'watch', 'update', 'patch'],
  },
  {
    apiGroups: ['apps'],
    resources: ['statefulsets', 'deployments'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
  },
  {
    apiGroups: [''],
    resources: ['services', 'configmaps', 'persistentvolumeclaims', 'serviceaccounts'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
  },
  {
    // the per-cluster Role + RoleBinding that let nodes and gateways read their partition-map ConfigMap
    apiGroups: ['rbac.authorization.k8s.io'],
    resources: ['roles', 'rolebindings'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
  },
  { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['', 'events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
  {
    apiGroups: ['policy'],
    resources: ['poddisruptionbudgets'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
  },
  {
    apiGroups: ['monitoring.coreos.com'],
    resources: ['servicemonitors'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
  },
  // each cluster's generated internal token and admin key, read by name: no list, no watch
  { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'create', 'patch'] },
];
/** Its leader-election Lease, in the release namespace only. */
const LEADER_ELECTION_RULES = [
  {
    apiGroups: ['coordination.k8s.io'],
    resources: ['leases'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch'],
  },
  { apiGroups: ['', 'events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
];
/** Cluster-scoped reads: does the ServiceMonitor CRD exist; the zone label of a pod's Node. */
const READONLY_RULES = [
  { apiGroups: ['apiextensions.k8s.io'], resources: ['customresourcedefinitions'], verbs: ['get', 'list'] },
  { apiGroups: [''], resources: ['nodes'], verbs: ['get'] },
];

/** Stand-ins for the Prometheus Operator's CRDs, so the chart's PrometheusRule and ServiceMonitor install. */
const MONITORING_CRDS = ['PrometheusRule', 'ServiceMonitor']
  .map((kind) => {
    const plural = `${kind.toLowerCase()}s`;
    return JSON.stringify({
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: `${plural}.monitoring.coreos.com` },
      spec: {
        group: 'monitoring.coreos.com',
        names: { kind, plural, listKind: `${kind}List`, singular: kind.toLowerCase() },
        scope: 'Namespaced',
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
          },
        ],
      },
    });
  })
  .join('\n---\n');

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    serviceAccountName?: string;
    automountServiceAccountToken?: boolean;
    securityContext?: Record<string, unknown>;
    containers: Array<{
      name: string;
      image: string;
      command?: string[];
      args?: string[];
      env?: Array<{ name: string; value?: string }>;
      ports?: Array<{ name: string; containerPort: number }>;
      securityContext?: Record<string, unknown>;
      resources?: Record<string, unknown>;
      livenessProbe?: { httpGet?: { path: string; port: string } };
      readinessProbe?: { httpGet?: { path: string; port: string } };
      volumeMounts?: Array<{ name: string; mountPath: string }>;
    }>;
  };
}

interface Deployment extends K8sObject {
  spec: { replicas: number; selector: { matchLabels: Record<string, string> }; template: PodTemplate };
}

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

interface LabelSelector {
  matchLabels?: Record<string, string>;
}

interface NetworkPolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
}

interface NetworkPolicy extends K8sObject {
  spec: {
    podSelector: LabelSelector;
    policyTypes: string[];
    ingress: Array<{ ports: Array<{ port: number; protocol: string }>; from: NetworkPolicyPeer[] }>;
  };
}

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

function helm(args: readonly string[]): Promise<CommandResult> {
  return runTool(plane(), 'helm', args);
}

function kubectl(args: readonly string[], input?: string): Promise<CommandResult> {
  return runTool(plane(), 'kubectl', args, input);
}

async function ok(tool: 'helm' | 'kubectl', args: readonly string[], input?: string): Promise<string> {
  const result = await runTool(plane(), tool, args, input);
  if (result.code !== 0) throw new Error(`${tool} ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/** `helm template` of the chart: every object it renders. */
async function render(args: readonly string[] = [], release = RELEASE, namespace = NS): Promise<K8sObject[]> {
  const out = await ok('helm', ['template', release, CHART, '--namespace', namespace, ...args]);
  return YAML.parseAllDocuments(out)
    .map((doc) => doc.toJSON() as K8sObject | null)
    .filter((obj): obj is K8sObject => obj !== null);
}

function only<T extends K8sObject>(objects: readonly K8sObject[], kind: string, name?: string): T {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1)
    throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0] as T;
}

function kinds(objects: readonly K8sObject[]): string[] {
  return objects.map((o) => o.kind).sort();
}

/** Every label of `selector` is on `labels`. */
function selects(selector: LabelSelector | undefined, labels: Record<string, string>): boolean {
  return Object.entries(selector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
}

const dashboardFiles = fs
  .readdirSync(DASHBOARDS_DIR)
  .filter((f) => f.endsWith('.json'))
  .sort();

describe('the kvstore Helm chart', () => {
  test(
    'helm lint --strict passes, with the defaults and with every optional feature on',
    async () => {
      expect(await ok('helm', ['lint', '--strict', CHART])).toMatch(
        /1 chart\(s\) linted, 0 chart\(s\) failed/,
      );
      expect(await ok('helm', ['lint', '--strict', CHART, ...EVERYTHING_ON])).toMatch(/0 chart\(s\) failed/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'values.yaml documents every chart key, with the defaults values.schema.json states',
    () => {
      const values = YAML.parse(fs.readFileSync(path.join(CHART, 'values.yaml'), 'utf8')) as Record<
        string,
        unknown
      >;
      const schema = JSON.parse(fs.readFileSync(path.join(CHART, 'values.schema.json'), 'utf8')) as Schema;
      interface Schema {
        default?: unknown;
        properties?: Record<string, Schema>;
      }
      const problems: string[] = [];
      const walk = (node: Schema, value: unknown, at: string, everyKey: boolean): void => {
        for (const [key, child] of Object.entries(node.properties ?? {})) {
          const where = at ? `${at}.${key}` : key;
          const present = typeof value === 'object' && value !== null && key in value;
          if (!present) {
            if (everyKey) problems.push(`${where} is not in values.yaml`);
            continue;
          }
          const v = (value as Record<string, unknown>)[key];
          const scalarDefault =
            child.default !== undefined &&
            (typeof child.default !== 'object' || Array.isArray(child.default));
          if (scalarDefault && !isDeepStrictEqual(v, child.default))
            problems.push(
              `${where}: values.yaml ${JSON.stringify(v)}, schema ${JSON.stringify(child.default)}`,
            );
          walk(child, v, where, everyKey);
        }
      };
      const { cluster, ...chart } = schema.properties ?? {};
      walk({ properties: chart }, values, '', true);
      // The cluster section lists the main spec fields; those it lists carry the CRD's defaults.
      walk(cluster ?? {}, values.cluster, 'cluster', false);
      expect(problems).toEqual([]);
      expect(values.cluster).toMatchObject({ enabled: false });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'renders with the defaults: the operator, its RBAC, Service, NetworkPolicy and dashboards, nothing optional',
    async () => {
      const objects = await render();
      expect(kinds(objects)).toEqual(
        [
          'ClusterRole',
          'ClusterRole',
          'ClusterRoleBinding',
          'ClusterRoleBinding',
          ...dashboardFiles.map(() => 'ConfigMap'),
          'Deployment',
          'NetworkPolicy',
          'Role',
          'RoleBinding',
          'Service',
          'ServiceAccount',
        ].sort(),
      );
      for (const o of objects) {
        if (!['ClusterRole', 'ClusterRoleBinding'].includes(o.kind)) expect(o.metadata.namespace).toBe(NS);
      }

      const deployment = only<Deployment>(objects, 'Deployment', 'kv-kvstore-operator');
      expect(deployment.spec.replicas).toBe(1);
      const pod = deployment.spec.template;
      expect(selects(deployment.spec.selector, pod.metadata.labels)).toBe(true);
      expect(pod.spec.serviceAccountName).toBe('kv-kvstore-operator');
      expect(pod.spec.securityContext).toMatchObject({
        runAsNonRoot: true,
        runAsUser: 1000,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      const [container] = pod.spec.containers;
      expect(container).toMatchObject({
        image: 'kvstore:0.1.0',
        command: ['node', 'dist/operator/main.js'],
        args: [`--lease-namespace=${NS}`, '--leader-elect=true', '--metrics-listen=0.0.0.0:8080'],
        ports: [{ name: 'metrics', containerPort: 8080 }],
        securityContext: {
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
        },
        resources: { requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '512Mi' } },
        livenessProbe: { httpGet: { path: '/healthz', port: 'metrics' } },
        readinessProbe: { httpGet: { path: '/readyz', port: 'metrics' } },
        volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
      });
      expect(container?.env?.map((e) => e.name)).toEqual(['LOG_LEVEL', 'POD_NAME', 'POD_NAMESPACE']);

      const service = only<K8sObject & { spec: { selector: Record<string, string> } }>(objects, 'Service');
      expect(selects({ matchLabels: service.spec.selector }, pod.metadata.labels)).toBe(true);

      // RBAC: exactly what the operator needs, in three parts; the ServiceAccount is the subject of all.
      expect(
        only<K8sObject & { rules: Rule[] }>(objects, 'ClusterRole', `${NS}-kv-kvstore-operator`).rules,
      ).toEqual(OPERATOR_RULES);
      expect(
        only<K8sObject & { rules: Rule[] }>(objects, 'Role', 'kv-kvstore-leader-election').rules,
      ).toEqual(LEADER_ELECTION_RULES);
      expect(
        only<K8sObject & { rules: Rule[] }>(objects, 'ClusterRole', `${NS}-kv-kvstore-operator-readonly`)
          .rules,
      ).toEqual(READONLY_RULES);
      for (const binding of objects.filter((o) => o.kind.endsWith('Binding'))) {
        expect(binding.subjects).toEqual([
          { kind: 'ServiceAccount', name: 'kv-kvstore-operator', namespace: NS },
        ]);
      }
      expect(JSON.stringify(objects.filter((o) => 'rules' in o))).not.toMatch(/"\*"/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'every optional feature on: dashboards and alerts are the files, the NetworkPolicy guards the node pods, the KVCluster uses the managed Redis',
    async () => {
      const objects = await render([
        ...EVERYTHING_ON,
        '--set',
        'monitoring.prometheusRule.runbookBaseUrl=https://git.example/kvstore/blob/main/',
        '--set',
        'dashboards.labelValue=kvstore',
      ]);
      expect(kinds(objects)).toEqual(
        expect.arrayContaining(['KVCluster', 'PrometheusRule', 'ServiceMonitor', 'Deployment', 'Deployment']),
      );

      // Dashboards: one ConfigMap per file, holding the file's exact text, which is JSON.
      const dashboards = objects.filter((o) => o.kind === 'ConfigMap');
      expect(dashboards).toHaveLength(dashboardFiles.length);
      for (const file of dashboardFiles) {
        const text = fs.readFileSync(path.join(DASHBOARDS_DIR, file), 'utf8');
        const cm = dashboards.find((o) => (o.data as Record<string, string>)[file] !== undefined);
        expect(cm?.metadata.labels).toMatchObject({ grafana_dashboard: 'kvstore' });
        const data = (cm?.data ?? {}) as Record<string, string>;
        expect(Object.keys(data)).toEqual([file]);
        expect(data[file]).toBe(text);
        expect(() => JSON.parse(data[file] ?? '')).not.toThrow();
      }
      expect(
        dashboardFiles.some((f) => fs.readFileSync(path.join(DASHBOARDS_DIR, f), 'utf8').includes('{{')),
      ).toBe(true); // Grafana's own templating went through Helm untouched

      // Alerts: the file's groups, with the runbook base URL in front of each runbook_url.
      const rule = only<K8sObject & { spec: { groups: unknown } }>(objects, 'PrometheusRule');
      const fileGroups = (YAML.parse(fs.readFileSync(ALERTS_FILE, 'utf8')) as { groups: unknown }).groups;
      type AlertGroups = Array<{ rules: Array<{ annotations?: Record<string, string> }> }>;
      const expected = structuredClone(fileGroups) as AlertGroups;
      for (const group of expected)
        for (const r of group.rules)
          if (r.annotations?.runbook_url)
            r.annotations.runbook_url = `https://git.example/kvstore/blob/main/${r.annotations.runbook_url}`;
      expect(rule.spec.groups).toEqual(expected);
      expect(JSON.stringify(rule.spec.groups)).toContain('{{ $labels.node }}');
      // Without a base URL the groups are the file's, exactly.
      const plain = only<K8sObject & { spec: { groups: unknown } }>(
        await render(['--set', 'monitoring.prometheusRule.enabled=true']),
        'PrometheusRule',
      );
      expect(plain.spec.groups).toEqual(fileGroups);

      // NetworkPolicy: node pods; RPC from gateways, peers and the operator; admin also from monitoring.
      const deployment = only<Deployment>(objects, 'Deployment', 'kv-kvstore-operator');
      const operatorLabels = deployment.spec.template.metadata.labels;
      const policies = objects.filter(
        (o): o is NetworkPolicy => o.kind === 'NetworkPolicy' && o.metadata.name === 'kv-kvstore-nodes',
      );
      expect(policies.map((p) => p.metadata.namespace).sort()).toEqual([NS, OTHER_NS].sort());
      const nodePod = { 'app.kubernetes.io/name': 'kvstore', 'app.kubernetes.io/component': 'node' };
      const gatewayPod = { 'app.kubernetes.io/name': 'kvstore', 'app.kubernetes.io/component': 'gateway' };
      for (const policy of policies) {
        expect(policy.spec.podSelector).toEqual({ matchLabels: nodePod });
        expect(policy.spec.policyTypes).toEqual(['Ingress']);
        const [rpc, admin] = policy.spec.ingress;
        expect(policy.spec.ingress).toHaveLength(2);
        expect(rpc?.ports).toEqual([{ port: 7001, protocol: 'TCP' }]);
        expect(admin?.ports).toEqual([{ port: 7101, protocol: 'TCP' }]);
        const peers = rpc?.from ?? [];
        expect(peers).toHaveLength(3);
        expect(peers).toContainEqual({ podSelector: { matchLabels: gatewayPod } });
        expect(peers).toContainEqual({ podSelector: { matchLabels: nodePod } });
        const operatorPeer = peers.find((p) => p.namespaceSelector);
        expect(operatorPeer?.namespaceSelector).toEqual({
          matchLabels: { 'kubernetes.io/metadata.name': NS },
        });
        expect(selects(operatorPeer?.podSelector, operatorLabels)).toBe(true);
        expect(admin?.from).toEqual([
          ...peers,
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
        ]);
      }

      // Managed Redis: a Deployment and Service; the KVCluster and the operator get its URL.
      const redisUrl = `redis://kv-kvstore-redis.${NS}.svc.cluster.local:6379`;
      const redis = only<Deployment>(objects, 'Deployment', 'kv-kvstore-redis');
      const redisService = only<K8sObject & { spec: { selector: Record<string, string>; ports: unknown[] } }>(
        objects,
        'Service',
        'kv-kvstore-redis',
      );
      expect(selects({ matchLabels: redisService.spec.selector }, redis.spec.template.metadata.labels)).toBe(
        true,
      );
      expect(redisService.spec.ports).toEqual([
        { name: 'redis', port: 6379, targetPort: 'redis', protocol: 'TCP' },
      ]);
      const redisContainer = redis.spec.template.spec.containers[0];
      expect(redisContainer?.image).toBe('redis:7.4-alpine');
      expect(redisContainer?.args).toEqual(expect.arrayContaining(['--save', '', '--appendonly', 'no']));
      expect(redis.spec.template.spec.automountServiceAccountToken).toBe(false);
      const kvcluster = only<K8sObject & { spec: Record<string, unknown> }>(objects, 'KVCluster');
      expect(kvcluster.metadata).toMatchObject({ name: RELEASE, namespace: NS });
      expect(kvcluster.spec.redis).toEqual({ managed: false, url: redisUrl });
      expect(parseKVClusterSpec(kvcluster.spec)).toMatchObject({
        replicas: 3,
        replicationFactor: 3,
        image: 'kvstore:0.1.0',
        redis: { url: redisUrl },
      });
      expect(deployment.spec.template.spec.containers[0]?.args).toContain(`--managed-redis-url=${redisUrl}`);

      // The operator's image is the cluster's default image too; a spec'd image wins.
      const custom = await render([
        '--set',
        'cluster.enabled=true',
        '--set',
        'image.repository=registry.example/kvstore',
        '--set',
        'image.tag=0.1.1',
      ]);
      expect(only<Deployment>(custom, 'Deployment').spec.template.spec.containers[0]?.image).toBe(
        'registry.example/kvstore:0.1.1',
      );
      expect(only<K8sObject & { spec: { image: string } }>(custom, 'KVCluster').spec.image).toBe(
        'registry.example/kvstore:0.1.1',
      );
      const pinned = await render(['--set', 'cluster.enabled=true', '--set', 'cluster.image=kvstore:0.0.9']);
      expect(only<K8sObject & { spec: { image: string } }>(pinned, 'KVCluster').spec.image).toBe(
        'kvstore:0.0.9',
      );
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'operator.watchNamespace: a Role and RoleBinding in that namespace instead of the ClusterRole, and --namespace',
    async () => {
      const objects = await render(['--set', 'operator.watchNamespace=team-b']);
      const role = only<K8sObject & { rules: Rule[] }>(objects, 'Role', 'kv-kvstore-operator');
      expect(role.metadata.namespace).toBe('team-b');
      expect(role.rules).toEqual(OPERATOR_RULES);
      expect(only<K8sObject>(objects, 'RoleBinding', 'kv-kvstore-operator').metadata.namespace).toBe(
        'team-b',
      );
      // Only the cluster-scoped reads (CRDs, Nodes) stay in a ClusterRole.
      expect(objects.filter((o) => o.kind === 'ClusterRole').map((o) => o.metadata.name)).toEqual([
        `${NS}-kv-kvstore-operator-readonly`,
      ]);
      expect(only<Deployment>(objects, 'Deployment').spec.template.spec.containers[0]?.args).toEqual([
        '--namespace=team-b',
        `--lease-namespace=${NS}`,
        '--leader-elect=true',
        '--metrics-listen=0.0.0.0:8080',
      ]);
      // Leader election off is said explicitly (the operator's default is on); without rbac.create, no RBAC.
      const bare = await render([
        '--set',
        'operator.leaderElection.enabled=false',
        '--set',
        'rbac.create=false',
      ]);
      expect(only<Deployment>(bare, 'Deployment').spec.template.spec.containers[0]?.args).toContain(
        '--leader-elect=false',
      );
      expect(bare.filter((o) => o.apiVersion.startsWith('rbac.'))).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'values that break values.schema.json or the chart’s own checks are refused, with a message naming the key',
    async () => {
      const refused = async (args: readonly string[], release = RELEASE): Promise<string> => {
        const result = await helm(['template', release, CHART, ...args]);
        expect(result.code).not.toBe(0);
        return result.stderr;
      };
      const schemaError = /values don't meet the specifications of the schema/;
      const zero = await refused(['--set', 'cluster.replicas=0']);
      expect(zero).toMatch(schemaError);
      expect(zero).toMatch(/at '\/cluster\/replicas': minimum: got 0, want 1/);
      expect(await refused(['--set', 'cluster.replicaz=5'])).toMatch(
        /at '\/cluster': additional properties 'replicaz' not allowed/,
      );
      expect(await refused(['--set', 'cluster.redis.url=http://redis:6379'])).toMatch(
        /at '\/cluster\/redis\/url': 'http:\/\/redis:6379' does not match pattern/,
      );
      expect(await refused(['--set', 'operator.replicaz=2'])).toMatch(
        /at '\/operator': additional properties 'replicaz' not allowed/,
      );
      expect(await refused(['--set', 'operator.logLevel=loud'])).toMatch(
        /at '\/operator\/logLevel': value must be one of 'fatal', 'error', 'warn', 'info', 'debug', 'trace'/,
      );
      expect(await refused(['--set', 'networkPolicy.enabled=maybe'])).toMatch(
        /at '\/networkPolicy\/enabled': got string, want boolean/,
      );
      expect(await refused(['--set', 'operator.watchNamespace=Team_A'])).toMatch(
        /at '\/operator\/watchNamespace': 'Team_A' does not match pattern/,
      );
      expect(await refused(['--set', 'redis.port=70000'])).toMatch(/at '\/redis\/port': maximum/);
      // The chart's own checks, for what a schema cannot say.
      expect(await refused(['--set', 'cluster.enabled=true'], '1kv')).toMatch(
        /cluster\.name: the KVCluster name "1kv" .* must be a DNS-1035 label/,
      );
      expect(await refused(['--set', 'cluster.enabled=true', '--set', 'cluster.redis.managed=true'])).toMatch(
        /cluster\.redis\.managed=true needs redis\.managed=true/,
      );
      expect(
        await refused(['--set', 'operator.replicas=2', '--set', 'operator.leaderElection.enabled=false']),
      ).toMatch(/operator\.replicas > 1 needs operator\.leaderElection\.enabled=true/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'helm install creates the CRD, the operator, its RBAC and a KVCluster the CRD accepts; its pods pass the restricted Pod Security Standard',
    async () => {
      await ok('kubectl', ['apply', '-f', '-'], MONITORING_CRDS);
      await ok('kubectl', ['create', 'namespace', NS]);
      await ok('kubectl', ['create', 'namespace', OTHER_NS]);
      // Pods that break the restricted standard are refused by the API server's PodSecurity admission.
      await ok('kubectl', ['label', 'namespace', NS, 'pod-security.kubernetes.io/enforce=restricted']);

      const install = await ok('helm', ['install', RELEASE, CHART, '--namespace', NS, ...EVERYTHING_ON]);
      expect(install).toMatch(/STATUS: deployed/);
      expect(install).toMatch(new RegExp(`kubectl -n ${NS} get kvcluster ${RELEASE} -w`));

      // The CRD came from the chart's crds/ folder.
      await ok('kubectl', [
        'wait',
        '--for=condition=Established',
        'crd/kvclusters.kvstore.io',
        '--timeout=60s',
      ]);
      for (const [kind, name] of [
        ['deployment', 'kv-kvstore-operator'],
        ['deployment', 'kv-kvstore-redis'],
        ['service', 'kv-kvstore-operator'],
        ['service', 'kv-kvstore-redis'],
        ['serviceaccount', 'kv-kvstore-operator'],
        ['role', 'kv-kvstore-leader-election'],
        ['rolebinding', 'kv-kvstore-leader-election'],
        ['networkpolicy', 'kv-kvstore-nodes'],
        ['prometheusrule', 'kv-kvstore-alerts'],
        ['servicemonitor', 'kv-kvstore-operator'],
        ['configmap', 'kv-kvstore-dashboard-overview'],
      ]) {
        await ok('kubectl', ['get', '-n', NS, `${kind}/${name}`]);
      }
      await ok('kubectl', ['get', '-n', OTHER_NS, 'networkpolicy/kv-kvstore-nodes']);
      for (const name of [`${NS}-kv-kvstore-operator`, `${NS}-kv-kvstore-operator-readonly`]) {
        await ok('kubectl', ['get', `clusterrole/${name}`, `clusterrolebinding/${name}`]);
      }

      // The KVCluster: accepted, with the server's defaults matching parseKVClusterSpec.
      const rendered = only<K8sObject & { spec: Record<string, unknown> }>(
        await render(EVERYTHING_ON),
        'KVCluster',
      );
      const stored = JSON.parse(
        await ok('kubectl', ['get', '-n', NS, 'kvcluster', RELEASE, '-o', 'json']),
      ) as {
        spec: unknown;
      };
      expect(stored.spec).toEqual(JSON.parse(JSON.stringify(parseKVClusterSpec(rendered.spec))));

      // The example the NOTES point at is accepted too.
      const example = fs.readFileSync(path.join(CHART, 'examples', 'kvcluster.yaml'), 'utf8');
      expect(await ok('kubectl', ['apply', '--dry-run=server', '-n', NS, '-f', '-'], example)).toMatch(
        /kvcluster.kvstore.io\/demo created \(server dry run\)/,
      );
      expect(parseKVClusterSpec((YAML.parse(example) as { spec: unknown }).spec)).toMatchObject({
        replicas: 3,
        replicationFactor: 3,
      });

      // The controller manager turns both Deployments into pods, which admission lets through (there is no
      // kubelet, so they stay Pending: what counts is that they exist). A refused pod shows as FailedCreate.
      const failedCreates = async (): Promise<string> =>
        ok('kubectl', [
          'get',
          'events',
          '-n',
          NS,
          '--field-selector',
          'reason=FailedCreate',
          '-o',
          'jsonpath={.items[*].message}',
        ]);
      for (const component of ['operator', 'redis']) {
        await eventually(`a ${component} pod`, async () => {
          const refusedPods = await failedCreates();
          if (refusedPods) throw new Error(`pods refused: ${refusedPods}`);
          const pods = JSON.parse(
            await ok('kubectl', [
              'get',
              'pods',
              '-n',
              NS,
              '-l',
              `app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=${component}`,
              '-o',
              'json',
            ]),
          ) as { items: unknown[] };
          return pods.items.length === 1 ? true : undefined;
        });
      }
      expect(await failedCreates()).toBe('');
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the chart's README is what helm-docs makes of values.yaml and its comments, every value described",
    () => {
      const generated = spawnSync('bash', [path.join(repoRoot, 'e2e', 'k8s', 'chart-docs.sh'), '--dry-run'], {
        encoding: 'utf8',
        env: { ...process.env, KVSTORE_HELM_DOCS: path.join(plane().binDir, 'helm-docs') },
      });
      expect(generated.stderr).toBe('');
      expect(generated.status).toBe(0);
      const committed = fs.readFileSync(path.join(CHART, 'README.md'), 'utf8');
      if (generated.stdout !== committed) {
        throw new Error('charts/kvstore/README.md is out of date with values.yaml: run `npm run chart:docs`');
      }
      // A value without a `# --` comment gets an empty description cell.
      const rows = committed
        .split('\n')
        .filter((line) => /^\| [a-zA-Z]/.test(line) && !line.startsWith('| Key '));
      expect(rows.length).toBeGreaterThan(50);
      expect(rows.filter((row) => /\|\s*\|$/.test(row))).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "every object the chart renders, with the defaults and with every optional feature on, passes the API server's schema (server-side dry run, unknown fields refused)",
    async () => {
      // A release of its own, so every object is one the API server would create, not one installed above.
      const schemaNs = 'kvstore-schema';
      await ok('kubectl', ['create', 'namespace', schemaNs]);
      for (const values of [[], EVERYTHING_ON]) {
        const objects = await render(values, 'kvs', schemaNs);
        const applied = await kubectl(
          ['create', '--dry-run=server', '--validate=strict', '-f', '-'],
          objects.map((o) => JSON.stringify(o)).join('\n---\n'),
        );
        expect(applied.stderr).toBe('');
        expect(applied.code).toBe(0);
        expect(applied.stdout.trim().split('\n')).toHaveLength(objects.length);
      }
      // The check is real: a misspelt field in a rendered object is refused.
      const [first] = await render([], 'kvs', schemaNs);
      const typo = await kubectl(
        ['create', '--dry-run=server', '--validate=strict', '-f', '-'],
        JSON.stringify({ ...first, spce: {} }),
      );
      expect(typo.code).not.toBe(0);
      expect(typo.stderr).toMatch(/unknown field "spce"/);
      await ok('kubectl', ['delete', 'namespace', schemaNs, '--wait=false']);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the NOTES a user reads after helm install name the real Service, port and token Secret, and a CLI they can install',
    async () => {
      const kvctlPackage = JSON.parse(
        fs.readFileSync(path.join(repoRoot, 'packages', 'kvctl', 'package.json'), 'utf8'),
      ) as { name: string; bin: Record<string, string> };
      expect(Object.keys(kvctlPackage.bin)).toEqual(['kvctl']);

      // The chart's own cluster (the install above): the names come from what the operator will make of it.
      const notes = await ok('helm', ['get', 'notes', RELEASE, '--namespace', NS]);
      const cluster = JSON.parse(
        await ok('kubectl', ['get', '-n', NS, 'kvcluster', RELEASE, '-o', 'json']),
      ) as {
        metadata: { name: string; namespace: string; uid: string };
        spec: unknown;
      };
      const spec = parseKVClusterSpec(cluster.spec);
      const made = desiredResources(cluster.metadata, spec, {
        nodeReplicas: spec.replicas,
        serviceMonitorAvailable: true,
      });
      const service = made.gatewayService;
      const port = service.spec?.ports?.[0]?.port;
      expect(port).toBe(spec.gateway.port);
      expect(notes).toContain(`port-forward service/${service.metadata?.name} 3000:${port}`);
      expect(notes).toContain(`http://${service.metadata?.name}.${NS}:${port}/v1/cluster`);
      expect(notes).toContain(`get secret ${adminTokenSecretName(RELEASE)} -o jsonpath='{.data.token}'`);
      expect(notes).toContain(`npm install -g ${kvctlPackage.name}`);
      expect(notes).toContain('kvctl --url http://127.0.0.1:3000 --token "$TOKEN" cluster');
      expect(notes).not.toMatch(/npx|NAME|NAMESPACE/);

      // Without a chart-made cluster the NOTES point at the example, whose name they use.
      const example = YAML.parse(fs.readFileSync(path.join(CHART, 'examples', 'kvcluster.yaml'), 'utf8')) as {
        metadata: { name: string };
      };
      const plain = await ok('helm', ['install', 'kvn', CHART, '--namespace', NS, '--dry-run=server']);
      const plainNotes = plain.slice(plain.indexOf('NOTES:'));
      expect(plainNotes).toContain(`kubectl apply -n ${NS} -f charts/kvstore/examples/kvcluster.yaml`);
      expect(plainNotes).toContain(`port-forward service/${example.metadata.name} 3000:80`);
      expect(plainNotes).toContain(`get secret ${adminTokenSecretName(example.metadata.name)}`);
      expect(plainNotes).not.toMatch(/npx/);

      // And with authentication off they ask for no token.
      const open = await ok('helm', [
        'install',
        'kvo',
        CHART,
        '--namespace',
        NS,
        '--dry-run=server',
        '--set',
        'cluster.enabled=true',
        '--set',
        'cluster.auth.disabled=true',
      ]);
      const openNotes = open.slice(open.indexOf('NOTES:'));
      expect(openNotes).toContain('kvctl --url http://127.0.0.1:3000 cluster');
      expect(openNotes).not.toMatch(/TOKEN/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "kubectl auth can-i: the operator's ServiceAccount can do what the operator needs, and nothing it must not",
    async () => {
      const canI = async (verb: string, resource: string, ...extra: string[]): Promise<string> => {
        const result = await kubectl(['auth', 'can-i', verb, resource, `--as=${SA}`, ...extra]);
        return `${verb} ${resource} ${extra.join(' ')}`.trim() + ` -> ${result.stdout.trim()}`;
      };
      const allowed: Array<[string, string, ...string[]]> = [
        ['watch', 'kvclusters.kvstore.io', '-n', OTHER_NS],
        ['patch', 'kvclusters.kvstore.io', '--subresource=status', '-n', OTHER_NS],
        ['update', 'kvclusters.kvstore.io', '--subresource=finalizers', '-n', OTHER_NS],
        ['create', 'statefulsets.apps', '-n', OTHER_NS],
        ['delete', 'statefulsets.apps', '-n', 'default'],
        ['patch', 'deployments.apps', '-n', OTHER_NS],
        ['create', 'services', '-n', OTHER_NS],
        ['update', 'configmaps', '-n', OTHER_NS],
        ['delete', 'persistentvolumeclaims', '-n', OTHER_NS],
        ['list', 'pods', '-n', OTHER_NS],
        ['create', 'events', '-n', OTHER_NS],
        ['create', 'poddisruptionbudgets.policy', '-n', OTHER_NS],
        ['create', 'servicemonitors.monitoring.coreos.com', '-n', OTHER_NS],
        ['create', 'serviceaccounts', '-n', OTHER_NS],
        ['create', 'roles.rbac.authorization.k8s.io', '-n', OTHER_NS],
        ['patch', 'rolebindings.rbac.authorization.k8s.io', '-n', OTHER_NS],
        ['get', 'customresourcedefinitions.apiextensions.k8s.io/servicemonitors.monitoring.coreos.com'],
        ['get', 'nodes'],
        ['get', 'secrets', '-n', OTHER_NS],
        ['create', 'secrets', '-n', OTHER_NS],
        ['create', 'leases.coordination.k8s.io', '-n', NS],
        ['update', 'leases.coordination.k8s.io', '-n', NS],
      ];
      const denied: Array<[string, string, ...string[]]> = [
        ['delete', 'nodes'],
        ['list', 'nodes'],
        ['patch', 'nodes'],
        ['list', 'secrets', '-n', OTHER_NS],
        ['watch', 'secrets', '-n', NS],
        ['delete', 'secrets', '-n', OTHER_NS],
        ['update', 'secrets', '-n', OTHER_NS],
        ['patch', 'pods', '-n', OTHER_NS],
        ['delete', 'pods', '-n', OTHER_NS],
        ['create', 'pods', '-n', OTHER_NS],
        ['create', 'kvclusters.kvstore.io', '-n', OTHER_NS],
        ['delete', 'kvclusters.kvstore.io', '-n', OTHER_NS],
        ['update', 'leases.coordination.k8s.io', '-n', OTHER_NS],
        ['create', 'customresourcedefinitions.apiextensions.k8s.io'],
        ['create', 'serviceaccounts/default', '--subresource=token', '-n', OTHER_NS],
        ['escalate', 'roles.rbac.authorization.k8s.io', '-n', OTHER_NS],
        ['bind', 'roles.rbac.authorization.k8s.io', '-n', OTHER_NS],
        ['create', 'clusterroles.rbac.authorization.k8s.io'],
        ['create', 'clusterrolebindings.rbac.authorization.k8s.io'],
        ['create', 'namespaces'],
        ['*', '*'],
      ];
      const results = await Promise.all([...allowed, ...denied].map((args) => canI(...args)));
      expect(results).toEqual([
        ...allowed.map((a) => `${a.join(' ')} -> yes`),
        ...denied.map((a) => `${a.join(' ')} -> no`),
      ]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "as the operator's ServiceAccount, the API server accepts every object the operator applies for a KVCluster, and no Role wider than its own",
    async () => {
      // A KVCluster of its own, so what the operator's objects become is garbage-collected with it.
      await ok(
        'kubectl',
        ['apply', '-n', OTHER_NS, '-f', '-'],
        JSON.stringify({
          apiVersion: 'kvstore.io/v1alpha1',
          kind: 'KVCluster',
          metadata: { name: 'probe' },
          spec: { monitoring: { serviceMonitor: { enabled: true } } },
        }),
      );
      const cluster = JSON.parse(
        await ok('kubectl', ['get', '-n', OTHER_NS, 'kvcluster', 'probe', '-o', 'json']),
      ) as {
        metadata: { name: string; namespace: string; uid: string };
        spec: unknown;
      };
      const objects = resourceList(
        desiredResources(cluster.metadata, parseKVClusterSpec(cluster.spec), {
          nodeReplicas: 3,
          serviceMonitorAvailable: true,
        }),
      );
      expect(objects.map((o) => o.kind)).toEqual(
        expect.arrayContaining([
          'ServiceAccount',
          'Role',
          'RoleBinding',
          'StatefulSet',
          'Deployment',
          'ServiceMonitor',
        ]),
      );
      // Server-side apply with the operator's field manager, as the operator does it. Not a dry run: the
      // RoleBinding's escalation check needs its Role to exist.
      const applied = await kubectl(
        ['apply', '--server-side', '--field-manager=kvstore-operator', `--as=${SA}`, '-f', '-'],
        objects.map((o) => JSON.stringify(o)).join('\n---\n'),
      );
      expect(applied.stderr).toBe('');
      expect(applied.code).toBe(0);
      expect(applied.stdout.trim().split('\n')).toHaveLength(objects.length);
      // Deleting is allowed too (scale-in, deletionPolicy); then the cluster goes, and its objects with it.
      await ok('kubectl', ['delete', '-n', OTHER_NS, `--as=${SA}`, 'statefulset', 'probe-node']);
      await ok('kubectl', ['delete', '-n', OTHER_NS, 'kvcluster', 'probe']);
      // RBAC's escalation check: the operator can hand out only permissions it holds (it cannot list Secrets).
      const wider = await kubectl([
        'create',
        'role',
        'too-wide',
        '--verb=list',
        '--resource=secrets',
        '-n',
        OTHER_NS,
        '--dry-run=server',
        `--as=${SA}`,
      ]);
      expect(wider.code).not.toBe(0);
      expect(wider.stderr).toMatch(/attempting to grant RBAC permissions not currently held/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'the operator accepts the command line the chart gives it (dist/operator/main.js, built by npm test)',
    async () => {
      const deployment = only<Deployment>(await render(EVERYTHING_ON), 'Deployment', 'kv-kvstore-operator');
      const container = deployment.spec.template.spec.containers[0];
      expect(container?.command).toEqual(['node', 'dist/operator/main.js']);
      // parseArgs is strict: an unknown flag or a flag without its value fails before --help is read.
      const run = spawnSync(
        process.execPath,
        [path.join(repoRoot, 'dist', 'operator', 'main.js'), ...(container?.args ?? []), '--help'],
        {
          encoding: 'utf8',
        },
      );
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
      expect(run.stdout).toMatch(/usage: kvstore-operator/);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'a second release watching one namespace gets permissions there only',
    async () => {
      await ok('kubectl', ['create', 'namespace', 'team-b']);
      await ok('helm', [
        'install',
        'kvw',
        CHART,
        '--namespace',
        'kvstore-team-b',
        '--create-namespace',
        '--set',
        'operator.watchNamespace=team-b',
        '--set',
        'dashboards.enabled=false',
      ]);
      const sa = 'system:serviceaccount:kvstore-team-b:kvw-kvstore-operator';
      const canI = async (...args: string[]): Promise<string> =>
        (await kubectl(['auth', 'can-i', ...args, `--as=${sa}`])).stdout.trim();
      expect(await canI('create', 'statefulsets.apps', '-n', 'team-b')).toBe('yes');
      expect(await canI('patch', 'kvclusters.kvstore.io', '--subresource=status', '-n', 'team-b')).toBe(
        'yes',
      );
      expect(await canI('update', 'leases.coordination.k8s.io', '-n', 'kvstore-team-b')).toBe('yes');
      expect(await canI('list', 'customresourcedefinitions.apiextensions.k8s.io')).toBe('yes');
      expect(await canI('create', 'statefulsets.apps', '-n', OTHER_NS)).toBe('no');
      expect(await canI('list', 'kvclusters.kvstore.io', '--all-namespaces')).toBe('no');
      expect(await canI('update', 'leases.coordination.k8s.io', '-n', 'team-b')).toBe('no');
      // Both releases live side by side: their cluster-scoped names carry the namespace.
      await ok('helm', ['uninstall', 'kvw', '--namespace', 'kvstore-team-b', '--wait']);
      expect(await canI('create', 'statefulsets.apps', '-n', 'team-b')).toBe('no');
      const first = await kubectl(['auth', 'can-i', 'list', 'pods', '-n', OTHER_NS, `--as=${SA}`]);
      expect(first.stdout.trim()).toBe('yes'); // the first release is untouched
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'helm uninstall removes everything it installed except the CRD, which Helm never deletes',
    async () => {
      await ok('helm', ['uninstall', RELEASE, '--namespace', NS, '--wait']);
      const left = async (args: readonly string[]): Promise<string> =>
        (
          await ok('kubectl', ['get', ...args, '-l', `app.kubernetes.io/instance=${RELEASE}`, '-o', 'name'])
        ).trim();
      expect(
        await left([
          '-n',
          NS,
          'deployments,services,serviceaccounts,roles,rolebindings,configmaps,networkpolicies,kvclusters,prometheusrules,servicemonitors',
        ]),
      ).toBe('');
      expect(await left(['-n', OTHER_NS, 'networkpolicies'])).toBe('');
      expect(await left(['clusterroles,clusterrolebindings'])).toBe('');
      // The garbage collector removes the pods of the deleted Deployments.
      await eventually('the release pods to be gone', async () =>
        (await left(['-n', NS, 'pods,replicasets'])) === '' ? true : undefined,
      );
      expect(
        (await kubectl(['auth', 'can-i', 'list', 'pods', '-n', OTHER_NS, `--as=${SA}`])).stdout.trim(),
      ).toBe('no');
      // CRDs in a chart's crds/ folder outlive the release, so deleting a release never deletes clusters' data.
      await ok('kubectl', ['get', 'crd', 'kvclusters.kvstore.io']);
    },
    TEST_TIMEOUT_MS,
  );
});
