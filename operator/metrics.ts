import client from 'prom-client';
import type { ReconcileResult } from './reconciler';

/** The result label of kvstore_operator_reconciles_total: how a reconcile ended, or `error` when it threw. */
export const RECONCILE_RESULTS: ReadonlyArray<ReconcileResult | 'error'> = [
  'done',
  'invalid',
  'finalized',
  'gone',
  'conflict',
  'error',
];

/** The operator's Prometheus metrics, on their own registry so a test can run two operators in one process. */
export class OperatorMetrics {
  readonly registry = new client.Registry();
  readonly reconciles = new client.Counter({
    name: 'kvstore_operator_reconciles_total',
    help: 'KVCluster reconciles, by result (done, invalid, finalized, gone, conflict; error: it failed and is retried with backoff)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new client.Histogram({
    name: 'kvstore_operator_reconcile_duration_seconds',
    help: 'Time of one reconcile of one KVCluster, API calls included',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly queueDepth = new client.Gauge({
    name: 'kvstore_operator_queue_depth',
    help: 'KVClusters waiting in the work queue for a worker (not those being reconciled, nor those whose retry is scheduled later)',
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
    // The standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes...), which the
    // usual Node.js dashboards query, told apart by a label instead of a kvstore_operator_ prefix.
    client.collectDefaultMetrics({ register: this.registry, labels: { component: 'operator' } });
    // Every result from the start, at 0: an error rate (result="error") is a series before the first error.
    for (const result of RECONCILE_RESULTS) this.reconciles.inc({ result }, 0);
    this.queueDepth.set(0);
  }

  /** Total reconciles with this result so far (tests, and the leader-election check). */
  async reconcileCount(result?: string): Promise<number> {
    const metric = await this.reconciles.get();
    return metric.values
      .filter((v) => result === undefined || v.labels.result === result)
      .reduce((sum, v) => sum + v.value, 0);
  }
}
