/** The kvstore client package: `KeyValueStoreClient` for code, `kvctl` (client/kvctl.ts) for shells. */
export {
  CONSISTENCY_LEVELS,
  KeyValueStoreClient,
  KvClientError,
  encodeKey,
  isConsistency,
  parseClusterInfo,
  parseRebalanceStatus,
} from './client';
export type {
  ClientOptions,
  ClusterInfo,
  ClusterMove,
  ClusterNode,
  ClusterRebalance,
  Consistency,
  IncomingMove,
  IncomingMoveState,
  RebalanceMoveStatus,
  RebalanceStatus,
  ScaleResult,
  Entry,
  PutOptions,
  RequestOptions,
  WriteResult,
} from './client';

// Consistency verification, as `kvctl verify` runs it: a workload that records a history, and its checker.
export { checkHistory, countViolations, describeOp, VIOLATION_KINDS } from './history-checker';
export type { CheckOptions, CheckResult, Violation, ViolationKind } from './history-checker';
export type { FinalRead, History, HistoryOp } from './history';
export { readFinal, runWorkload, summarize } from './verify-workload';
export type { WorkloadOptions, WorkloadStats } from './verify-workload';
