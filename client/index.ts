/** The kvstore client package: `KeyValueStoreClient` for code, `kvctl` (client/kvctl.ts) for shells. */
export {
  CONSISTENCY_LEVELS,
  KeyValueStoreClient,
  KvClientError,
  encodeKey,
  isConsistency,
  parseClusterInfo,
} from './client';
export type {
  ClientOptions,
  ClusterInfo,
  ClusterMove,
  ClusterNode,
  Consistency,
  Entry,
  PutOptions,
  RequestOptions,
  WriteResult,
} from './client';
