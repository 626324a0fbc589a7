import type { Principal } from '../../common/api-keys';
import { formatVersion } from '../../common/hlc';
import { inRange, prefixRange, type KeyRange } from '../../common/key-range';
import {
  CURSOR_TAG,
  DEFAULT_LIST_LIMIT,
  firstIssue,
  ListQuerySchema,
  type ListEntryReply,
  type ListQuery,
  type ListReply,
} from '../../common/rest-api';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest, type ApiResult } from '../api-request';
import { DEFAULT_CONTENT_TYPE } from '../request-input';
import { refuseUnevaluatedPreconditions, requestConsistency, type OperationDeps } from './context';

/**
 * GET /v1/kv?prefix=P or ?start=A&end=B (half-open, byte order; either bound may be left out), with
 * `limit`, `cursor` (from the page before) and `keys_only`: a page of the live keys in key order,
 * each with its version and (unless keys_only) its value in base64 and its content type. `cursor`
 * is present while the listing goes on. Not a snapshot (docs/design.md, "Listing"): a key unchanged
 * for the whole listing appears exactly once; one written or deleted meanwhile may or may not, never
 * twice. A key limited to a prefix may list only inside it: a range reaching outside is refused (403).
 */
export async function listKeys(
  ops: OperationDeps,
  req: ApiRequest,
  principal: Principal,
): Promise<ApiResult> {
  refuseUnevaluatedPreconditions(req, 'read');
  const query = queryOf(req);
  const range = rangeOf(ops, query);
  ops.authz.checkRange(principal, range, req, req.rid);
  const limit = query.limit ?? DEFAULT_LIST_LIMIT;
  const keysOnly = query.keys_only ?? false;
  const after = cursorOf(query.cursor, range, ops.limits.maxKeyBytes);
  const consistency = requestConsistency(req);
  const page = await ops.coordinator.list(range, {
    consistency,
    rid: req.rid,
    limit,
    keysOnly,
    ...(after === undefined ? {} : { after }),
  });
  const items = page.entries.map((e): ListEntryReply => {
    const key = e.key.toString('utf8');
    const version = formatVersion(e.version);
    if (keysOnly || !e.record) return { key, version };
    return {
      key,
      version,
      value: e.record.value.toString('base64'),
      contentType: e.record.contentType ?? DEFAULT_CONTENT_TYPE,
    };
  });
  const reply: ListReply = page.next === undefined ? { items } : { items, cursor: encodeCursor(page.next) };
  return jsonResult(200, reply);
}

/**
 * The query checked against ListQuerySchema (common/rest-api.ts): the names as the target has them,
 * each value as the transport parsed it (an array when a name is repeated: refused).
 */
function queryOf(req: ApiRequest): ListQuery {
  const q = req.target.indexOf('?');
  const names = q === -1 ? [] : [...new URLSearchParams(req.target.slice(q + 1)).keys()];
  const raw = Object.fromEntries(names.map((name) => [name, req.query(name)]));
  const parsed = ListQuerySchema.safeParse(raw);
  if (!parsed.success) throw new ApiError(400, 'bad_request', firstIssue(parsed.error, false));
  return parsed.data;
}

function boundOf(text: string | undefined, name: string, maxKeyBytes: number): Buffer | undefined {
  if (text === undefined) return undefined;
  const b = Buffer.from(text, 'utf8');
  if (b.length > maxKeyBytes) {
    throw new ApiError(
      413,
      'payload_too_large',
      `${name} is ${b.length} bytes; keys are at most ${maxKeyBytes}`,
    );
  }
  return b;
}

function rangeOf(ops: OperationDeps, query: ListQuery): KeyRange {
  const max = ops.limits.maxKeyBytes;
  const prefix = boundOf(query.prefix, 'prefix', max);
  const start = boundOf(query.start, 'start', max);
  const end = boundOf(query.end, 'end', max);
  if (prefix !== undefined) {
    if (start !== undefined || end !== undefined) {
      throw new ApiError(400, 'bad_request', 'give either prefix or start/end, not both');
    }
    return prefixRange(prefix);
  }
  const from = start ?? Buffer.alloc(0);
  if (end !== undefined && Buffer.compare(from, end) >= 0) {
    throw new ApiError(400, 'bad_request', 'end must come after start in byte order');
  }
  return end === undefined ? { start: from } : { start: from, end };
}

export function encodeCursor(after: Buffer): string {
  return CURSOR_TAG + after.toString('base64url');
}

/** The cursor's key (its form is checked by ListQuerySchema), which must lie in this listing's range. */
function cursorOf(text: string | undefined, range: KeyRange, maxKeyBytes: number): Buffer | undefined {
  if (text === undefined) return undefined;
  // ListQuerySchema checked the tag and the alphabet; what is left is whether it decodes to a key.
  const body = text.slice(CURSOR_TAG.length);
  const after = Buffer.from(body, 'base64url');
  if (after.length === 0 || after.length > maxKeyBytes || after.toString('base64url') !== body) {
    throw new ApiError(400, 'bad_request', 'cursor is not one this API gave out');
  }
  if (!inRange(range, after)) {
    throw new ApiError(400, 'bad_request', 'cursor belongs to another listing: it lies outside this range');
  }
  return after;
}
