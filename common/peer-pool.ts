import type { HybridLogicalClock } from './hlc';
import type { Logger } from './logger';
import type { PartitionMap } from './partition-map';
import { RpcClient, type NodeStatus } from './rpc-client';

/**
 * One RpcClient per node of the current map. Rebuilt on map changes: clients of
 * nodes that left are closed, a node whose address changed gets a fresh client.
 */
export class PeerPool {
  private readonly clients = new Map<string, RpcClient>();

  constructor(
    private readonly opts: {
      clock: HybridLogicalClock;
      epoch: () => number;
      timeoutMs: number;
      log?: Logger;
    },
  ) {}

  update(map: PartitionMap): void {
    const wanted = new Map(map.nodes.map((n) => [n.id, n.address]));
    for (const [id, client] of this.clients) {
      if (wanted.get(id) !== client.address) {
        client.close();
        this.clients.delete(id);
      }
    }
    for (const [id, address] of wanted) {
      if (!this.clients.has(id)) {
        this.clients.set(
          id,
          new RpcClient({
            nodeId: id,
            address,
            clock: this.opts.clock,
            epoch: this.opts.epoch,
            timeoutMs: this.opts.timeoutMs,
            log: this.opts.log,
          }),
        );
      }
    }
  }

  get(nodeId: string): RpcClient | undefined {
    return this.clients.get(nodeId);
  }

  status(nodeId: string): NodeStatus {
    return this.clients.get(nodeId)?.status() ?? 'unknown';
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
