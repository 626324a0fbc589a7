import type { Principal } from '../../common/api-keys';
import { formatVersion } from '../../common/hlc';
import type { KvRecord } from '../../common/record';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest } from '../api-request';
import { DEFAULT_CONTENT_TYPE, parseKey } from '../request-input';
import {
  authoriseKey,
  kvPathKey,
  refuseUnevaluatedPreconditions,
  requestConsistency,
  type Operation,
  type OperationDeps,
} from './context';

/**
 * GET /v1/kv/{key}: the value's bytes with the Content-Type it was written with, its version as the
 * ETag; 404 when the key has none.
 */
export const getValue: Operation = async (ops, req, principal) => {
  const key = kvPathKey(ops, req);
  const rec = await readRecord(ops, req, principal, key);
  return {
    status: 200,
    headers: [
      'ETag',
      `"${formatVersion(rec.version)}"`,
      'Content-Type',
      rec.contentType ?? DEFAULT_CONTENT_TYPE,
    ],
    body: rec.value,
  };
};

/**
 * GET /get?key=K, the original design's read: JSON `{ key, value }`. A value stored as JSON
 * (application/json, as POST /put stores anything but a string) is given back parsed; anything else
 * as its UTF-8 text, as it always was.
 */
export const legacyGet: Operation = async (ops, req, principal) => {
  const key = parseKey(req.query('key'), ops.limits);
  const rec = await readRecord(ops, req, principal, key);
  return jsonResult(200, { key: key.toString('utf8'), value: legacyValue(rec) });
};

function legacyValue(rec: KvRecord): unknown {
  const text = rec.value.toString('utf8');
  if (!isJsonType(rec.contentType)) return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Stored through PUT /v1/kv with a JSON type but not JSON: the text is what there is to give.
    return text;
  }
}

function isJsonType(type: string | undefined): boolean {
  const essence = type?.split(';')[0]?.trim().toLowerCase();
  return essence === 'application/json' || (essence?.endsWith('+json') ?? false);
}

async function readRecord(
  ops: OperationDeps,
  req: ApiRequest,
  principal: Principal,
  key: Buffer,
): Promise<KvRecord> {
  authoriseKey(ops, req, principal, key);
  refuseUnevaluatedPreconditions(req, 'read');
  const consistency = requestConsistency(req);
  const rec = await ops.coordinator.get(key, { consistency, rid: req.rid });
  if (!rec) throw new ApiError(404, 'not_found', 'key not found');
  return rec;
}
