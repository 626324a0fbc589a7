import type { Principal } from '../../common/api-keys';
import type { Consistency } from '../../common/consistency';
import { formatVersion, type Version } from '../../common/hlc';
import { ApiError } from '../api-error';
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

/**
 * Preconditions kvstore does not evaluate yet (compare-and-set is its own piece of work). RFC 9110
 * (section 13.2.1) forbids performing a method as if an unevaluated precondition had passed, so a
 * write or delete carrying one is refused with 501, naming the header, before its body is read.
 * If-Modified-Since is ignored on writes by the RFC itself, and GET's If-None-Match is evaluated (304).
 */
const WRITE_PRECONDITIONS = ['if-match', 'if-none-match', 'if-unmodified-since'] as const;
/** On a read, If-Match and If-Unmodified-Since would turn a mismatch into 412: refused the same way. */
const READ_PRECONDITIONS = ['if-match', 'if-unmodified-since'] as const;

export function refuseUnevaluatedPreconditions(req: ApiRequest, kind: 'read' | 'write'): void {
  for (const name of kind === 'write' ? WRITE_PRECONDITIONS : READ_PRECONDITIONS) {
    if (req.headers[name] !== undefined) {
      throw new ApiError(
        501,
        'not_implemented',
        `${name.replace(/(^|-)[a-z]/g, (c) => c.toUpperCase())} is not supported yet: the ${kind} was not performed (kvstore does not evaluate preconditions on ${kind}s)`,
      );
    }
  }
}
