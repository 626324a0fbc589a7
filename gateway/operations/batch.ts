import type { Principal } from '../../common/api-keys';
import type { BatchReply, BatchResultReply } from '../../common/rest-replies';
import { formatVersion } from '../../common/hlc';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest, type ApiResult } from '../api-request';
import type { BatchItem, BatchOutcome } from '../coordinator';
import { DEFAULT_CONTENT_TYPE, MAX_TTL_SECONDS, parseContentType, parseKey } from '../request-input';
import { refuseUnevaluatedPreconditions, requestConsistency, type OperationDeps } from './context';

/** Operations one batch may carry. */
export const MAX_BATCH_OPERATIONS = 1000;

const FIELDS: Readonly<Record<BatchItem['op'], readonly string[]>> = {
  get: ['op', 'key'],
  put: ['op', 'key', 'value', 'ttl', 'contentType'],
  delete: ['op', 'key'],
};

/** Standard base64 with padding, as Buffer#toString('base64') writes it (and nothing Buffer.from would skip). */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * POST /v1/batch: `{ "operations": [{ "op": "get" | "put" | "delete", "key", "value" (base64, put),
 * "ttl" (seconds, put), "contentType" (put) }] }`, at most MAX_BATCH_OPERATIONS. Not atomic: each
 * operation is checked, authorised and run on its own, and answered in `results` at its index with
 * its own status (the HTTP status is 200 once the batch itself is well formed). The batch is counted
 * by the rate limits as one request per operation. `body` is the JSON the transport decoded (its
 * size limit gives 413).
 */
export async function batch(
  ops: OperationDeps,
  req: ApiRequest,
  principal: Principal,
  body: unknown,
): Promise<ApiResult> {
  refuseUnevaluatedPreconditions(req, 'write');
  const list = operationsOf(body);
  const consistency = requestConsistency(req);
  // The door counted one request; the rest before any operation runs.
  await ops.authz.admit(principal, list.length - 1, req);
  const checked = list.map((raw, i) => checkOperation(ops, req, principal, raw, i));
  const valid = checked.filter((c): c is { item: BatchItem } => 'item' in c).map((c) => c.item);
  const outcomes = await ops.coordinator.batch(valid, { consistency, rid: req.rid });
  let next = 0;
  const results = checked.map((c): BatchResultReply => {
    if ('error' in c) return failure(c.error, c.key);
    const item = c.item;
    return resultOf(item, outcomes[next++] as BatchOutcome);
  });
  const reply: BatchReply = { results };
  return jsonResult(200, reply);
}

function operationsOf(body: unknown): readonly unknown[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(400, 'bad_request', 'body must be a JSON object { "operations": [...] }');
  }
  const extra = Object.keys(body).filter((k) => k !== 'operations');
  if (extra.length > 0)
    throw new ApiError(400, 'bad_request', `unknown field ${JSON.stringify(extra[0])} in the batch`);
  const list = (body as { operations?: unknown }).operations;
  if (!Array.isArray(list) || list.length === 0) {
    throw new ApiError(400, 'bad_request', 'operations must be a non-empty array');
  }
  if (list.length > MAX_BATCH_OPERATIONS) {
    throw new ApiError(
      400,
      'bad_request',
      `a batch carries at most ${MAX_BATCH_OPERATIONS} operations, this one ${list.length}`,
    );
  }
  return list;
}

type Checked = { readonly item: BatchItem } | { readonly error: ApiError; readonly key?: string };

/** One operation parsed and authorised, or the error it is answered with; `i` names it in messages. */
function checkOperation(
  ops: OperationDeps,
  req: ApiRequest,
  principal: Principal,
  raw: unknown,
  i: number,
): Checked {
  const at = `operations[${i}]`;
  let keyText: string | undefined;
  try {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new ApiError(400, 'bad_request', 'must be an object { "op", "key", ... }');
    }
    const o = raw as Record<string, unknown>;
    const op = o.op;
    if (op !== 'get' && op !== 'put' && op !== 'delete') {
      throw new ApiError(400, 'bad_request', 'op must be "get", "put" or "delete"');
    }
    keyText = typeof o.key === 'string' ? o.key : undefined;
    const unknown = Object.keys(o).find((k) => !FIELDS[op].includes(k));
    if (unknown !== undefined)
      throw new ApiError(400, 'bad_request', `unknown field ${JSON.stringify(unknown)} for ${op}`);
    const key = parseKey(o.key, ops.limits);
    ops.authz.checkAccess(principal, op === 'get' ? 'read' : 'write', req, req.rid);
    ops.authz.checkKey(principal, key, req, req.rid);
    if (op !== 'put') return { item: { op, key } };
    if (typeof o.value !== 'string' || !BASE64.test(o.value)) {
      throw new ApiError(400, 'bad_request', 'value must be the value bytes in base64');
    }
    const value = Buffer.from(o.value, 'base64');
    if (value.length > ops.limits.maxValueBytes) {
      throw new ApiError(
        413,
        'payload_too_large',
        `value is ${value.length} bytes; the limit is ${ops.limits.maxValueBytes}`,
      );
    }
    let ttlSeconds: number | undefined;
    if (o.ttl !== undefined) {
      if (typeof o.ttl !== 'number' || !Number.isInteger(o.ttl) || o.ttl < 1 || o.ttl > MAX_TTL_SECONDS) {
        throw new ApiError(
          400,
          'bad_request',
          `ttl must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}`,
        );
      }
      ttlSeconds = o.ttl;
    }
    if (o.contentType !== undefined && typeof o.contentType !== 'string') {
      throw new ApiError(400, 'bad_request', 'contentType must be a string');
    }
    const contentType = parseContentType(o.contentType);
    return {
      item: {
        op,
        key,
        value,
        ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
        ...(contentType === undefined ? {} : { contentType }),
      },
    };
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    const named = new ApiError(err.status, err.apiCode, `${at}: ${err.message}`, err.context);
    return keyText === undefined ? { error: named } : { error: named, key: keyText };
  }
}

function resultOf(item: BatchItem, outcome: BatchOutcome): BatchResultReply {
  const key = item.key.toString('utf8');
  if (!outcome.ok) return failure(outcome.error, key);
  if (outcome.op !== 'get') return { status: 200, key, version: formatVersion(outcome.version) };
  const rec = outcome.record;
  if (!rec) return { status: 404, key, error: { code: 'not_found', message: 'key not found' } };
  return {
    status: 200,
    key,
    version: formatVersion(rec.version),
    value: rec.value.toString('base64'),
    contentType: rec.contentType ?? DEFAULT_CONTENT_TYPE,
  };
}

function failure(err: ApiError, key: string | undefined): BatchResultReply {
  return { status: err.status, ...(key === undefined ? {} : { key }), error: err.toBody().error };
}
