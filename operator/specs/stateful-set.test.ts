import { build } from './specs.fixtures';

describe('nodeStatefulSet', () => {
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
});
