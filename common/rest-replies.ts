import type { MoveProgress, RebalanceProgress } from './rebalance-progress';
import type { IncomingMoveState, IncomingMoveStatus, NodeStatus, RepairStatus } from './rpc-protocol';

/**
 * The JSON bodies of the public REST API's admin replies (docs/design.md, "Public API"),
 * defined once: the gateway and the local launcher render them, the client parses them.
 * Types only, so the client package still loads nothing of common/ at run time.
 */

export type { IncomingMoveState };

export interface ClusterNode {
  readonly id: string;
  readonly address: string;
  readonly zone?: string;
  /** as the gateway last saw it; 'unknown' until it has talked to the node (one that just joined) */
  readonly status: NodeStatus;
  /** Number of partition replicas this node holds. */
  readonly partitions: number;
}

export interface ClusterMove {
  readonly partition: number;
  readonly from: string;
  readonly to: string;
}

/** The plan of a rebalance under way, as recorded in the partition map. */
export interface ClusterRebalance {
  /** node ids the cluster is moving to; nodes listed but not here are being drained */
  readonly targetNodes: readonly string[];
  /** moves in the plan when it was made */
  readonly movesTotal: number;
  /** ms since the Unix epoch */
  readonly startedAt: number;
}

/** The gateway's view of the partition map (`GET /v1/cluster`), as the client returns it. */
export interface ClusterInfo {
  readonly cluster: string;
  readonly epoch: number;
  readonly partitionCount: number;
  readonly replicationFactor: number;
  readonly nodes: readonly ClusterNode[];
  /** partitions[p] lists the ids of the nodes holding partition p. */
  readonly partitions: readonly (readonly string[])[];
  readonly moves: readonly ClusterMove[];
  /** present while a rebalance is under way */
  readonly rebalance?: ClusterRebalance;
}

/** `GET /v1/cluster` on the wire: the gateway sends `rebalance: null` when none is under way. */
export interface ClusterReply extends Omit<ClusterInfo, 'rebalance'> {
  readonly rebalance: ClusterRebalance | null;
}

/** A move filling a partition on a node, as that node reports it (relayed by the gateway). */
export type IncomingMove = IncomingMoveStatus;

/** One node's anti-entropy progress, as that node reports it (`kvctl repair`). */
export type RepairProgress = RepairStatus;

export interface NodeRepairReport {
  readonly id: string;
  readonly address: string;
  /** serves reads (false while refilling); set by GET */
  readonly ready?: boolean;
  /** records on the node's disk, tombstones included; set by GET */
  readonly keys?: number;
  /** bytes used by the node's data tree; set by GET */
  readonly bytes?: number;
  /** hints the node holds for other nodes; set by GET */
  readonly hints?: number;
  readonly repair?: RepairProgress;
  /** moves filling partitions on the node (rebalancing); set by GET */
  readonly incoming?: readonly IncomingMove[];
  /** records and bytes the node copied by moves since it started; set by GET */
  readonly streamedKeys?: number;
  readonly streamedBytes?: number;
  /** the node could not be asked */
  readonly error?: { readonly code: string; readonly message: string };
}

/** `POST` / `GET /v1/admin/repair`: every node of the map, each with its progress or its error. */
export interface RepairReport {
  readonly epoch: number;
  /** the partitions asked for; absent: all */
  readonly partitions?: readonly number[];
  readonly nodes: readonly NodeRepairReport[];
}

/** One move of a rebalance; `waiting`: its receiving node has not reported it yet. */
export type RebalanceMoveStatus = MoveProgress;

/** Where a rebalance stands (`GET /v1/admin/rebalance` on the local launcher). */
export type RebalanceStatus = RebalanceProgress;

/** `POST /v1/admin/scale`: the rebalance as planned, and the nodes started for it. */
export interface ScaleResult extends RebalanceStatus {
  readonly addedNodes: readonly string[];
}

/** One operation's answer in `POST /v1/batch`'s reply, at the operation's index. */
export interface BatchResultReply {
  /** the HTTP status the operation alone would have had */
  readonly status: number;
  readonly key?: string;
  readonly version?: string;
  /** a get's value, base64 */
  readonly value?: string;
  readonly contentType?: string;
  readonly error?: { readonly code: string; readonly message: string };
}

/** `POST /v1/batch` */
export interface BatchReply {
  readonly results: readonly BatchResultReply[];
}

/** One key of a listing (`GET /v1/kv`); value and contentType unless keys_only. */
export interface ListEntryReply {
  readonly key: string;
  readonly version: string;
  /** base64 */
  readonly value?: string;
  readonly contentType?: string;
}

/** `GET /v1/kv`: a page of a listing; `cursor` is present while it goes on (pass it back for the next page). */
export interface ListReply {
  readonly items: readonly ListEntryReply[];
  readonly cursor?: string;
}
