import type { ServerResponse } from 'node:http';
import type { ApiResult } from './api-request';

/**
 * Writes `result` with one writeHead of one flat header list (`leading`, the X-Request-Id when given, the
 * result's, then Content-Length): a response whose headers are all set there, and none with setHeader before,
 * skips node's per-header map (the lean adapter answers this way; bench/RESULTS.md).
 */
export function writeResult(
  res: ServerResponse,
  result: ApiResult,
  leading: readonly string[],
  rid?: string,
): void {
  const { body } = result;
  const head: (string | number)[] = leading.slice();
  if (rid !== undefined) head.push('X-Request-Id', rid);
  for (const h of result.headers) head.push(h);
  head.push('Content-Length', typeof body === 'string' ? Buffer.byteLength(body) : body.length);
  res.writeHead(result.status, head);
  res.end(body);
}
