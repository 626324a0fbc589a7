import type { Principal } from '../../common/api-keys';
import { jsonResult, type ApiRequest } from '../api-request';
import { parseKey } from '../request-input';
import {
  authoriseKey,
  kvPathKey,
  refuseUnevaluatedPreconditions,
  requestConsistency,
  writtenResult,
  type Operation,
  type OperationDeps,
} from './context';

/** DELETE /v1/kv/{key}: writes a tombstone; the answer names the version it was written at. */
export const deleteValue: Operation = async (ops, req, principal) => {
  const key = kvPathKey(ops, req);
  const version = await deleteKey(ops, req, principal, key);
  return writtenResult(key, version);
};

/** DELETE /delete?key=K, the original design's delete: `{ success: true }`. */
export const legacyDelete: Operation = async (ops, req, principal) => {
  await deleteKey(ops, req, principal, parseKey(req.query('key'), ops.limits));
  return jsonResult(200, { success: true });
};

function deleteKey(ops: OperationDeps, req: ApiRequest, principal: Principal, key: Buffer) {
  authoriseKey(ops, req, principal, key);
  refuseUnevaluatedPreconditions(req, 'write');
  const consistency = requestConsistency(req);
  return ops.coordinator.delete(key, { consistency, rid: req.rid });
}
