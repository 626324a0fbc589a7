import client from 'prom-client';

/** The operator's Prometheus metrics, on their own registry so a test can run two operators in one process. */
export class OperatorMetrics {
  readonly registry = new client.Registry();
  readonly reconciles = new client.Counter({
    name: 'kvstore_operator_reconciles_total',
    help: 'KVCluster reconciles, by result (done, invalid, finalized, gone, conflict, error)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new client.Histogram({
    name: 'kvstore_operator_reconcile_duration_seconds',
    help: 'Time of one reconcile of one KVCluster, API calls included',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly kvclusters = new client.Gauge({
    name: 'kvstore_operator_kvclusters_managed',
    help: 'KVClusters this operator watches (0 while it is not the leader)',
    registers: [this.registry],
  });
  readonly leader = new client.Gauge({
    name: 'kvstore_operator_leader',
    help: '1 while this instance holds the leader lease and reconciles, else 0',
    registers: [this.registry],
  });

  constructor(labels: Record<string, string> = {}) {
    this.registry.setDefaultLabels(labels);
    client.collectDefaultMetrics({ register: this.registry, prefix: 'kvstore_operator_' });
  }

  /** Total reconciles with this result so far (tests, and the leader-election check). */
  async reconcileCount(result?: string): Promise<number> {
    const metric = await this.reconciles.get();
    return metric.values
      .filter((v) => result === undefined || v.labels.result === result)
      .reduce((sum, v) => sum + v.value, 0);
  }
}
