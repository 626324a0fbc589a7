import type { Principal } from '../../common/api-keys';
import type { Consistency } from '../../common/consistency';
import { formatVersion, type Version } from '../../common/hlc';
import { jsonResult, type ApiRequest, type ApiResult } from '../api-request';
import type { Authoriser } from '../authoriser';
import type { Coordinator } from '../coordinator';
import { keyFromKvPath, parseConsistency, type InputLimits } from '../request-input';

/**
 * What every data operation (get.ts, put.ts, delete.ts) is given, and the steps they share. An operation
 * is one function from an ApiRequest and its sender (authenticated at the door, before any route, by
 * either adapter) to an ApiResult or a thrown ApiError: parse, authorise the key, coordinate, render.
 */
export interface OperationDeps {
  readonly coordinator: Coordinator;
  readonly limits: InputLimits;
  readonly authz: Authoriser;
}

/** One operation: the request and its sender to the answer, or a thrown ApiError. */
export type Operation = (ops: OperationDeps, req: ApiRequest, principal: Principal) => Promise<ApiResult>;

/** The public data route: the key is everything after it (docs/design.md, "Public API"). */
export const KV_PREFIX = '/v1/kv/';

/** The key of a /v1/kv/{key} request (400 or 413 when it is not a valid key). */
export function kvPathKey(ops: OperationDeps, req: ApiRequest): Buffer {
  return keyFromKvPath(req.target, KV_PREFIX, ops.limits);
}

/** 403 unless the sender's key may touch `key` (its prefix); called right after the key is parsed. */
export function authoriseKey(ops: OperationDeps, req: ApiRequest, principal: Principal, key: Buffer): void {
  ops.authz.checkKey(principal, key, req, req.rid);
}

/** The request's consistency level (400 when X-Consistency is invalid), noted for the latency label. */
export function requestConsistency(req: ApiRequest): Consistency {
  const consistency = parseConsistency(req.headers['x-consistency']);
  req.labels.consistency = consistency;
  return consistency;
}

/** The answer to a write on /v1/kv: the key and the version it was written at. */
export function writtenResult(key: Buffer, version: Version): ApiResult {
  return jsonResult(200, { key: key.toString('utf8'), version: formatVersion(version) });
}
