import type { ClockStamp } from './hlc';

/** A node as its callers last saw it (the gateway's /v1/cluster reports it). */
export type NodeStatus = 'up' | 'down' | 'unknown';

/**
 * The contract between gateway (and later peers) and a storage node, shared by
 * both ends. Every request carries the sender's map epoch and clock; every reply
 * carries the node's clock. Records travel in their encoded form (common/record.ts)
 * so the node stores bytes it never has to re-encode.
 */

export interface KeyRef {
  /** partition */
  readonly p: number;
  /** key bytes */
  readonly k: Buffer;
}

export interface RecordWrite extends KeyRef {
  /** encoded KvRecord */
  readonly r: Buffer;
}

/** A write that missed replica `t`, left with a live node to replay when `t` is back (hinted handoff). */
export interface HintWrite extends RecordWrite {
  /** target node id */
  readonly t: string;
}

export type RpcRequestBody =
  | {
      readonly op: 'read';
      readonly items: readonly KeyRef[];
      /**
       * Answer each record without its value (version, tombstone and expiry only; see
       * recordDigest): the replicas of a quorum read beyond the one sending the value.
       */
      readonly digest?: boolean;
    }
  | { readonly op: 'write'; readonly items: readonly RecordWrite[] }
  | { readonly op: 'info' }
  | { readonly op: 'hint'; readonly items: readonly HintWrite[] }
  /** anti-entropy, level 1: the root hash of each partition's tree */
  | { readonly op: 'tree-roots'; readonly partitions: readonly number[] }
  /** anti-entropy, level 2: the leaf hashes of one partition's tree */
  | { readonly op: 'tree-leaves'; readonly p: number }
  /** anti-entropy, level 3: every record of one leaf (bucket) of a partition */
  | { readonly op: 'bucket'; readonly p: number; readonly b: number }
  /** start a repair pass now (kvctl repair); all partitions this node holds when absent */
  | { readonly op: 'repair'; readonly partitions?: readonly number[] }
  /**
   * rebalancing: records of partition p in key order after key `after` (exclusive), at most
   * `limit` records and about `maxBytes` bytes (at least one record): a new replica streams a
   * partition by calling this until `more` is false
   */
  | {
      readonly op: 'scan';
      readonly p: number;
      readonly after?: Buffer;
      readonly limit: number;
      readonly maxBytes: number;
    }
  /**
   * listing (GET /v1/kv): the records of `partitions` whose keys lie in [start, end) (end absent: to
   * the end of the key space) and come after `after` (exclusive), merged into one key order, at most
   * `limit` records and about `maxBytes` bytes (at least one). Tombstones and expired records are
   * included: the gateway resolves each key across replicas. `digest`: records without their values.
   */
  | {
      readonly op: 'range';
      readonly partitions: readonly number[];
      readonly start: Buffer;
      readonly end?: Buffer;
      readonly after?: Buffer;
      readonly limit: number;
      readonly maxBytes: number;
      readonly digest?: boolean;
    };

export type RpcOp = RpcRequestBody['op'];

export interface ReadReply {
  /** encoded records, null where the node holds nothing for the key */
  readonly records: (Buffer | null)[];
}

export interface WriteReply {
  /** per item: true if stored, false if the node already held an equal or newer version (both are durable acks) */
  readonly applied: boolean[];
}

export interface RepairStatus {
  /** a pass is running */
  readonly running: boolean;
  readonly partitionsTotal: number;
  readonly partitionsDone: number;
  readonly keysRepaired: number;
  /** ms since the epoch; 0 when no pass has finished */
  readonly lastFullRepairAt: number;
  /** partitions of the current (or last) pass not synced with every replica (one was unreachable) */
  readonly partitionsFailed?: number;
  /** the node is refilling an empty disk from its peers and refuses reads meanwhile */
  readonly refilling?: boolean;
}

/** Where a move that fills a partition on this node stands (docs/design.md, "Rebalancing"). */
export type IncomingMoveState =
  /** copying the partition by range scan from the source */
  | 'streaming'
  /** copied; reconciling with the source's hash tree (writes that raced the scan) */
  | 'syncing'
  /** the hash tree matched the source's at the last check: the map owner may switch */
  | 'ready';

export interface IncomingMoveStatus {
  readonly partition: number;
  readonly from: string;
  readonly state: IncomingMoveState;
  /** records and bytes copied by this move so far (across restarts of the node) */
  readonly keys: number;
  readonly bytes: number;
  /** last failure talking to the source, while it lasts */
  readonly error?: string;
}

export interface ScanReply {
  readonly items: { readonly k: Buffer; readonly r: Buffer }[];
  /** false once the partition's last record is in `items` */
  readonly more: boolean;
}

export interface RangeReply {
  /** in key order; p: the key's partition */
  readonly items: { readonly p: number; readonly k: Buffer; readonly r: Buffer }[];
  /**
   * true when the reply stopped at its limit: every record of the partitions asked up to the last
   * item's key is in `items`, and there may be more after it. false: all of the range is in `items`.
   */
  readonly more: boolean;
}

export interface InfoReply {
  readonly nodeId: string;
  readonly epoch: number;
  readonly keys: number;
  /** bytes used by the data tree (absent from nodes older than this field) */
  readonly bytes?: number;
  readonly ready: boolean;
  /** hints held for other nodes */
  readonly hints?: number;
  readonly repair?: RepairStatus;
  /** moves filling partitions on this node (absent from nodes older than this field) */
  readonly incoming?: readonly IncomingMoveStatus[];
  /** records and bytes this node copied by moves since it started */
  readonly streamedKeys?: number;
  readonly streamedBytes?: number;
}

export interface HintReply {
  /** per item: true if stored durably, false if refused (e.g. the hint store is full of newer hints) */
  readonly stored: boolean[];
}

export interface TreeRootsReply {
  /** 8-byte root hash per requested partition, in request order */
  readonly roots: Buffer[];
}

export interface TreeLeavesReply {
  /** leaf hashes, 8 bytes each, leaf i at offset 8*i */
  readonly leaves: Buffer;
}

export interface BucketReply {
  readonly items: { readonly k: Buffer; readonly r: Buffer }[];
}

export interface ReplyByOp {
  read: ReadReply;
  write: WriteReply;
  info: InfoReply;
  hint: HintReply;
  'tree-roots': TreeRootsReply;
  'tree-leaves': TreeLeavesReply;
  bucket: BucketReply;
  repair: RepairStatus;
  scan: ScanReply;
  range: RangeReply;
}

export interface RpcRequestFrame {
  readonly id: number;
  readonly epoch: number;
  readonly clock: [number, number];
  /** request id of the public request this serves, for log correlation */
  readonly rid?: string;
  /** the record format the sender reads (common/record-format.ts); absent from format-1 senders */
  readonly rf?: number;
  readonly body: RpcRequestBody;
}

/**
 * The first frame a client sends on a connection to a node that requires the cluster's
 * internal credential (common/internal-token.ts). Sent once per connection, pipelined
 * ahead of the first requests (no round trip); a node without a token ignores it. A
 * connection whose first frame is not this, or carries another token, gets
 * `unauthorized` for every request it sent and is closed.
 */
export interface RpcAuthFrame {
  readonly auth: string;
}

export function isAuthFrame(message: unknown): message is RpcAuthFrame {
  return (
    typeof message === 'object' &&
    message !== null &&
    typeof (message as { auth?: unknown }).auth === 'string' &&
    (message as { body?: unknown }).body === undefined
  );
}

/** An auth frame is a few dozen bytes: before it, a peer gets no more than this per frame. */
export const MAX_AUTH_FRAME_BYTES = 4096;

export type RpcErrorCode =
  | 'stale_epoch'
  | 'bad_request'
  | 'clock_drift'
  | 'not_ready'
  | 'internal'
  /** the connection did not present the cluster's internal token */
  | 'unauthorized'
  /** the node's data volume is under its watermark: it refuses writes that grow the data, serves reads */
  | 'insufficient_storage'
  /** the node's last write transaction failed (an I/O error); it refuses writes for a while, then retries */
  | 'write_failed'
  /** the node holds its bound of writes waiting for their commit: this one was refused at once */
  | 'overloaded';

export interface RpcErrorBody {
  readonly code: RpcErrorCode;
  readonly message: string;
  /** the node's epoch, with stale_epoch */
  readonly epoch?: number;
}

export type RpcReply =
  | { readonly clock: [number, number]; readonly ok: true; readonly body: unknown }
  | { readonly clock: [number, number]; readonly ok: false; readonly error: RpcErrorBody };

/** `rf`: the record format the node reads (common/record-format.ts); absent from format-1 nodes. */
export type RpcReplyFrame = RpcReply & { readonly id: number; readonly rf?: number };

export function toWireClock(c: ClockStamp): [number, number] {
  return [c.wall, c.logical];
}

export function fromWireClock(c: unknown): ClockStamp | undefined {
  if (!Array.isArray(c) || c.length !== 2) return undefined;
  const [wall, logical] = c as unknown[];
  if (
    typeof wall !== 'number' ||
    typeof logical !== 'number' ||
    !Number.isFinite(wall) ||
    !Number.isInteger(logical)
  ) {
    return undefined;
  }
  return { wall, logical };
}
