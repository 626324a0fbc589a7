import type { HybridLogicalClock } from './hlc';
import type { Logger } from './logger';
import type { PartitionMap } from './partition-map';
import { RpcClient, type NodeStatus } from './rpc-client';

/** How long a client of a node that left the map (or moved) stays open for requests already sent. */
const RETIRE_AFTER_MS = 10_000;

/**
 * One RpcClient per node of the current map. Rebuilt on map changes: clients of
 * nodes that left are closed, a node whose address changed gets a fresh client.
 */
export class PeerPool {
  private readonly clients = new Map<string, RpcClient>();
  private readonly retiring = new Set<RpcClient>();
  private readonly probing = new Set<RpcClient>();
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: {
      clock: HybridLogicalClock;
      epoch: () => number;
      timeoutMs: number;
      log?: Logger;
      /** the cluster's internal token, presented on every connection (RpcClientOptions.token) */
      token?: string;
    },
  ) {}

  update(map: PartitionMap): void {
    const wanted = new Map(map.nodes.map((n) => [n.id, n.address]));
    for (const [id, client] of this.clients) {
      if (wanted.get(id) !== client.address) {
        this.clients.delete(id);
        // Requests routed by the previous map may still be in flight to it (a node that just left
        // the map is usually still up): let them finish rather than fail them by closing now.
        this.retiring.add(client);
        setTimeout(() => {
          this.retiring.delete(client);
          client.close();
        }, RETIRE_AFTER_MS).unref();
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
            token: this.opts.token,
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

  /**
   * Asks every node for `info` each `intervalMs`, so a node's status comes from a recent answer even
   * when no request goes its way: a stopped process shows as down within RpcClient's stall time. The
   * answer itself is not needed: status() is what it feeds, failures included. Stopped by close().
   */
  startHeartbeat(intervalMs: number): void {
    if (this.heartbeat) return;
    this.heartbeat = setInterval(() => {
      for (const c of this.clients.values()) {
        // One probe at a time per node: a stalled one does not pile them up.
        if (this.probing.has(c)) continue;
        this.probing.add(c);
        c.call({ op: 'info' })
          .catch((err: unknown) => this.opts.log?.debug({ err, node: c.nodeId }, 'heartbeat unanswered'))
          .finally(() => this.probing.delete(c));
      }
    }, intervalMs);
    this.heartbeat.unref();
  }

  close(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    for (const c of this.clients.values()) c.close();
    for (const c of this.retiring) c.close();
    this.clients.clear();
    this.retiring.clear();
  }
}
