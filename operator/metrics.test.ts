import { OperatorMetrics, RECONCILE_RESULTS } from './metrics';

describe('OperatorMetrics', () => {
  test('exports every reconcile result, errors included, and the queue depth from the start, at 0', async () => {
    const metrics = new OperatorMetrics();
    const text = await metrics.registry.metrics();
    for (const result of RECONCILE_RESULTS) {
      expect(text).toContain(`kvstore_operator_reconciles_total{result="${result}"} 0`);
    }
    expect(text).toMatch(/^kvstore_operator_queue_depth 0$/m);
    expect(text).toMatch(/^kvstore_operator_reconcile_duration_seconds_count 0$/m);
    metrics.reconciles.inc({ result: 'error' });
    metrics.queueDepth.set(3);
    const after = await metrics.registry.metrics();
    expect(after).toContain('kvstore_operator_reconciles_total{result="error"} 1');
    expect(after).toMatch(/^kvstore_operator_queue_depth 3$/m);
    expect(await metrics.reconcileCount('error')).toBe(1);
    expect(await metrics.reconcileCount()).toBe(1);
  });
});
