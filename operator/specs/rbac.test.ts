import { build } from './specs.fixtures';

describe('mapReaderRole and its binding', () => {
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
});
