import { ConvergeContext, ConvergeOrderError } from './converge-context';
import type { KVClusterObject } from './kube-api';

const kv = { metadata: { name: 'demo', namespace: 'prod', uid: 'u1' } } as KVClusterObject;

describe('ConvergeContext', () => {
  test('a fact reads back as set, undefined included; the key is namespace/name', () => {
    const ctx = new ConvergeContext(kv, { name: 'demo', namespace: 'prod', uid: 'u1' });
    expect(ctx.key).toBe('prod/demo');
    ctx.set('redisUrl', undefined);
    expect(ctx.get('redisUrl')).toBeUndefined();
    ctx.set('blocked', 'why');
    expect(ctx.get('blocked')).toBe('why');
  });

  test('a fact read before any step set it names the fact and the step', () => {
    const ctx = new ConvergeContext(kv, { name: 'demo', namespace: 'prod', uid: 'u1' });
    ctx.step = 'apply-objects';
    expect(() => ctx.get('decision')).toThrow(ConvergeOrderError);
    expect(() => ctx.get('decision')).toThrow(
      'converge step apply-objects reads decision before any step has set it',
    );
  });
});
