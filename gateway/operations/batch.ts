import type { Principal } from '../../common/api-keys';
import {
  BatchEnvelopeSchema,
  BatchOperationSchema,
  firstIssue,
  type BatchReply,
  type BatchResultReply,
} from '../../common/rest-api';
import { formatVersion } from '../../common/hlc';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest, type ApiResult } from '../api-request';
import type { BatchItem, BatchOutcome } from '../batch-runner';
import { DEFAULT_CONTENT_TYPE, parseContentType, parseKey } from '../request-input';
import { refuseUnevaluatedPreconditions, requestConsistency, type OperationDeps } from './context';

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

/** The batch's shape (common/rest-api.ts); its operations are checked one by one. */
function operationsOf(body: unknown): readonly unknown[] {
  const envelope = BatchEnvelopeSchema.safeParse(body);
  if (!envelope.success) throw new ApiError(400, 'bad_request', firstIssue(envelope.error, false));
  return envelope.data.operations;
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
    keyText =
      typeof raw === 'object' && raw !== null && 'key' in raw && typeof raw.key === 'string'
        ? raw.key
        : undefined;
    const parsed = BatchOperationSchema.safeParse(raw);
    if (!parsed.success) throw new ApiError(400, 'bad_request', firstIssue(parsed.error, false));
    const o = parsed.data;
    const key = parseKey(o.key, ops.limits);
    ops.authz.checkAccess(principal, o.op === 'get' ? 'read' : 'write', req, req.rid);
    ops.authz.checkKey(principal, key, req, req.rid);
    if (o.op !== 'put') return { item: { op: o.op, key } };
    const value = Buffer.from(o.value, 'base64');
    if (value.length > ops.limits.maxValueBytes) {
      throw new ApiError(
        413,
        'payload_too_large',
        `value is ${value.length} bytes; the limit is ${ops.limits.maxValueBytes}`,
      );
    }
    const contentType = parseContentType(o.contentType);
    return {
      item: {
        op: 'put',
        key,
        value,
        ...(o.ttl === undefined ? {} : { ttlSeconds: o.ttl }),
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
