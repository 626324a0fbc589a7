import client from 'prom-client';
import type { HintDropReason } from './hint-store';

/** Hinted-handoff metrics of a node, registered on the node's registry (node/metrics.ts). */
export class HintMetrics {
  readonly received: client.Counter<'result'>;
  readonly replayed: client.Counter<'target'>;
  readonly dropped: client.Counter<'target' | 'reason'>;

  constructor(registry: client.Registry, store: { count(): number; bytes(): number }) {
    const registers = [registry];
    this.received = new client.Counter({
      name: 'kvstore_node_hints_received_total',
      help: 'Hints received from coordinators, by result (stored, refused, applied locally when this node was the target)',
      labelNames: ['result'] as const,
      registers,
    });
    this.replayed = new client.Counter({
      name: 'kvstore_node_hints_replayed_total',
      help: 'Hints delivered to their target node (acknowledged durable there) and deleted here',
      labelNames: ['target'] as const,
      registers,
    });
    this.dropped = new client.Counter({
      name: 'kvstore_node_hints_dropped_total',
      help: 'Hints dropped without delivery, by target and reason (overflow: oldest dropped over --max-hint-bytes)',
      labelNames: ['target', 'reason'] as const,
      registers,
    });
    // Gauges read the store at scrape time: its totals are kept in memory.
    new client.Gauge({
      name: 'kvstore_node_hints_stored',
      help: 'Hints held on this node for other nodes',
      registers,
      collect() {
        this.set(store.count());
      },
    });
    new client.Gauge({
      name: 'kvstore_node_hints_bytes',
      help: 'Bytes of hints held on this node (keys and values), bounded by --max-hint-bytes',
      registers,
      collect() {
        this.set(store.bytes());
      },
    });
  }

  onDropped(target: string, count: number, reason: HintDropReason): void {
    this.dropped.inc({ target, reason }, count);
  }
}
