import { KvError } from '../common/errors';
import type {
  KeyRef,
  ReadReply,
  RecordWrite,
  ReplyByOp,
  RpcOp,
  RpcRequestBody,
  WriteReply,
} from '../common/rpc-protocol';

/** What the coalescer sends through: an RpcClient. */
export interface RpcCaller {
  call<Op extends RpcOp>(body: Extract<RpcRequestBody, { op: Op }>, rid?: string): Promise<ReplyByOp[Op]>;
}

interface Waiting<Item, Reply> {
  readonly items: readonly Item[];
  resolve(reply: Reply): void;
  reject(err: unknown): void;
}

interface NodeQueue {
  writes: Waiting<RecordWrite, WriteReply>[];
  reads: Waiting<KeyRef, ReadReply>[];
}

/**
 * The replica calls of one batch request (POST /v1/batch), grouped by node: every `write` and every
 * full `read` the batch's operations send to a node in the same turn of the event loop goes out as
 * one RPC carrying all their items, and each caller gets the part of the reply that answers its own
 * items. The quorum logic above it (gateway/coordinator.ts) is the single-key logic, unchanged: a
 * batch of N keys costs one write RPC and one read RPC per node, not N. An RPC that fails fails
 * every operation in it, as N RPCs to a node that is down would.
 */
export class RpcCoalescer {
  private readonly queues = new Map<string, NodeQueue>();
  private scheduled = false;

  constructor(
    private readonly clientOf: (node: string) => RpcCaller,
    private readonly rid?: string,
  ) {}

  write(node: string, items: readonly RecordWrite[]): Promise<WriteReply> {
    return new Promise((resolve, reject) => {
      this.queue(node).writes.push({ items, resolve, reject });
      this.schedule();
    });
  }

  /** Full reads only: digest reads are not coalesced (the flag is per RPC). */
  read(node: string, items: readonly KeyRef[]): Promise<ReadReply> {
    return new Promise((resolve, reject) => {
      this.queue(node).reads.push({ items, resolve, reject });
      this.schedule();
    });
  }

  private queue(node: string): NodeQueue {
    let q = this.queues.get(node);
    if (!q) this.queues.set(node, (q = { writes: [], reads: [] }));
    return q;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // After every operation of the turn has sent its first calls (they run to their first await).
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const queues = [...this.queues];
    this.queues.clear();
    for (const [node, q] of queues) {
      if (q.writes.length > 0) {
        this.send(
          node,
          q.writes,
          (items) => ({ op: 'write', items }),
          (reply, from, n) => ({
            applied: sliceOf(reply.applied, from, n, node),
          }),
        );
      }
      if (q.reads.length > 0) {
        this.send(
          node,
          q.reads,
          (items) => ({ op: 'read', items }),
          (reply, from, n) => ({
            records: sliceOf(reply.records, from, n, node),
          }),
        );
      }
    }
  }

  private send<Item, Op extends 'write' | 'read'>(
    node: string,
    waiting: readonly Waiting<Item, ReplyByOp[Op]>[],
    body: (items: Item[]) => Extract<RpcRequestBody, { op: Op }>,
    part: (reply: ReplyByOp[Op], from: number, n: number) => ReplyByOp[Op],
  ): void {
    const items = waiting.flatMap((w) => w.items);
    let client: RpcCaller;
    try {
      client = this.clientOf(node);
    } catch (err) {
      for (const w of waiting) w.reject(err);
      return;
    }
    client.call<Op>(body(items), this.rid).then(
      (reply) => {
        let from = 0;
        for (const w of waiting) {
          try {
            w.resolve(part(reply, from, w.items.length));
          } catch (err) {
            w.reject(err);
          }
          from += w.items.length;
        }
      },
      (err: unknown) => {
        for (const w of waiting) w.reject(err);
      },
    );
  }
}

function sliceOf<T>(all: readonly T[] | undefined, from: number, n: number, node: string): T[] {
  if (!Array.isArray(all) || all.length < from + n) {
    throw new KvError(
      'bad_reply',
      `${node} answered ${Array.isArray(all) ? all.length : 'no'} items to a batched call`,
      {
        node,
      },
    );
  }
  return all.slice(from, from + n);
}
