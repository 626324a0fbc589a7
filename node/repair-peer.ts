import { KvError } from '../common/errors';
import type { RpcClient } from '../common/rpc-client';
import type { RecordWrite } from '../common/rpc-protocol';

export interface BucketItem {
  readonly k: Buffer;
  readonly r: Buffer;
}

/** What a pass needs of another replica; over RPC in production (rpcRepairPeer). */
export interface RepairPeer {
  readonly id: string;
  info(): Promise<{ ready: boolean }>;
  roots(partitions: readonly number[]): Promise<Buffer[]>;
  leaves(partition: number): Promise<Buffer>;
  bucket(partition: number, leaf: number): Promise<BucketItem[]>;
  /** applies records under the merge rule; true per item where it was newer */
  write(items: readonly RecordWrite[]): Promise<boolean[]>;
}

export class RepairProtocolError extends KvError {
  constructor(peer: string, message: string, context: Record<string, unknown> = {}) {
    super('repair_protocol', `${peer}: ${message}`, { peer, ...context });
  }
}

/** A RepairPeer over a node's internal RPC connection, checking the shape of every reply. */
export function rpcRepairPeer(client: RpcClient): RepairPeer {
  const id = client.nodeId;
  return {
    id,
    async info() {
      const r = await client.call({ op: 'info' });
      if (typeof r?.ready !== 'boolean') throw new RepairProtocolError(id, 'info reply lacks ready');
      return { ready: r.ready };
    },
    async roots(partitions) {
      const r = await client.call({ op: 'tree-roots', partitions });
      if (
        !Array.isArray(r?.roots) ||
        r.roots.length !== partitions.length ||
        !r.roots.every(Buffer.isBuffer)
      ) {
        throw new RepairProtocolError(id, 'malformed tree-roots reply', { partitions: partitions.length });
      }
      return r.roots;
    },
    async leaves(p) {
      const r = await client.call({ op: 'tree-leaves', p });
      if (!Buffer.isBuffer(r?.leaves)) throw new RepairProtocolError(id, 'malformed tree-leaves reply');
      return r.leaves;
    },
    async bucket(p, b) {
      const r = await client.call({ op: 'bucket', p, b });
      if (!Array.isArray(r?.items) || !r.items.every((i) => Buffer.isBuffer(i?.k) && Buffer.isBuffer(i?.r))) {
        throw new RepairProtocolError(id, 'malformed bucket reply', { partition: p, leaf: b });
      }
      return r.items;
    },
    async write(items) {
      const r = await client.call({ op: 'write', items });
      if (!Array.isArray(r?.applied) || r.applied.length !== items.length) {
        throw new RepairProtocolError(id, 'malformed write reply');
      }
      return r.applied;
    },
  };
}
