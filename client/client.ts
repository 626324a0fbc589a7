/**
 * TypeScript client for the kvstore gateway's public REST API (docs/design.md, "Public API").
 *
 * The npm package's entry point (index.ts) exports it, so it depends on nothing but Node 20's
 * global fetch and the dependency-free contract in common/consistency.ts; only a
 * client given its own `ca` loads undici, whose Agent carries that trust.
 */

import type { Dispatcher } from 'undici';
import type { Consistency } from '../common/consistency';
import { IDENTITY_HEADER, type Component } from '../common/version';
import type { ClusterInfo, RebalanceStatus, RepairReport, ScaleResult } from '../common/rest-api';
import { KvClientError, localError } from './client-error';
import { checkCa, checkConsistency, checkHeader, checkPositiveInt, encodeKey, toBody } from './input-checks';
import {
  isRecord,
  parseClusterInfo,
  parseRebalanceStatus,
  parseRepairReport,
  parseBatchReply,
  parseListReply,
  parseScaleResult,
  writeResult,
} from './reply-parsers';
import { checkIdentity } from './server-identity';
import { transportError } from './transport-errors';
import type {
  BatchOperation,
  BatchResult,
  ClientOptions,
  Entry,
  ListedEntry,
  ListOptions,
  ListPage,
  PutOptions,
  RequestOptions,
  WriteResult,
} from './types';

const DEFAULT_TIMEOUT_MS = 10_000;
/** Fallback codes when an error body is not the gateway's JSON (a proxy, a load balancer). */
const CODE_BY_STATUS: Readonly<Record<number, string>> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
  501: 'not_implemented',
  502: 'unavailable',
  503: 'unavailable',
  504: 'timeout',
};

/** Strong or weak ETag to its opaque value; undefined when it is not a quoted string. */
function parseEtag(raw: string | null): string | undefined {
  const m = raw === null ? null : /^(?:W\/)?"([^"]*)"$/.exec(raw.trim());
  return m ? m[1] : undefined;
}

function parseRetryAfter(raw: string | null): number | undefined {
  if (raw === null || !/^\d+$/.test(raw.trim())) return undefined;
  return Number(raw.trim());
}

interface Call {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  path: string;
  query?: Record<string, string>;
  body?: Uint8Array;
  /** of the body; application/octet-stream when absent */
  contentType?: string;
  opts?: RequestOptions;
  /** the kvstore component that serves this route: the gateway, or the launcher for scale and rebalance */
  server?: Component;
}

/** What the client reads of a response, from the global fetch or undici's (their classes differ). */
interface HttpResponse {
  readonly ok: boolean;
  readonly status: number;
  readonly statusText: string;
  readonly headers: { get(name: string): string | null };
  arrayBuffer(): Promise<ArrayBuffer>;
}

type FetchInit = {
  method: string;
  headers: Record<string, string>;
  body: Uint8Array | undefined;
  signal: AbortSignal;
};

/** undici's fetch bound to an Agent that trusts the client's `ca`. */
interface TlsTransport {
  readonly dispatcher: Dispatcher & { close(): Promise<void> };
  fetch(url: string, init: FetchInit): Promise<HttpResponse>;
}

interface Answer {
  res: HttpResponse;
  body: Buffer;
  ctx: { method: string; url: string; status: number; requestId: string | undefined };
}

export class KeyValueStoreClient {
  readonly url: string;
  private readonly base: URL;
  /** The base URL's path without its trailing slash ('' for the root), prepended to every route. */
  private readonly prefix: string;
  private readonly consistency: Consistency | undefined;
  private readonly timeoutMs: number;
  private readonly headers: Readonly<Record<string, string>>;
  private readonly ca: Buffer | undefined;
  /** created on the first https request, only when `ca` is given */
  private tls: Promise<TlsTransport> | undefined;

  constructor(urlOrOptions: string | ClientOptions) {
    const opts: ClientOptions = typeof urlOrOptions === 'string' ? { url: urlOrOptions } : urlOrOptions;
    if (!isRecord(opts) || typeof opts.url !== 'string') throw localError('url must be a string');
    let base: URL;
    try {
      base = new URL(opts.url);
    } catch {
      throw localError(`invalid url ${JSON.stringify(opts.url)}`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw localError(`url must be http: or https:, got ${JSON.stringify(opts.url)}`);
    }
    if (base.search || base.hash) throw localError(`url must not have a query or fragment: ${opts.url}`);
    // fetch refuses URLs with credentials; the token option is the way to authenticate.
    if (base.username || base.password)
      throw localError('url must not contain a user name or password; use token');
    // Routes are appended to the base path, so `http://h/kv/` and `http://h/kv` mean the same.
    this.prefix = base.pathname.replace(/\/+$/, '');
    this.base = base;
    this.url = `${base.origin}${this.prefix}`;
    this.consistency = checkConsistency(opts.consistency);
    this.timeoutMs =
      opts.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : checkPositiveInt('timeoutMs', opts.timeoutMs);

    const headers: Record<string, string> = {};
    // Lower-cased so the client's own headers (token, consistency) replace a caller's, not join them.
    for (const [name, value] of Object.entries(opts.headers ?? {})) {
      headers[name.toLowerCase()] = checkHeader(name, value);
    }
    if (opts.token !== undefined) {
      if (typeof opts.token !== 'string' || opts.token === '')
        throw localError('token must be a non-empty string');
      headers['authorization'] = `Bearer ${checkHeader('authorization', opts.token)}`;
    }
    this.headers = headers;
    this.ca = checkCa(opts.ca);
  }

  /** Closes the connections kept for the `ca` (idle ones never hold the process open); the client stays usable. */
  async close(): Promise<void> {
    const tls = this.tls;
    this.tls = undefined;
    if (tls) await (await tls).dispatcher.close();
  }

  /** The value as UTF-8 text, or null when the key is absent (the original design's call). */
  async get(key: string, opts?: RequestOptions): Promise<string | null> {
    const entry = await this.read(key, opts);
    return entry === null ? null : entry.value.toString('utf8');
  }

  /** Stores a value (the original design's call). A string is stored as its UTF-8 bytes. */
  async put(key: string, value: string | Uint8Array, opts?: PutOptions): Promise<void> {
    await this.putEntry(key, value, opts);
  }

  /** Deletes a key; deleting an absent key is not an error (the original design's call). */
  async delete(key: string, opts?: RequestOptions): Promise<void> {
    await this.deleteEntry(key, opts);
  }

  /** The value's bytes, or null when the key is absent. */
  async getBytes(key: string, opts?: RequestOptions): Promise<Buffer | null> {
    const entry = await this.read(key, opts);
    return entry === null ? null : entry.value;
  }

  /** The value's bytes and version, or null when the key is absent. */
  async getEntry(key: string, opts?: RequestOptions): Promise<Entry | null> {
    const entry = await this.read(key, opts);
    if (entry === null) return null;
    if (entry.version === undefined) {
      throw new KvClientError('bad_response', 'the response has no ETag carrying the version', entry.ctx);
    }
    return { value: entry.value, version: entry.version, contentType: entry.contentType };
  }

  /**
   * Stores the value's bytes as sent, with `contentType` (default application/octet-stream) kept
   * beside them, and returns the version the write got. Never retried here.
   */
  async putEntry(key: string, value: string | Uint8Array, opts: PutOptions = {}): Promise<WriteResult> {
    const path = `/v1/kv/${encodeKey(key)}`;
    const body = toBody(value);
    const query: Record<string, string> = {};
    if (opts.ttlSeconds !== undefined) query.ttl = String(checkPositiveInt('ttlSeconds', opts.ttlSeconds));
    const contentType =
      opts.contentType === undefined ? undefined : checkHeader('content-type', opts.contentType);
    const answer = await this.send({ method: 'PUT', path, query, body, contentType, opts });
    return writeResult(this.json(answer), answer.ctx);
  }

  /**
   * Many operations in one request (POST /v1/batch, at most 1000): not atomic, each answered on its
   * own, in order (`status` 200, 404 for a get of an absent key, or the operation's error). Throws
   * only when the batch as a whole is refused (malformed, too large, rate limited, unauthorised).
   */
  async batch(operations: readonly BatchOperation[], opts: RequestOptions = {}): Promise<BatchResult[]> {
    const wire = operations.map((o) => {
      if (o.op !== 'put') return { op: o.op, key: o.key };
      return {
        op: 'put',
        key: o.key,
        value: Buffer.from(toBody(o.value)).toString('base64'),
        ...(o.ttlSeconds === undefined ? {} : { ttl: checkPositiveInt('ttlSeconds', o.ttlSeconds) }),
        ...(o.contentType === undefined ? {} : { contentType: o.contentType }),
      };
    });
    const body = Buffer.from(JSON.stringify({ operations: wire }), 'utf8');
    const answer = await this.send({
      method: 'POST',
      path: '/v1/batch',
      body,
      contentType: 'application/json',
      opts,
    });
    return parseBatchReply(this.json(answer), operations.length, answer.ctx);
  }

  /**
   * Every key of a listing (`prefix`, or [start, end) in byte order), in key order, fetched a page
   * at a time as the iteration goes (`pageSize` keys per request). Not a snapshot: a key unchanged
   * throughout is listed exactly once; one written or deleted meanwhile may or may not be, never twice.
   */
  async *list(opts: ListOptions = {}): AsyncGenerator<ListedEntry, void, undefined> {
    let cursor = opts.cursor;
    for (;;) {
      const page = await this.listPage({ ...opts, ...(cursor === undefined ? {} : { cursor }) });
      yield* page.entries;
      if (page.cursor === undefined) return;
      cursor = page.cursor;
    }
  }

  /** One page of a listing (GET /v1/kv); pass its `cursor` back for the next. */
  async listPage(opts: ListOptions = {}): Promise<ListPage> {
    const query: Record<string, string> = {};
    for (const name of ['prefix', 'start', 'end', 'cursor'] as const) {
      const v = opts[name];
      if (v !== undefined) {
        if (typeof v !== 'string') throw localError(`${name} must be a string`);
        query[name] = v;
      }
    }
    if (opts.pageSize !== undefined) query.limit = String(checkPositiveInt('pageSize', opts.pageSize));
    if (opts.keysOnly) query.keys_only = 'true';
    const answer = await this.send({ method: 'GET', path: '/v1/kv', query, opts });
    return parseListReply(this.json(answer), answer.ctx);
  }

  /** Writes a tombstone and returns its version; an absent key is not an error. */
  async deleteEntry(key: string, opts: RequestOptions = {}): Promise<WriteResult> {
    const answer = await this.send({ method: 'DELETE', path: `/v1/kv/${encodeKey(key)}`, opts });
    return writeResult(this.json(answer), answer.ctx);
  }

  /** The gateway's partition map: epoch, nodes and their status, partitions, moves in progress. */
  async cluster(opts: Pick<RequestOptions, 'requestId' | 'signal'> = {}): Promise<ClusterInfo> {
    const answer = await this.send({ method: 'GET', path: '/v1/cluster', opts });
    return parseClusterInfo(this.json(answer), answer.ctx);
  }

  /** Starts an anti-entropy pass on every node, over all partitions or the given ones. */
  async startRepair(
    opts: { partitions?: readonly number[] } & Pick<RequestOptions, 'requestId' | 'signal'> = {},
  ): Promise<RepairReport> {
    const query: Record<string, string> = {};
    if (opts.partitions !== undefined) {
      if (opts.partitions.length === 0 || !opts.partitions.every((p) => Number.isInteger(p) && p >= 0)) {
        throw localError('partitions must be a non-empty list of partition numbers');
      }
      query.partition = opts.partitions.join(',');
    }
    const answer = await this.send({ method: 'POST', path: '/v1/admin/repair', query, opts });
    return parseRepairReport(this.json(answer), answer.ctx);
  }

  /** Each node's repair progress, readiness and record count. */
  async repairStatus(opts: Pick<RequestOptions, 'requestId' | 'signal'> = {}): Promise<RepairReport> {
    const answer = await this.send({ method: 'GET', path: '/v1/admin/repair', opts });
    return parseRepairReport(this.json(answer), answer.ctx);
  }

  /**
   * Asks the map owner to grow or shrink the cluster to `nodes` storage nodes. Sent to the
   * local launcher's admin listener (`npm start`: port + 100), not to a gateway: create
   * this client with that URL.
   */
  async scale(nodes: number, opts: Pick<RequestOptions, 'requestId' | 'signal'> = {}): Promise<ScaleResult> {
    const body = Buffer.from(JSON.stringify({ nodes: checkPositiveInt('nodes', nodes) }));
    const answer = await this.send({
      method: 'POST',
      path: '/v1/admin/scale',
      body,
      contentType: 'application/json',
      opts,
      server: 'launcher',
    });
    return parseScaleResult(this.json(answer), answer.ctx);
  }

  /** Where the rebalance stands, from the map owner (the local launcher's admin URL, as for scale). */
  async rebalanceStatus(opts: Pick<RequestOptions, 'requestId' | 'signal'> = {}): Promise<RebalanceStatus> {
    const answer = await this.send({ method: 'GET', path: '/v1/admin/rebalance', opts, server: 'launcher' });
    return parseRebalanceStatus(this.json(answer), answer.ctx);
  }

  /** True when the gateway process answers `GET /healthz`; false when it fails or cannot be reached. */
  async health(): Promise<boolean> {
    return this.probe('/healthz');
  }

  /** True when the gateway can serve requests (it has a partition map): `GET /readyz`. */
  async ready(): Promise<boolean> {
    return this.probe('/readyz');
  }

  private async probe(path: string): Promise<boolean> {
    try {
      const { res } = await this.send({ method: 'GET', path });
      return res.ok;
    } catch (err) {
      // A probe answers "is it up?": no answer (unreachable, timeout) means no. Something that is
      // not a kvstore gateway is a wrong address, not a gateway that is down: that is thrown.
      if (err instanceof KvClientError && err.code === 'not_kvstore') throw err;
      return false;
    }
  }

  private async read(
    key: string,
    opts: RequestOptions = {},
  ): Promise<{
    value: Buffer;
    version: string | undefined;
    contentType: string;
    ctx: Answer['ctx'];
  } | null> {
    const answer = await this.send({ method: 'GET', path: `/v1/kv/${encodeKey(key)}`, opts });
    // Only the gateway's own not_found means absent: a 404 page from a proxy or a wrong URL must not read as null.
    if (answer.res.status === 404 && errorBody(answer.body)?.code === 'not_found') return null;
    this.throwIfError(answer);
    return {
      value: answer.body,
      version: parseEtag(answer.res.headers.get('etag')),
      contentType: answer.res.headers.get('content-type') ?? 'application/octet-stream',
      ctx: answer.ctx,
    };
  }

  /** Throws the server's error for a non-2xx answer. */
  private throwIfError({ res, body, ctx }: Answer): void {
    if (res.ok) return;
    const err = errorBody(body);
    const text = body.toString('utf8').replace(/\s+/g, ' ').trim().slice(0, 200);
    // Not the gateway's error shape (a proxy, a wrong URL): say where the answer came from.
    const message =
      err?.message ??
      `${ctx.method} ${ctx.url}: HTTP ${res.status} ${res.statusText}${text ? `: ${text}` : ''}`;
    const code =
      err?.code ?? CODE_BY_STATUS[res.status] ?? (res.status >= 500 ? 'server_error' : 'http_error');
    throw new KvClientError(code, message, {
      ...ctx,
      retryAfterSeconds: parseRetryAfter(res.headers.get('retry-after')),
    });
  }

  /** The JSON body of a 2xx answer. */
  private json(answer: Answer): unknown {
    this.throwIfError(answer);
    try {
      return JSON.parse(answer.body.toString('utf8')) as unknown;
    } catch (cause) {
      throw new KvClientError('bad_response', 'the response body is not JSON', { ...answer.ctx, cause });
    }
  }

  private async send({
    method,
    path,
    query,
    body,
    contentType,
    opts = {},
    server = 'gateway',
  }: Call): Promise<Answer> {
    const consistency = checkConsistency(opts.consistency) ?? this.consistency;
    const headers: Record<string, string> = { ...this.headers };
    if (consistency !== undefined && (path.startsWith('/v1/kv/') || path === '/v1/batch'))
      headers['x-consistency'] = consistency;
    if (opts.requestId !== undefined) headers['x-request-id'] = checkHeader('x-request-id', opts.requestId);
    if (body !== undefined) headers['content-type'] = contentType ?? 'application/octet-stream';

    const url = new URL(this.base.href);
    // The key is already encoded; assigning pathname would not re-encode '%', so it arrives as sent.
    url.pathname = this.prefix + path;
    for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, v);
    const href = url.href;

    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;
    const ctx = { method, url: href };
    let res: HttpResponse;
    let bytes: Buffer;
    try {
      const init = { method, headers, body, signal };
      res =
        this.ca !== undefined && url.protocol === 'https:'
          ? await (await this.tlsTransport(this.ca)).fetch(href, init)
          : await fetch(href, init);
      // The timeout covers the body too: a server that stalls mid-value is as dead as one that never answers.
      bytes = Buffer.from(await res.arrayBuffer());
    } catch (cause) {
      throw transportError(cause, timeout, this.timeoutMs, ctx);
    }
    const requestId = res.headers.get('x-request-id') ?? opts.requestId;
    const answered = { ...ctx, status: res.status, requestId };
    checkIdentity(res.headers.get(IDENTITY_HEADER), server, answered);
    return { res, body: bytes, ctx: answered };
  }

  /**
   * undici's own fetch with its own Agent: Node 20's global fetch bundles another undici version,
   * whose fetch cannot be handed this package's dispatcher.
   */
  private tlsTransport(ca: Buffer): Promise<TlsTransport> {
    this.tls ??= import('undici').then(({ Agent, fetch: undiciFetch }) => {
      const dispatcher = new Agent({ connect: { ca } });
      return {
        dispatcher,
        fetch: (url: string, init: FetchInit) => undiciFetch(url, { ...init, dispatcher }),
      };
    });
    return this.tls;
  }
}

function errorBody(body: Buffer): { code: string; message: string } | undefined {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    const err = isRecord(parsed) ? parsed.error : undefined;
    if (isRecord(err) && typeof err.code === 'string' && typeof err.message === 'string') {
      return { code: err.code, message: err.message };
    }
  } catch {
    // Not JSON: the caller falls back to the status and the raw text.
  }
  return undefined;
}
