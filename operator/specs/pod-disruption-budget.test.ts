import { build } from './specs.fixtures';

describe('podDisruptionBudget', () => {
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
});
