import type { Consistency } from '../common/consistency';

/** The options of the client and of its calls, and what its data calls return. */

export interface ClientOptions {
  /** Base URL of the gateway, e.g. `http://127.0.0.1:3000`. A path prefix (ingress) is kept. */
  url: string;
  /** Sent as `X-Consistency` on every data call unless a call names its own; absent = server default (quorum). */
  consistency?: Consistency;
  /** Per request, covering connect, headers and body. Default 10 000 ms. */
  timeoutMs?: number;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /**
   * PEM certificate(s) of the CA(s) to trust for an https URL instead of the system's roots, e.g. a
   * private CA or the `ca.crt` of a cert-manager Secret. The host name is still checked. Ignored for
   * http URLs (one CA setting can then serve both a TLS gateway and a plain admin URL).
   */
  ca?: string | Buffer;
}

export interface RequestOptions {
  consistency?: Consistency;
  /** Sent as `X-Request-Id` so the request can be followed in the gateway's and nodes' logs. */
  requestId?: string;
  /** Aborts the request (in addition to the client's timeout). */
  signal?: AbortSignal;
}

export interface PutOptions extends RequestOptions {
  /** The record expires after this many whole seconds. */
  ttlSeconds?: number;
  /** Stored with the value and given back on reads (`Entry.contentType`). Default application/octet-stream. */
  contentType?: string;
}

export interface Entry {
  value: Buffer;
  /** Opaque; compare for equality only. */
  version: string;
  /** The Content-Type the value was written with (application/octet-stream when none was given). */
  contentType: string;
}

export interface WriteResult {
  key: string;
  version: string;
}

/** One operation of `batch()`: a value is bytes or text (its UTF-8 bytes). */
export type BatchOperation =
  | { readonly op: 'get'; readonly key: string }
  | {
      readonly op: 'put';
      readonly key: string;
      readonly value: string | Uint8Array;
      readonly ttlSeconds?: number;
      readonly contentType?: string;
    }
  | { readonly op: 'delete'; readonly key: string };

/** One operation's result, at its index: `status` 200 (done), 404 (a get of an absent key) or its error's. */
export interface BatchResult {
  status: number;
  key?: string;
  version?: string;
  /** a get's value */
  value?: Buffer;
  contentType?: string;
  error?: { code: string; message: string };
}

/** What `list()` and `listPage()` read: keys with `prefix`, or in [start, end) (byte order); all keys when neither. */
export interface ListOptions extends RequestOptions {
  prefix?: string;
  /** first key of the range (inclusive) */
  start?: string;
  /** end of the range (exclusive); absent: to the last key */
  end?: string;
  /** keys per request: 1 to 10 000, default 1000 */
  pageSize?: number;
  /** versions without values */
  keysOnly?: boolean;
  /** go on from where a page ended (`ListPage.cursor`) */
  cursor?: string;
}

/** One key of a listing; value and contentType unless keysOnly. */
export interface ListedEntry {
  key: string;
  /** the key's version, as getEntry() gives it */
  version: string;
  value?: Buffer;
  contentType?: string;
}

/** One page of a listing; `cursor` while it goes on. */
export interface ListPage {
  entries: ListedEntry[];
  cursor?: string;
}
