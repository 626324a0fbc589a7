import { parseKVClusterSpec } from '../crds/kvcluster-spec';
import {
  desiredResources,
  nodeSelectorString,
  resourceList,
  type ClusterRef,
  type DesiredResourcesOptions,
} from './resources';

const ref: ClusterRef = { name: 'demo', namespace: 'prod', uid: '1234-abcd' };
const opts: DesiredResourcesOptions = { nodeReplicas: 3, serviceMonitorAvailable: false };

function build(spec: Record<string, unknown> = {}, extra: Partial<DesiredResourcesOptions> = {}) {
  return desiredResources(ref, parseKVClusterSpec(spec), { ...opts, ...extra });
}

describe('desiredResources', () => {
  test('every object is labelled and owned by the KVCluster (controller, blockOwnerDeletion)', () => {
    const objects = resourceList(build());
    expect(objects.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual([
      'ServiceAccount/demo-kvstore',
      'Role/demo-kvstore',
      'RoleBinding/demo-kvstore',
      'Service/demo-nodes',
      'StatefulSet/demo-node',
      'PodDisruptionBudget/demo-node',
      'Deployment/demo-gateway',
      'Service/demo',
    ]);
    for (const o of objects) {
      expect(o.metadata?.namespace).toBe('prod');
      expect(o.metadata?.labels).toMatchObject({
        'app.kubernetes.io/name': 'kvstore',
        'app.kubernetes.io/instance': 'demo',
        'app.kubernetes.io/managed-by': 'kvstore-operator',
      });
      expect(o.metadata?.ownerReferences).toEqual([
        {
          apiVersion: 'kvstore.io/v1alpha1',
          kind: 'KVCluster',
          name: 'demo',
          uid: '1234-abcd',
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
    }
    const r = build();
    expect(r.statefulSet.metadata?.labels?.['app.kubernetes.io/component']).toBe('node');
    expect(r.headlessService.metadata?.labels?.['app.kubernetes.io/component']).toBe('node');
    expect(r.gatewayDeployment.metadata?.labels?.['app.kubernetes.io/component']).toBe('gateway');
    expect(r.gatewayService.metadata?.labels?.['app.kubernetes.io/component']).toBe('gateway');
  });

  test('the StatefulSet: Parallel, the headless Service, a data volume, replicas as decided (not spec.replicas)', () => {
    const sts = build(
      { replicas: 5, storage: { size: '10Gi', storageClassName: 'fast' } },
      { nodeReplicas: 7 },
    ).statefulSet;
    expect(sts.spec).toMatchObject({
      replicas: 7,
      podManagementPolicy: 'Parallel',
      serviceName: 'demo-nodes',
      selector: {
        matchLabels: {
          'app.kubernetes.io/name': 'kvstore',
          'app.kubernetes.io/instance': 'demo',
          'app.kubernetes.io/component': 'node',
        },
      },
      persistentVolumeClaimRetentionPolicy: { whenScaled: 'Delete', whenDeleted: 'Retain' },
    });
    expect(sts.spec?.volumeClaimTemplates).toEqual([
      expect.objectContaining({
        metadata: expect.objectContaining({ name: 'data' }),
        spec: {
          accessModes: ['ReadWriteOnce'],
          resources: { requests: { storage: '10Gi' } },
          storageClassName: 'fast',
        },
      }),
    ]);
    // The pod template carries the selector's labels.
    expect(sts.spec?.template.metadata?.labels).toMatchObject(sts.spec?.selector.matchLabels ?? {});
  });

  test('the node container: command line, downward API, probes, resources, a locked-down security context', () => {
    const sts = build({
      image: 'registry.example/kvstore:1.2.3',
      imagePullPolicy: 'Always',
      resources: { node: { requests: { cpu: 1, memory: '2Gi' }, limits: { memory: '2Gi' } } },
      logLevel: 'debug',
    }).statefulSet;
    const pod = sts.spec?.template.spec;
    const [c] = pod?.containers ?? [];
    expect(c.image).toBe('registry.example/kvstore:1.2.3');
    expect(c.imagePullPolicy).toBe('Always');
    expect(c.command).toEqual([
      'node',
      'dist/node/main.js',
      '--id=$(POD_NAME)',
      '--cluster=demo',
      '--data-dir=/data',
      '--listen=0.0.0.0:7001',
      '--admin-listen=0.0.0.0:7101',
      '--kube-namespace=prod',
      '--internal-token-file=/etc/kvstore/internal/token',
    ]);
    // The internal token comes from the Secret the operator generates, read-only for the node's group.
    expect(c.volumeMounts).toContainEqual({
      name: 'internal-token',
      mountPath: '/etc/kvstore/internal',
      readOnly: true,
    });
    expect(pod?.volumes).toContainEqual({
      name: 'internal-token',
      secret: { secretName: 'demo-internal-token', defaultMode: 0o440 },
    });
    expect(c.env).toEqual([
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      { name: 'LOG_LEVEL', value: 'debug' },
    ]);
    expect(c.ports).toEqual([
      { name: 'rpc', containerPort: 7001, protocol: 'TCP' },
      { name: 'admin', containerPort: 7101, protocol: 'TCP' },
    ]);
    expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'admin' });
    expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'admin' });
    expect(c.resources).toEqual({ requests: { cpu: '1', memory: '2Gi' }, limits: { memory: '2Gi' } });
    expect(c.securityContext).toMatchObject({
      runAsNonRoot: true,
      runAsUser: 1000,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(pod?.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, fsGroup: 1000 });
    expect(c.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    expect(pod?.serviceAccountName).toBe('demo-kvstore');
  });

  test('--redis on nodes and gateways when the cluster has a Redis, nowhere otherwise', () => {
    const without = build();
    expect(without.statefulSet.spec?.template.spec?.containers[0].command?.join(' ')).not.toMatch(/--redis/);
    expect(without.gatewayDeployment.spec?.template.spec?.containers[0].command?.join(' ')).not.toMatch(
      /--redis/,
    );
    const withRedis = build(
      { redis: { url: 'redis://redis.prod:6379' } },
      { redisUrl: 'redis://redis.prod:6379' },
    );
    expect(withRedis.statefulSet.spec?.template.spec?.containers[0].command).toContain(
      '--redis=redis://redis.prod:6379',
    );
    expect(withRedis.gatewayDeployment.spec?.template.spec?.containers[0].command).toContain(
      '--redis=redis://redis.prod:6379',
    );
  });

  test('affinity and topology spread constraints pass through to the node pods', () => {
    const affinity = {
      podAntiAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: [
          {
            topologyKey: 'kubernetes.io/hostname',
            labelSelector: { matchLabels: { 'app.kubernetes.io/instance': 'demo' } },
          },
        ],
      },
    };
    const spread = [
      { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'DoNotSchedule' },
    ];
    const pod = build({ affinity, topologySpreadConstraints: spread }).statefulSet.spec?.template.spec;
    expect(pod?.affinity).toEqual(affinity);
    expect(pod?.topologySpreadConstraints).toEqual(spread);
    expect(build().statefulSet.spec?.template.spec?.affinity).toBeUndefined();
  });

  test('the headless Service publishes not-ready nodes on rpc 7001 and admin 7101', () => {
    const svc = build().headlessService;
    expect(svc.spec).toMatchObject({
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      ports: [
        { name: 'rpc', port: 7001, targetPort: 'rpc', protocol: 'TCP' },
        { name: 'admin', port: 7101, targetPort: 'admin', protocol: 'TCP' },
      ],
    });
  });

  test('the gateway: replicas, command line, probes on 8080, and its Service from spec.gateway', () => {
    const r = build({ gateway: { replicas: 4, port: 8443, serviceType: 'LoadBalancer' } });
    expect(r.gatewayDeployment.spec?.replicas).toBe(4);
    const [c] = r.gatewayDeployment.spec?.template.spec?.containers ?? [];
    expect(c.command).toEqual([
      'node',
      'dist/gateway/main.js',
      '--id=$(POD_NAME)',
      '--cluster=demo',
      '--host=0.0.0.0',
      '--port=8080',
      '--kube-namespace=prod',
      '--internal-token-file=/etc/kvstore/internal/token',
      '--auth-file=/etc/kvstore/api-keys/keys.json',
      '--read-hedge-ms=50',
      // Keeps serving while the Service drops a terminating pod (rollouts, evictions).
      '--shutdown-delay-ms=5000',
    ]);
    expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http', scheme: 'HTTP' });
    expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http', scheme: 'HTTP' });
    // Without spec.auth.secretRef the gateway reads the key file the operator generates.
    expect(r.gatewayDeployment.spec?.template.spec?.volumes).toContainEqual({
      name: 'api-keys',
      secret: { secretName: 'demo-api-keys', defaultMode: 0o440 },
    });
    expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
    expect(r.gatewayService.spec).toMatchObject({
      type: 'LoadBalancer',
      ports: [{ name: 'http', port: 8443, targetPort: 'http', protocol: 'TCP' }],
      selector: { 'app.kubernetes.io/component': 'gateway', 'app.kubernetes.io/instance': 'demo' },
    });
  });

  test('gateway security from the spec: API keys from a Secret or explicitly off, TLS, rate limits', () => {
    const gateway = (spec: Record<string, unknown>) => {
      const d = build(spec).gatewayDeployment.spec?.template.spec;
      const [c] = d?.containers ?? [];
      return { args: c.command ?? [], c, volumes: d?.volumes ?? [] };
    };
    const own = gateway({ auth: { secretRef: { name: 'team-keys' } } });
    expect(own.args).toContain('--auth-file=/etc/kvstore/api-keys/keys.json');
    expect(own.volumes).toContainEqual({
      name: 'api-keys',
      secret: { secretName: 'team-keys', defaultMode: 0o440 },
    });

    const off = gateway({ auth: { disabled: true } });
    expect(off.args).toContain('--no-auth');
    expect(off.args.some((a) => a.startsWith('--auth-file'))).toBe(false);
    expect(off.volumes.some((v) => v.name === 'api-keys')).toBe(false);

    const tls = gateway({ gateway: { tls: { secretRef: { name: 'demo-tls' } } } });
    expect(tls.args).toEqual(
      expect.arrayContaining(['--tls-cert=/etc/kvstore/tls/tls.crt', '--tls-key=/etc/kvstore/tls/tls.key']),
    );
    expect(tls.volumes).toContainEqual({
      name: 'tls',
      secret: { secretName: 'demo-tls', defaultMode: 0o440 },
    });
    expect(tls.c.readinessProbe?.httpGet?.scheme).toBe('HTTPS');
    expect(tls.c.livenessProbe?.httpGet?.scheme).toBe('HTTPS');

    const limited = gateway({ gateway: { rateLimit: { perKey: 100, perAddress: 20, windowSeconds: 10 } } });
    expect(limited.args).toEqual(
      expect.arrayContaining([
        '--rate-limit-per-key=100',
        '--rate-limit-per-address=20',
        '--rate-limit-window-s=10',
      ]),
    );
    expect(gateway({}).args.some((a) => a.startsWith('--rate-limit'))).toBe(false);

    // The hedge delay is always passed, so the spec's default is the one in force, not the binary's.
    expect(gateway({}).args).toContain('--read-hedge-ms=50');
    expect(gateway({ gateway: { readHedgeMs: 0 } }).args).toContain('--read-hedge-ms=0');
    expect(() => parseKVClusterSpec({ gateway: { readHedgeMs: -1 } })).toThrow(/readHedgeMs/);
  });

  test('auth.secretRef and auth.disabled together are refused', () => {
    expect(() => parseKVClusterSpec({ auth: { secretRef: { name: 'k' }, disabled: true } })).toThrow(
      /mutually exclusive/,
    );
  });

  test('a PodDisruptionBudget of one node at a time', () => {
    expect(build().podDisruptionBudget.spec).toEqual({
      maxUnavailable: 1,
      selector: {
        matchLabels: {
          'app.kubernetes.io/name': 'kvstore',
          'app.kubernetes.io/instance': 'demo',
          'app.kubernetes.io/component': 'node',
        },
      },
    });
  });

  test('a ServiceMonitor only when enabled and its CRD exists', () => {
    const enabled = { monitoring: { serviceMonitor: { enabled: true, interval: '15s' } } };
    expect(build(enabled).serviceMonitor).toBeUndefined();
    expect(build({}, { serviceMonitorAvailable: true }).serviceMonitor).toBeUndefined();
    const sm = build(enabled, { serviceMonitorAvailable: true }).serviceMonitor;
    expect(sm).toMatchObject({
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'ServiceMonitor',
      metadata: { name: 'demo', namespace: 'prod' },
      spec: {
        endpoints: [
          { port: 'admin', path: '/metrics', interval: '15s' },
          { port: 'http', path: '/metrics', interval: '15s' },
        ],
      },
    });
    expect(resourceList(build(enabled, { serviceMonitorAvailable: true })).at(-1)?.kind).toBe(
      'ServiceMonitor',
    );
  });

  test('nodes and gateways may read their own map ConfigMap and nothing else', () => {
    const { role, roleBinding } = build();
    expect(role.rules).toEqual([
      {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: ['demo-partition-map'],
        verbs: ['get', 'list', 'watch'],
      },
    ]);
    expect(roleBinding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'demo-kvstore', namespace: 'prod' },
    ]);
  });

  test('the selector string of the scale subresource', () => {
    expect(nodeSelectorString('demo')).toBe(
      'app.kubernetes.io/name=kvstore,app.kubernetes.io/instance=demo,app.kubernetes.io/component=node',
    );
  });

  test('is deterministic and refuses a negative replica count', () => {
    expect(build({ replicas: 4 })).toEqual(build({ replicas: 4 }));
    expect(() => build({}, { nodeReplicas: -1 })).toThrow(RangeError);
  });
});
