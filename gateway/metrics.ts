import client from 'prom-client';
import type { Consistency } from '../common/consistency';
import { AUTH_FAILURE_REASONS } from '../common/api-keys';

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
  readonly readExtraRequests = new client.Counter({
    name: 'kvstore_gateway_read_extra_requests_total',
    help: 'Replicas a read asked beyond the R its level needs, because one failed or was slow to answer',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly readDigestMismatches = new client.Counter({
    name: 'kvstore_gateway_read_digest_mismatches_total',
    help: 'Reads whose newest version came only from replicas asked for a digest (version without value), so one of them was asked again for the value',
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
  readonly shedRequests = new client.Counter({
    name: 'kvstore_gateway_shed_requests_total',
    help: 'Requests answered 503 at once because the gateway held its bound of request bytes or requests in flight (--max-inflight-bytes, --max-inflight-requests)',
    registers: [this.registry],
  });
  /** Set by the request listener: what its in-flight budget holds now. */
  inFlight: () => { bytes: number; requests: number; waiting: number } = () => ({
    bytes: 0,
    requests: 0,
    waiting: 0,
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
  readonly authFailures = new client.Counter({
    name: 'kvstore_gateway_auth_failures_total',
    help: 'Requests refused by authentication (401: missing, invalid) or authorisation (403: role, prefix)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly authKeyReloads = new client.Counter({
    name: 'kvstore_gateway_auth_key_reloads_total',
    help: 'Re-reads of a changed --auth-file, by outcome (ok, error: the last good keys stay in force)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly rateLimited = new client.Counter({
    name: 'kvstore_gateway_rate_limited_total',
    help: 'Requests refused with 429, by the limit they hit (key: per API key, address: per client address, connection: too many requests in flight on one connection)',
    labelNames: ['scope'] as const,
    registers: [this.registry],
  });
  readonly rateLimitBackend = new client.Gauge({
    name: 'kvstore_gateway_rate_limit_backend',
    help: 'Where rate limits are counted: 1 for the store that answered the latest check (redis: shared by all gateways, memory: this gateway alone), 0 for the other; both 0 when rate limiting is off',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly rateLimitFallbacks = new client.Counter({
    name: 'kvstore_gateway_rate_limit_fallbacks_total',
    help: 'Times the rate limiter lost Redis and fell back to counting in memory',
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
    // Every series exists from the start, so dashboards and rate() see a 0 before the first failure.
    for (const reason of AUTH_FAILURE_REASONS) this.authFailures.inc({ reason }, 0);
    for (const outcome of ['ok', 'error'] as const) this.authKeyReloads.inc({ outcome }, 0);
    for (const scope of ['key', 'address', 'connection'] as const) this.rateLimited.inc({ scope }, 0);
    for (const reason of ['failed', 'slow'] as const) this.readExtraRequests.inc({ reason }, 0);
    // Reads ask R replicas, so a repair needs a stale one among them: it may never happen in a run.
    for (const outcome of ['ok', 'failed'] as const) this.readRepairs.inc({ outcome }, 0);
    for (const outcome of ['stored', 'refused', 'failed', 'no_live_replica'] as const) {
      this.hintsSent.inc({ outcome }, 0);
    }
    for (const backend of ['redis', 'memory'] as const) this.rateLimitBackend.set({ backend }, 0);
    // The standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes...), which the
    // usual Node.js dashboards query, told apart by a label instead of a kvstore_gateway_ prefix.
    client.collectDefaultMetrics({ register: this.registry, labels: { component: 'gateway' } });
    const held = (): ReturnType<GatewayMetrics['inFlight']> => this.inFlight();
    new client.Gauge({
      name: 'kvstore_gateway_inflight_bytes',
      help: 'Request body bytes the gateway holds now (its bound: --max-inflight-bytes)',
      registers: [this.registry],
      collect() {
        this.set(held().bytes);
      },
    });
    new client.Gauge({
      name: 'kvstore_gateway_inflight_requests',
      help: 'Requests the gateway is serving now, and (state="waiting") those waiting for room',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect() {
        const h = held();
        this.set({ state: 'serving' }, h.requests);
        this.set({ state: 'waiting' }, h.waiting);
      },
    });
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
