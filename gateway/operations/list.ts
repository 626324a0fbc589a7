import type { Principal } from '../../common/api-keys';
import { formatVersion } from '../../common/hlc';
import { inRange, prefixRange, type KeyRange } from '../../common/key-range';
import type { ListEntryReply, ListReply } from '../../common/rest-replies';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest, type ApiResult } from '../api-request';
import { DEFAULT_CONTENT_TYPE } from '../request-input';
import { refuseUnevaluatedPreconditions, requestConsistency, type OperationDeps } from './context';

/** Entries per page when `limit` is not given, and at most. */
export const DEFAULT_LIST_LIMIT = 1000;
export const MAX_LIST_LIMIT = 10_000;

const PARAMS = ['prefix', 'start', 'end', 'limit', 'cursor', 'keys_only'];

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
  for (const name of Object.keys(queryOf(req))) {
    if (!PARAMS.includes(name)) {
      throw new ApiError(
        400,
        'bad_request',
        `unknown query parameter ${JSON.stringify(name)}; use ${PARAMS.join(', ')}`,
      );
    }
  }
  const range = rangeOf(ops, req);
  ops.authz.checkRange(principal, range, req, req.rid);
  const limit = limitOf(req.query('limit'));
  const keysOnly = flagOf(req.query('keys_only'), 'keys_only');
  const after = cursorOf(req.query('cursor'), range, ops.limits.maxKeyBytes);
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

/** The parsed query's names: the transport's parser decides how a query splits, the names are what it found. */
function queryOf(req: ApiRequest): Record<string, unknown> {
  const q = req.target.indexOf('?');
  if (q === -1) return {};
  return Object.fromEntries(new URLSearchParams(req.target.slice(q + 1)).entries());
}

function single(raw: unknown, name: string): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string') throw new ApiError(400, 'bad_request', `${name} must be given once`);
  return raw;
}

function boundOf(raw: unknown, name: string, maxKeyBytes: number): Buffer | undefined {
  const text = single(raw, name);
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

function rangeOf(ops: OperationDeps, req: ApiRequest): KeyRange {
  const max = ops.limits.maxKeyBytes;
  const prefix = boundOf(req.query('prefix'), 'prefix', max);
  const start = boundOf(req.query('start'), 'start', max);
  const end = boundOf(req.query('end'), 'end', max);
  if (prefix !== undefined) {
    if (start !== undefined || end !== undefined) {
      throw new ApiError(400, 'bad_request', 'give either prefix or start/end, not both');
    }
    return prefixRange(prefix);
  }
  if (end !== undefined && end.length === 0) throw new ApiError(400, 'bad_request', 'end must not be empty');
  const from = start ?? Buffer.alloc(0);
  if (end !== undefined && Buffer.compare(from, end) >= 0) {
    throw new ApiError(400, 'bad_request', 'end must come after start in byte order');
  }
  return end === undefined ? { start: from } : { start: from, end };
}

function limitOf(raw: unknown): number {
  const text = single(raw, 'limit');
  if (text === undefined) return DEFAULT_LIST_LIMIT;
  const n = /^\d{1,6}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_LIST_LIMIT)) {
    throw new ApiError(400, 'bad_request', `limit must be a whole number from 1 to ${MAX_LIST_LIMIT}`);
  }
  return n;
}

function flagOf(raw: unknown, name: string): boolean {
  const text = single(raw, name);
  if (text === undefined || text === 'false') return false;
  if (text === '' || text === 'true') return true;
  throw new ApiError(400, 'bad_request', `${name} must be true or false`);
}

/** A cursor is the last key of the page before, opaque to clients: a version tag and base64url. */
const CURSOR_TAG = 'k1.';

export function encodeCursor(after: Buffer): string {
  return CURSOR_TAG + after.toString('base64url');
}

function cursorOf(raw: unknown, range: KeyRange, maxKeyBytes: number): Buffer | undefined {
  const text = single(raw, 'cursor');
  if (text === undefined) return undefined;
  const body = text.startsWith(CURSOR_TAG) ? text.slice(CURSOR_TAG.length) : undefined;
  const after =
    body !== undefined && /^[A-Za-z0-9_-]+$/.test(body) ? Buffer.from(body, 'base64url') : undefined;
  if (!after || after.length === 0 || after.length > maxKeyBytes || after.toString('base64url') !== body) {
    throw new ApiError(400, 'bad_request', 'cursor is not one this API gave out');
  }
  if (!inRange(range, after)) {
    throw new ApiError(400, 'bad_request', 'cursor belongs to another listing: it lies outside this range');
  }
  return after;
}
