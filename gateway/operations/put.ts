import type { Principal } from '../../common/api-keys';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest, type ApiResult } from '../api-request';
import { parseKey, parseTtl } from '../request-input';
import {
  authoriseKey,
  kvPathKey,
  refuseUnevaluatedPreconditions,
  requestConsistency,
  writtenResult,
  type Operation,
  type OperationDeps,
} from './context';

/**
 * PUT /v1/kv/{key}[?ttl=S]: the body is the value. The key is in the path, so its prefix is checked, and
 * the headers and query parsed, before the body is read: a refused request reads none.
 */
export const putValue: Operation = async (ops, req, principal) => {
  const key = kvPathKey(ops, req);
  authoriseKey(ops, req, principal, key);
  refuseUnevaluatedPreconditions(req, 'write');
  const consistency = requestConsistency(req);
  const ttlSeconds = parseTtl(req.query('ttl'));
  const value = await req.readBody();
  const version = await ops.coordinator.put(key, value, { consistency, ttlSeconds, rid: req.rid });
  return writtenResult(key, version);
};

/**
 * POST /put, the original design's write: `body` is the request's JSON, decoded by the transport (express's
 * JSON parser), which must be `{ "key": string, "value": string }`; the answer `{ success: true }`.
 */
export async function legacyPut(
  ops: OperationDeps,
  req: ApiRequest,
  principal: Principal,
  body: unknown,
): Promise<ApiResult> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(400, 'bad_request', 'body must be a JSON object { "key": string, "value": string }');
  }
  const { key: rawKey, value: rawValue } = body as { key?: unknown; value?: unknown };
  const key = parseKey(rawKey, ops.limits);
  authoriseKey(ops, req, principal, key);
  refuseUnevaluatedPreconditions(req, 'write');
  if (typeof rawValue !== 'string') throw new ApiError(400, 'bad_request', 'value must be a string');
  const value = Buffer.from(rawValue, 'utf8');
  if (value.length > ops.limits.maxValueBytes) {
    throw new ApiError(
      413,
      'payload_too_large',
      `value is ${value.length} bytes; the limit is ${ops.limits.maxValueBytes}`,
    );
  }
  const consistency = requestConsistency(req);
  await ops.coordinator.put(key, value, { consistency, rid: req.rid });
  return jsonResult(200, { success: true });
}
