import { nodeSelectorString } from './names';

describe('names', () => {
  test('the selector string of the scale subresource', () => {
    expect(nodeSelectorString('demo')).toBe(
      'app.kubernetes.io/name=kvstore,app.kubernetes.io/instance=demo,app.kubernetes.io/component=node',
    );
  });
});
