import type { Principal } from '../../common/api-keys';
import { formatVersion } from '../../common/hlc';
import type { KvRecord } from '../../common/record';
import { ApiError } from '../api-error';
import { jsonResult, type ApiRequest } from '../api-request';
import { parseKey } from '../request-input';
import {
  authoriseKey,
  kvPathKey,
  refuseUnevaluatedPreconditions,
  requestConsistency,
  type Operation,
  type OperationDeps,
} from './context';

/** GET /v1/kv/{key}: the value's bytes, its version as the ETag; 404 when the key has none. */
export const getValue: Operation = async (ops, req, principal) => {
  const key = kvPathKey(ops, req);
  const rec = await readRecord(ops, req, principal, key);
  return {
    status: 200,
    headers: ['ETag', `"${formatVersion(rec.version)}"`, 'Content-Type', 'application/octet-stream'],
    body: rec.value,
  };
};

/** GET /get?key=K, the original design's read: JSON `{ key, value }`, the value as UTF-8 text. */
export const legacyGet: Operation = async (ops, req, principal) => {
  const key = parseKey(req.query('key'), ops.limits);
  const rec = await readRecord(ops, req, principal, key);
  return jsonResult(200, { key: key.toString('utf8'), value: rec.value.toString('utf8') });
};

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
