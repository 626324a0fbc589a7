/**
 * The record of a verification run: every request a client made, with what it
 * sent, what it got back and when, plus a final read of every key. Written by
 * the workload (workload.ts), judged by the checker (history-checker.ts).
 *
 * Plain data (JSON-serialisable) so a history can be saved, replayed through
 * the checker, or built by hand in tests. Self-contained like the rest of the
 * client package: no imports.
 */
import type { Consistency } from '../common/consistency';

export type OpKind = 'put' | 'delete' | 'get';

/**
 * - `ok`: the gateway answered with success (for a get: the value, or 404 absent).
 * - `failed`: an error answer (503 ...) or a broken connection: a write may or may
 *   not have taken effect (indeterminate); a read tells nothing.
 * - `timeout`: no answer within the request's deadline: indeterminate, and a hang.
 */
export type Outcome = 'ok' | 'failed' | 'timeout';

export type ConsistencyLevel = Consistency;

interface OpBase {
  /** unique within the history */
  readonly id: number;
  /** who issued it (a workload client, a fault harness phase) */
  readonly client: string;
  readonly key: string;
  /** ms on one monotonic clock (performance.timeOrigin + performance.now()), sub-ms precision */
  readonly start: number;
  readonly end: number;
  readonly outcome: Outcome;
  /** `X-Consistency` the request was sent with; quorum when absent */
  readonly consistency?: ConsistencyLevel;
  /** the client's deadline for this request, ms */
  readonly timeoutMs?: number;
  /** error code and message for failed and timed-out requests */
  readonly error?: string;
}

export interface PutOp extends OpBase {
  readonly op: 'put';
  /** the value written; unique per key across the history */
  readonly value: string;
  /** `<wall>.<logical>.<writer>` returned by the gateway; set when ok */
  readonly version?: string;
}

export interface DeleteOp extends OpBase {
  readonly op: 'delete';
  /** the tombstone's version returned by the gateway; set when ok */
  readonly version?: string;
}

export interface GetOp extends OpBase {
  readonly op: 'get';
  /** when ok: the value read, or null for absent; undefined otherwise */
  readonly value?: string | null;
  /** when ok and a value was read: its version (from the ETag) */
  readonly version?: string;
}

export type HistoryOp = PutOp | DeleteOp | GetOp;

/**
 * A read of one key after every operation of the history has ended (and, in
 * the fault suite, after the cluster converged). `source` says who answered:
 * `gateway` for a normal read, a node id for a read served by that node alone.
 */
export interface FinalRead {
  readonly key: string;
  readonly value: string | null;
  readonly version?: string;
  readonly source: string;
  /**
   * The level the final read was made at: it must see the acknowledged writes
   * that level overlaps with. Absent: read after the cluster converged (e.g.
   * from one node alone), so it must reflect every acknowledged write.
   */
  readonly consistency?: ConsistencyLevel;
}

export interface History {
  readonly ops: readonly HistoryOp[];
  readonly final: readonly FinalRead[];
}
