import client, { type Registry } from 'prom-client';

/** Anti-entropy's metrics, registered on the node's registry (node/metrics.ts stays the data path's). */
export class AntiEntropyMetrics {
  readonly rangesCompared: client.Counter<'level' | 'result'>;
  readonly keysRepaired: client.Counter<'direction'>;
  readonly lastFullRepair: client.Gauge<'partition'>;
  readonly recordsPurged: client.Counter<'kind'>;
  readonly passes: client.Counter<'outcome'>;
  readonly passDuration: client.Histogram;
  readonly peerErrors: client.Counter<'peer'>;
  readonly refilling: client.Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.rangesCompared = new client.Counter({
      name: 'kvstore_node_antientropy_ranges_compared_total',
      help: 'Hash tree ranges compared with a replica: whole partitions (root) and leaves, by result',
      labelNames: ['level', 'result'] as const,
      registers,
    });
    this.keysRepaired = new client.Counter({
      name: 'kvstore_node_antientropy_keys_repaired_total',
      help: 'Records repaired by anti-entropy: pulled (a replica had a newer one) or pushed (a replica lacked ours)',
      labelNames: ['direction'] as const,
      registers,
    });
    this.lastFullRepair = new client.Gauge({
      name: 'kvstore_node_antientropy_last_full_repair_timestamp_seconds',
      help: 'When the partition was last synced with every other replica without error (Unix seconds)',
      labelNames: ['partition'] as const,
      registers,
    });
    this.recordsPurged = new client.Counter({
      name: 'kvstore_node_antientropy_records_purged_total',
      help: 'Tombstones and expired records deleted from disk after the grace period, once replicas agreed',
      labelNames: ['kind'] as const,
      registers,
    });
    this.passes = new client.Counter({
      name: 'kvstore_node_antientropy_passes_total',
      help: 'Anti-entropy passes finished, by outcome (complete: every partition synced with every replica)',
      labelNames: ['outcome'] as const,
      registers,
    });
    this.passDuration = new client.Histogram({
      name: 'kvstore_node_antientropy_pass_duration_seconds',
      help: 'Duration of an anti-entropy pass, throttling included',
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800],
      registers,
    });
    this.peerErrors = new client.Counter({
      name: 'kvstore_node_antientropy_peer_errors_total',
      help: 'Partition syncs with a replica that failed (unreachable, timed out, refused), by replica',
      labelNames: ['peer'] as const,
      registers,
    });
    this.refilling = new client.Gauge({
      name: 'kvstore_node_antientropy_refilling',
      help: '1 while this node refills an empty disk from its peers and refuses reads, else 0',
      registers,
    });
  }
}
