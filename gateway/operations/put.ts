import type { Principal } from '../../common/api-keys';
import { firstIssue, LegacyPutBodySchema } from '../../common/rest-api';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest, type ApiResult } from '../api-request';
import { parseContentType, parseKey, parseTtl } from '../request-input';
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
 * PUT /v1/kv/{key}[?ttl=S]: the body is the value, its Content-Type kept with it. The key is in the path, so its prefix is checked, and
 * the headers and query parsed, before the body is read: a refused request reads none.
 */
export const putValue: Operation = async (ops, req, principal) => {
  const key = kvPathKey(ops, req);
  authoriseKey(ops, req, principal, key);
  refuseUnevaluatedPreconditions(req, 'write');
  const consistency = requestConsistency(req);
  const ttlSeconds = parseTtl(req.query('ttl'));
  const contentType = parseContentType(req.headers['content-type']);
  const value = await req.readBody();
  const version = await ops.coordinator.put(key, value, {
    consistency,
    ttlSeconds,
    contentType,
    rid: req.rid,
  });
  return writtenResult(key, version);
};

/** How the original design's routes store a JSON value that is not a string. */
export const JSON_CONTENT_TYPE = 'application/json';
/** ... and a string: its UTF-8 bytes, as they always were. */
export const TEXT_CONTENT_TYPE = 'text/plain; charset=utf-8';

/**
 * POST /put, the original design's write: `body` is the request's JSON, decoded by the transport
 * (express's JSON parser), which must be `{ "key": string, "value": any JSON value }`; the answer
 * `{ success: true }`. A string is stored as its UTF-8 bytes (text/plain), anything else as its JSON
 * text (application/json), so GET /get gives back the value that was put.
 */
export async function legacyPut(
  ops: OperationDeps,
  req: ApiRequest,
  principal: Principal,
  body: unknown,
): Promise<ApiResult> {
  // Named before the schema runs, which would call a missing value only "invalid".
  if (typeof body === 'object' && body !== null && !Array.isArray(body) && !('value' in body)) {
    throw new ApiError(400, 'bad_request', 'value is required (any JSON value)');
  }
  const parsed = LegacyPutBodySchema.safeParse(body);
  if (!parsed.success) throw new ApiError(400, 'bad_request', firstIssue(parsed.error, false));
  const { key: rawKey, value: rawValue } = parsed.data;
  const key = parseKey(rawKey, ops.limits);
  authoriseKey(ops, req, principal, key);
  refuseUnevaluatedPreconditions(req, 'write');
  const text = typeof rawValue === 'string';
  const value = Buffer.from(text ? rawValue : JSON.stringify(rawValue), 'utf8');
  if (value.length > ops.limits.maxValueBytes) {
    throw new ApiError(
      413,
      'payload_too_large',
      `value is ${value.length} bytes; the limit is ${ops.limits.maxValueBytes}`,
    );
  }
  const consistency = requestConsistency(req);
  const contentType = text ? TEXT_CONTENT_TYPE : JSON_CONTENT_TYPE;
  await ops.coordinator.put(key, value, { consistency, contentType, rid: req.rid });
  return jsonResult(200, { success: true });
}
