import { build } from './specs.fixtures';
import { resourceList } from './desired-resources';

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

  test('is deterministic and refuses a negative replica count', () => {
    expect(build({ replicas: 4 })).toEqual(build({ replicas: 4 }));
    expect(() => build({}, { nodeReplicas: -1 })).toThrow(RangeError);
  });
});
