import type { z } from 'zod';
import {
  BatchReplySchema,
  ClusterReplySchema,
  firstIssue,
  ListReplySchema,
  RebalanceStatusSchema,
  RepairReportSchema,
  ScaleResultSchema,
  WriteReplySchema,
  type ClusterInfo,
  type RebalanceStatus,
  type RepairReport,
  type ScaleResult,
} from '../common/rest-api';
import { KvClientError, type ErrorContext } from './client-error';
import type { BatchResult, ListedEntry, ListPage, WriteResult } from './types';

/**
 * Checks the gateway's (and the launcher's) JSON replies against their schemas in common/rest-api.ts,
 * the definitions the gateway answers from, so a wrong URL (another service answering JSON) fails
 * here as `bad_response` rather than in a caller. Fields a newer server adds are dropped, not refused.
 */

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parse<T extends z.ZodType>(schema: T, body: unknown, what: string, ctx?: ErrorContext): z.output<T> {
  const r = schema.safeParse(body);
  if (!r.success) throw new KvClientError('bad_response', `unexpected ${what}: ${firstIssue(r.error)}`, ctx);
  return r.data;
}

export function writeResult(body: unknown, ctx: ErrorContext): WriteResult {
  return parse(WriteReplySchema, body, 'write response', ctx);
}

/** The cluster view, with `rebalance` absent (not null) when none is under way. */
export function parseClusterInfo(body: unknown, ctx?: ErrorContext): ClusterInfo {
  const { rebalance, ...info } = parse(ClusterReplySchema, body, 'cluster info', ctx);
  return rebalance ? { ...info, rebalance } : info;
}

export function parseRebalanceStatus(body: unknown, ctx?: ErrorContext): RebalanceStatus {
  return parse(
    RebalanceStatusSchema,
    body,
    'rebalance status (is the URL the launcher admin URL, port + 100?)',
    ctx,
  );
}

export function parseRepairReport(body: unknown, ctx?: ErrorContext): RepairReport {
  return parse(RepairReportSchema, body, 'repair report', ctx);
}

export function parseScaleResult(body: unknown, ctx?: ErrorContext): ScaleResult {
  return parse(ScaleResultSchema, body, 'scale result', ctx);
}

/** `POST /v1/batch`: one result per operation sent, values decoded from base64. */
export function parseBatchReply(body: unknown, sent: number, ctx: ErrorContext): BatchResult[] {
  const { results } = parse(BatchReplySchema, body, 'batch response', ctx);
  if (results.length !== sent) {
    throw new KvClientError(
      'bad_response',
      `unexpected batch response: ${results.length} results for ${sent} operations`,
      ctx,
    );
  }
  return results.map(({ value, ...r }): BatchResult =>
    value === undefined ? r : { ...r, value: Buffer.from(value, 'base64') },
  );
}

/** `GET /v1/kv`: a page of a listing, values decoded from base64. */
export function parseListReply(body: unknown, ctx: ErrorContext): ListPage {
  const { items, cursor } = parse(ListReplySchema, body, 'listing response', ctx);
  const entries = items.map(({ value, ...e }): ListedEntry =>
    value === undefined ? e : { ...e, value: Buffer.from(value, 'base64') },
  );
  return cursor === undefined ? { entries } : { entries, cursor };
}
