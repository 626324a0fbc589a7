/** The kvstore client package: `KeyValueStoreClient` for code (`kvctl`, kvctl/main.ts, for shells). */
export { CONSISTENCY_LEVELS } from '../common/consistency';
export { KeyValueStoreClient } from './client';
export { KvClientError } from './client-error';
export { encodeKey, isConsistency } from './input-checks';
export { parseClusterInfo, parseRebalanceStatus } from './reply-parsers';
export type { Consistency } from '../common/consistency';
export type {
  ClusterInfo,
  ClusterMove,
  ClusterNode,
  ClusterRebalance,
  IncomingMove,
  IncomingMoveState,
  RebalanceMoveStatus,
  RebalanceStatus,
  ScaleResult,
} from '../common/rest-api';
export type {
  BatchOperation,
  BatchResult,
  ClientOptions,
  Entry,
  ListedEntry,
  ListOptions,
  ListPage,
  PutOptions,
  RequestOptions,
  WriteResult,
} from './types';
