import type { IncomingHttpHeaders } from 'node:http';
import type { ConsistencyLabel } from './metrics';

/**
 * The request and the answer as the operations see them, whatever carried them (the lean node:http
 * adapter or express): the operations parse, authorise, coordinate and render from these alone.
 */

/** The `op` label of the request metrics and logs. */
export type OpLabel =
  'get' | 'put' | 'delete' | 'health' | 'metrics' | 'cluster' | 'admin_repair' | 'batch' | 'list' | 'other';

/** What the request is recorded under (request-observer.ts); filled in as the request is understood. */
export interface RequestLabels {
  /** `other` until a route claims the request */
  op: OpLabel;
  /** the level once X-Consistency parsed, `none` until then (so a bad header never becomes a label value) */
  consistency: ConsistencyLabel;
}

export interface ApiRequest {
  readonly method: string;
  /** the request target as received: the path and the query */
  readonly target: string;
  readonly headers: IncomingHttpHeaders;
  /** the client's address, for the rate limiter and the logs */
  readonly remoteAddress: string | undefined;
  readonly rid: string;
  readonly labels: RequestLabels;
  /** A query parameter as the transport's query parser gives it: a string, an array when repeated, or undefined. */
  query(name: string): unknown;
  /**
   * The body as one Buffer, read only when called (a request refused before reads none); ApiError 413
   * past the value limit, 4xx for a body that cannot be read.
   */
  readBody(): Promise<Buffer>;
}

export interface ApiResult {
  readonly status: number;
  /** flat [name, value, name, value, ...], without Content-Length (the transport adds it) */
  readonly headers: readonly string[];
  readonly body: Buffer | string;
}

export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

export function jsonResult(status: number, value: unknown): ApiResult {
  return { status, headers: ['Content-Type', JSON_CONTENT_TYPE], body: JSON.stringify(value) };
}
