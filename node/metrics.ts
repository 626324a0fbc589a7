import fs from 'node:fs';
import client from 'prom-client';

/** The node's Prometheus metrics, on their own registry so tests can run several nodes in one process. */
export class NodeMetrics {
  readonly registry = new client.Registry();
  readonly rpcRequests = new client.Counter({
    name: 'kvstore_node_rpc_requests_total',
    help: 'Internal RPC requests handled, by operation and outcome',
    labelNames: ['op', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly rpcDuration = new client.Histogram({
    name: 'kvstore_node_rpc_duration_seconds',
    help: 'Time to handle an internal RPC request, writes including the durable flush',
    labelNames: ['op'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly recordsWritten = new client.Counter({
    name: 'kvstore_node_records_written_total',
    help: 'Records received for writing, by result (applied, or superseded by a version already held)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly rpcAuthFailures = new client.Counter({
    name: 'kvstore_node_rpc_auth_failures_total',
    help: "Internal RPC connections refused for not presenting the cluster's internal token",
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly mapEpoch = new client.Gauge({
    name: 'kvstore_node_map_epoch',
    help: 'Epoch of the partition map this node holds',
    registers: [this.registry],
  });

  constructor(
    labels: Record<string, string>,
    stats: () => { keys: number; bytes: number },
    /** the data directory; its filesystem's size and free space are exported when given */
    dataDir?: string,
  ) {
    this.registry.setDefaultLabels(labels);
    // The standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes...), which the
    // usual Node.js dashboards query, told apart by a label instead of a kvstore_node_ prefix.
    client.collectDefaultMetrics({ register: this.registry, labels: { component: 'node' } });
    if (dataDir !== undefined) registerDiskGauges(this.registry, dataDir);
    // Storage gauges are read at scrape time: an LMDB stat call is cheap and always current.
    new client.Gauge({
      name: 'kvstore_node_stored_keys',
      help: 'Records stored on this node, tombstones included',
      registers: [this.registry],
      collect() {
        this.set(stats().keys);
      },
    });
    new client.Gauge({
      name: 'kvstore_node_stored_bytes',
      help: 'Bytes used by the data tree in the embedded database',
      registers: [this.registry],
      collect() {
        this.set(stats().bytes);
      },
    });
  }
}

/**
 * Size and free space of the filesystem holding the data directory, read at scrape time (one statfs call),
 * so "disk nearly full" is measured where LMDB writes, not guessed from stored bytes.
 */
function registerDiskGauges(registry: client.Registry, dataDir: string): void {
  const statfs = (): fs.StatsFs | undefined => {
    try {
      return fs.statfsSync(dataDir);
    } catch {
      // Unreadable for a moment (the volume is being remounted): report nothing rather than a wrong 0.
      return undefined;
    }
  };
  new client.Gauge({
    name: 'kvstore_node_disk_size_bytes',
    help: "Size of the filesystem holding the node's data directory",
    registers: [registry],
    collect() {
      const s = statfs();
      if (s) this.set(s.blocks * s.bsize);
    },
  });
  new client.Gauge({
    name: 'kvstore_node_disk_free_bytes',
    help: "Bytes the node's process can still write on the filesystem holding its data directory",
    registers: [registry],
    collect() {
      const s = statfs();
      if (s) this.set(s.bavail * s.bsize);
    },
  });
}
