import { withoutContentType } from './record';
import type { ReplyByOp, RpcOp, RpcRequestBody } from './rpc-protocol';

/*
 * Which records a peer can read, so that nodes and gateways of two releases work together through a
 * rolling upgrade (docs/design.md, "Records and versions"). Format 1: records without content types
 * (a peer of that release refuses a record with flag 4). Format 2: records may carry one. A sender
 * says what it reads in every frame (`rf`); a frame without it comes from a format-1 peer. Records
 * go to a format-1 peer without their content type: it stores the value and version, as it always
 * did, and never sees a field it cannot read.
 */
export type RecordFormat = 1 | 2;

/** What this release reads and writes. */
export const RECORD_FORMAT: RecordFormat = 2;

/** The format a peer announced in a frame's `rf` (absent: a peer from before formats were announced). */
export function announcedFormat(rf: unknown): RecordFormat {
  return typeof rf === 'number' && rf >= 2 ? 2 : 1;
}

/**
 * The record has a content type (flag 4 of the wire format, common/record.ts). Not a record at all
 * (a malformed request): false, and the node it goes to refuses it.
 */
export function hasContentType(record: unknown): boolean {
  return record instanceof Uint8Array && record.length > 1 && (record[1] & 4) !== 0;
}

/** The request carries a record that a format-1 peer could not read. */
export function needsFormat2(body: RpcRequestBody): boolean {
  return (
    (body.op === 'write' || body.op === 'hint') &&
    Array.isArray(body.items) &&
    body.items.some((i) => hasContentType(i?.r))
  );
}

/** The request as a peer of `format` can read it: records without content types for format 1. */
export function requestForFormat(body: RpcRequestBody, format: RecordFormat): RpcRequestBody {
  if (format >= 2 || !needsFormat2(body)) return body;
  if (body.op === 'write')
    return { ...body, items: body.items.map((i) => ({ ...i, r: withoutContentType(i.r) })) };
  if (body.op === 'hint')
    return { ...body, items: body.items.map((i) => ({ ...i, r: withoutContentType(i.r) })) };
  return body;
}

type Keyed = { readonly k: Buffer; readonly r: Buffer };

function keyedForFormat1<T extends Keyed>(items: readonly T[]): T[] {
  return items.map((i) => (hasContentType(i.r) ? { ...i, r: withoutContentType(i.r) } : i));
}

/** A reply body of `op` as a caller of `format` can read it. */
export function replyForFormat(op: RpcOp | undefined, body: unknown, format: RecordFormat): unknown {
  if (format >= 2 || body === null || typeof body !== 'object') return body;
  switch (op) {
    case 'read': {
      const reply = body as ReplyByOp['read'];
      if (!reply.records.some((r) => r !== null && hasContentType(r))) return body;
      return { ...reply, records: reply.records.map((r) => (r === null ? r : withoutContentType(r))) };
    }
    case 'scan': {
      const reply = body as ReplyByOp['scan'];
      return { ...reply, items: keyedForFormat1(reply.items) };
    }
    case 'bucket': {
      const reply = body as ReplyByOp['bucket'];
      return { ...reply, items: keyedForFormat1(reply.items) };
    }
    case 'range': {
      const reply = body as ReplyByOp['range'];
      return { ...reply, items: keyedForFormat1(reply.items) };
    }
    default:
      return body;
  }
}
