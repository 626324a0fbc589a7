import client from 'prom-client';
import type { Consistency } from '../common/consistency';

/**
 * The `consistency` label of the latency histogram: the level a data request was served at, or `none` for
 * routes without one and for requests refused before their X-Consistency header was parsed (so a bad header
 * never becomes a label value).
 */
export type ConsistencyLabel = Consistency | 'none';

/** The gateway's Prometheus metrics, on their own registry (several gateways can share a test process). */
export class GatewayMetrics {
  readonly registry = new client.Registry();
  readonly httpRequests = new client.Counter({
    name: 'kvstore_gateway_http_requests_total',
    help: 'Public API requests, by operation, method and status code',
    labelNames: ['op', 'method', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new client.Histogram({
    name: 'kvstore_gateway_http_request_duration_seconds',
    help: 'Public API request latency, by operation, outcome class and consistency level (none for routes without one)',
    labelNames: ['op', 'outcome', 'consistency'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly replicaRequests = new client.Counter({
    name: 'kvstore_gateway_replica_requests_total',
    help: 'Requests from the coordinator to storage nodes, by node, operation and outcome',
    labelNames: ['node', 'op', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly readRepairs = new client.Counter({
    name: 'kvstore_gateway_read_repairs_total',
    help: 'Stale replicas repaired after a read, by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly quorumFailures = new client.Counter({
    name: 'kvstore_gateway_quorum_failures_total',
    help: 'Requests refused with 503 because too few replicas answered',
    labelNames: ['op', 'consistency'] as const,
    registers: [this.registry],
  });
  readonly hintsSent = new client.Counter({
    name: 'kvstore_gateway_hints_sent_total',
    help: 'Hints for replicas a write missed, left with a replica that took the write, by outcome (stored, refused, failed, no_live_replica)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly mapEpoch = new client.Gauge({
    name: 'kvstore_gateway_map_epoch',
    help: 'Epoch of the partition map this gateway routes by',
    registers: [this.registry],
  });
  readonly movesPending = new client.Gauge({
    name: 'kvstore_gateway_partition_moves_pending',
    help: 'Partition moves in the map this gateway routes by, not switched yet',
    registers: [this.registry],
  });
  readonly movesPlanned = new client.Gauge({
    name: 'kvstore_gateway_partition_moves_planned',
    help: 'Moves in the rebalance under way when it was planned (0 when none is)',
    registers: [this.registry],
  });

  /**
   * How this gateway's connections to the nodes stand, read at scrape time; main sets it once the peer
   * pool exists. It is the cluster-labelled "is the node up" signal the dashboards and the node-down alert
   * use, independent of how Prometheus names its scrape jobs.
   */
  nodeStatus: () => ReadonlyArray<{ readonly node: string; readonly status: 'up' | 'down' | 'unknown' }> =
    () => [];

  constructor(labels: Record<string, string>) {
    this.registry.setDefaultLabels(labels);
    // Prefix without "process_": prom-client's own names start with process_ or nodejs_ already.
    client.collectDefaultMetrics({ register: this.registry, prefix: 'kvstore_gateway_' });
    const source = (): ReturnType<GatewayMetrics['nodeStatus']> => this.nodeStatus();
    new client.Gauge({
      name: 'kvstore_gateway_node_up',
      help: "1 while this gateway's connection to the node is up, 0 once it failed; absent before the first contact",
      labelNames: ['node'] as const,
      registers: [this.registry],
      collect() {
        // Rebuilt each scrape so a node that left the map stops being reported.
        this.reset();
        for (const { node, status } of source()) {
          if (status !== 'unknown') this.set({ node }, status === 'up' ? 1 : 0);
        }
      },
    });
  }
}
