/**
 * TypeScript client for the kvstore gateway's public REST API (docs/design.md, "Public API").
 *
 * It is the npm package's entry point, so it depends on nothing but Node 20's
 * global fetch and the dependency-free contract in common/consistency.ts; only a
 * client given its own `ca` loads undici, whose Agent carries that trust.
 */

import { X509Certificate } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { CONSISTENCY_LEVELS, type Consistency } from '../common/consistency';

export { CONSISTENCY_LEVELS, type Consistency };

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
}

export interface Entry {
  value: Buffer;
  /** Opaque; compare for equality only. */
  version: string;
}

export interface WriteResult {
  key: string;
  version: string;
}

export interface ClusterNode {
  id: string;
  address: string;
  zone?: string;
  /** as the gateway last saw it; 'unknown' until it has talked to the node (one that just joined) */
  status: 'up' | 'down' | 'unknown';
  /** Number of partition replicas this node holds. */
  partitions: number;
}

export interface ClusterMove {
  partition: number;
  from: string;
  to: string;
}

/** The plan of a rebalance under way, as recorded in the partition map. */
export interface ClusterRebalance {
  /** node ids the cluster is moving to; nodes listed but not here are being drained */
  targetNodes: string[];
  /** moves in the plan when it was made */
  movesTotal: number;
  /** ms since the Unix epoch */
  startedAt: number;
}

/** The gateway's view of the partition map (`GET /v1/cluster`). */
export interface ClusterInfo {
  cluster: string;
  epoch: number;
  partitionCount: number;
  replicationFactor: number;
  nodes: ClusterNode[];
  /** partitions[p] lists the ids of the nodes holding partition p. */
  partitions: string[][];
  moves: ClusterMove[];
  /** present while a rebalance is under way */
  rebalance?: ClusterRebalance;
}

/** `streaming`: copying by range scan; `syncing`: reconciling with the source; `ready`: may be switched. */
export type IncomingMoveState = 'streaming' | 'syncing' | 'ready';

/** A move filling a partition on a node, as that node reports it. */
export interface IncomingMove {
  partition: number;
  from: string;
  state: IncomingMoveState;
  /** records and bytes copied so far */
  keys: number;
  bytes: number;
  /** the last failure talking to the source, while it lasts */
  error?: string;
}

/** One move of a rebalance; `waiting`: its receiving node has not reported it yet. */
export interface RebalanceMoveStatus {
  partition: number;
  from: string;
  to: string;
  state: IncomingMoveState | 'waiting';
  keys: number;
  bytes: number;
  error?: string;
}

/** Where a rebalance stands (`GET /v1/admin/rebalance` on the local launcher). */
export interface RebalanceStatus {
  epoch: number;
  /** a rebalance is under way */
  active: boolean;
  targetNodes: string[];
  /** nodes being emptied, to leave the cluster when the moves are done */
  drainingNodes: string[];
  movesTotal: number;
  movesDone: number;
  movesLeft: number;
  /** keys and bytes copied by the moves still in flight */
  keysInFlight: number;
  bytesInFlight: number;
  /** keys and bytes every node reports having streamed since it started */
  keysStreamed: number;
  bytesStreamed: number;
  /** ms since the Unix epoch */
  startedAt?: number;
  moves: RebalanceMoveStatus[];
}

/** `POST /v1/admin/scale`: the rebalance as planned, and the nodes started for it. */
export interface ScaleResult extends RebalanceStatus {
  addedNodes: string[];
}

/** One node's anti-entropy progress (`kvctl repair`). */
export interface RepairProgress {
  /** a pass is running (or queued) */
  running: boolean;
  partitionsTotal: number;
  partitionsDone: number;
  /** partitions of the pass not synced with every replica (one was unreachable) */
  partitionsFailed?: number;
  keysRepaired: number;
  /** ms since the epoch of the last full pass that synced every partition with every replica; 0: none yet */
  lastFullRepairAt: number;
  /** refilling an empty disk from its peers; reads are refused meanwhile */
  refilling?: boolean;
}

export interface NodeRepairReport {
  id: string;
  address: string;
  /** serves reads (false while refilling); set by repairStatus */
  ready?: boolean;
  /** records on the node's disk, tombstones included; set by repairStatus */
  keys?: number;
  /** bytes used by the node's data tree; set by repairStatus */
  bytes?: number;
  /** hints the node holds for other nodes; set by repairStatus */
  hints?: number;
  repair?: RepairProgress;
  /** moves filling partitions on the node (rebalancing); set by repairStatus */
  incoming?: IncomingMove[];
  /** records and bytes the node copied by moves since it started; set by repairStatus */
  streamedKeys?: number;
  streamedBytes?: number;
  /** the node could not be asked */
  error?: { code: string; message: string };
}

/** `POST` / `GET /v1/admin/repair`: every node of the map, each with its progress or its error. */
export interface RepairReport {
  epoch: number;
  /** the partitions asked for; absent: all */
  partitions?: number[];
  nodes: NodeRepairReport[];
}

/**
 * Every failure of the client. Branch on `code`:
 * - the gateway's own codes (`bad_request`, `unauthorized`, `forbidden`, `not_found`, `payload_too_large`,
 *   `rate_limited`, `unavailable`, `not_ready`, ...), with `status` set;
 * - `bad_request` with `status` undefined: refused locally, nothing was sent;
 * - `tls_verification_failed`: the server's certificate is not trusted (wrong or missing `ca`, a name it
 *   is not for, expired); nothing was sent. `tls_error`: the TLS handshake failed otherwise (e.g. an
 *   https URL for a plain http port);
 * - `unreachable`, `timeout`, `aborted`: the request got no answer (a write may or may not have been applied);
 * - `bad_response`: the server answered something that is not the gateway's API.
 */
export class KvClientError extends Error {
  readonly status: number | undefined;
  readonly code: string;
  readonly method: string | undefined;
  readonly url: string | undefined;
  /** The gateway's `X-Request-Id` for this request, to find it in the server logs. */
  readonly requestId: string | undefined;
  /** From `Retry-After` on 429/503: when it is worth trying again. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    code: string,
    message: string,
    details: {
      status?: number;
      method?: string;
      url?: string;
      requestId?: string;
      retryAfterSeconds?: number;
      cause?: unknown;
    } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'KvClientError';
    this.code = code;
    this.status = details.status;
    this.method = details.method;
    this.url = details.url;
    this.requestId = details.requestId;
    this.retryAfterSeconds = details.retryAfterSeconds;
  }
}

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
  502: 'unavailable',
  503: 'unavailable',
  504: 'timeout',
};

function localError(message: string): KvClientError {
  return new KvClientError('bad_request', message);
}

export function isConsistency(v: unknown): v is Consistency {
  return typeof v === 'string' && (CONSISTENCY_LEVELS as readonly string[]).includes(v);
}

function checkConsistency(v: unknown): Consistency | undefined {
  if (v === undefined) return undefined;
  if (!isConsistency(v)) {
    throw localError(`consistency must be one of ${CONSISTENCY_LEVELS.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * The URL path segment for a key. The whole key is one encoded segment, so `/` inside it survives.
 * `.` and `..` cannot be sent: every WHATWG URL parser (fetch included), and most proxies, resolve
 * them as dot segments before the gateway sees them, so they would address another route.
 */
export function encodeKey(key: unknown): string {
  if (typeof key !== 'string') throw localError(`key must be a string, got ${typeof key}`);
  if (key.length === 0) throw localError('key must not be empty');
  if (key === '.' || key === '..') {
    throw localError(`key ${JSON.stringify(key)} cannot be addressed in a URL path`);
  }
  try {
    return encodeURIComponent(key);
  } catch {
    // encodeURIComponent refuses lone UTF-16 surrogates: such a string has no UTF-8 form.
    throw localError('key is not valid Unicode (it contains a lone surrogate)');
  }
}

/** fetch throws a TypeError that looks like a network failure for a bad header; refuse those up front. */
function checkHeader(name: string, value: unknown): string {
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name))
    throw localError(`invalid header name ${JSON.stringify(name)}`);
  if (typeof value !== 'string' || !/^[\t\x20-\x7e\x80-\xff]*$/.test(value)) {
    throw localError(`invalid value for header ${name}: only printable Latin-1 characters are allowed`);
  }
  return value;
}

function checkPositiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw localError(`${name} must be a whole number >= 1, got ${String(v)}`);
  }
  return v;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The `ca` option as PEM bytes; every certificate in it must parse, so a wrong file fails here, not per request. */
function checkCa(v: unknown): Buffer | undefined {
  if (v === undefined) return undefined;
  let pem: string;
  if (typeof v === 'string') pem = v;
  else if (v instanceof Uint8Array) pem = Buffer.from(v).toString('utf8');
  else throw localError(`ca must be PEM text (a string or a Buffer), got ${typeof v}`);
  const blocks = pem.match(PEM_CERTIFICATE);
  if (!blocks) throw localError('ca is not a PEM certificate: no -----BEGIN CERTIFICATE----- block found');
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block);
    } catch (err) {
      const which = blocks.length > 1 ? ` (certificate ${i + 1} of ${blocks.length})` : '';
      throw localError(
        `ca holds a malformed certificate${which}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  });
  return Buffer.from(pem, 'utf8');
}

function toBody(value: unknown): Uint8Array {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return value;
  throw localError(`value must be a string or a Uint8Array, got ${typeof value}`);
}

/** Strong or weak ETag to its opaque value; undefined when it is not a quoted string. */
function parseEtag(raw: string | null): string | undefined {
  const m = raw === null ? null : /^(?:W\/)?"([^"]*)"$/.exec(raw.trim());
  return m ? m[1] : undefined;
}

function parseRetryAfter(raw: string | null): number | undefined {
  if (raw === null || !/^\d+$/.test(raw.trim())) return undefined;
  return Number(raw.trim());
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

interface Call {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  path: string;
  query?: Record<string, string>;
  body?: Uint8Array;
  /** of the body; application/octet-stream when absent */
  contentType?: string;
  opts?: RequestOptions;
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
    return { value: entry.value, version: entry.version };
  }

  /** Stores the value's bytes as sent and returns the version the write got. Never retried here. */
  async putEntry(key: string, value: string | Uint8Array, opts: PutOptions = {}): Promise<WriteResult> {
    const path = `/v1/kv/${encodeKey(key)}`;
    const body = toBody(value);
    const query: Record<string, string> = {};
    if (opts.ttlSeconds !== undefined) query.ttl = String(checkPositiveInt('ttlSeconds', opts.ttlSeconds));
    const answer = await this.send({ method: 'PUT', path, query, body, opts });
    return writeResult(this.json(answer), answer.ctx);
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
    });
    const json = this.json(answer);
    const status = parseRebalanceStatus(json, answer.ctx);
    const added = isRecord(json) ? json.addedNodes : undefined;
    if (!Array.isArray(added) || !added.every((id) => typeof id === 'string')) {
      throw new KvClientError(
        'bad_response',
        'unexpected response: scale result lacks addedNodes',
        answer.ctx,
      );
    }
    return { ...status, addedNodes: [...added] };
  }

  /** Where the rebalance stands, from the map owner (the local launcher's admin URL, as for scale). */
  async rebalanceStatus(opts: Pick<RequestOptions, 'requestId' | 'signal'> = {}): Promise<RebalanceStatus> {
    const answer = await this.send({ method: 'GET', path: '/v1/admin/rebalance', opts });
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
    } catch {
      // A probe answers "is it up?": no answer (unreachable, timeout) means no.
      return false;
    }
  }

  private async read(
    key: string,
    opts: RequestOptions = {},
  ): Promise<{ value: Buffer; version: string | undefined; ctx: Answer['ctx'] } | null> {
    const answer = await this.send({ method: 'GET', path: `/v1/kv/${encodeKey(key)}`, opts });
    // Only the gateway's own not_found means absent: a 404 page from a proxy or a wrong URL must not read as null.
    if (answer.res.status === 404 && errorBody(answer.body)?.code === 'not_found') return null;
    this.throwIfError(answer);
    return { value: answer.body, version: parseEtag(answer.res.headers.get('etag')), ctx: answer.ctx };
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

  private async send({ method, path, query, body, contentType, opts = {} }: Call): Promise<Answer> {
    const consistency = checkConsistency(opts.consistency) ?? this.consistency;
    const headers: Record<string, string> = { ...this.headers };
    if (consistency !== undefined && path.startsWith('/v1/kv/')) headers['x-consistency'] = consistency;
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
    return { res, body: bytes, ctx: { ...ctx, status: res.status, requestId } };
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

/** OpenSSL's and Node's codes for a peer certificate that does not verify. */
const TLS_VERIFY_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const TLS_UNTRUSTED_HINT =
  "the server's certificate is not signed by a trusted CA: give the CA that signed it as the client's ca (kvctl: --ca FILE)";
const TLS_NAME_HINT =
  'the certificate is not for this host: use a URL with a host name or IP address it lists';
const TLS_DATES_HINT =
  "the certificate is outside its validity period: renew it, or check this machine's clock";
const TLS_VERIFY_HINTS: Readonly<Record<string, string>> = {
  ERR_TLS_CERT_ALTNAME_INVALID: TLS_NAME_HINT,
  HOSTNAME_MISMATCH: TLS_NAME_HINT,
  CERT_HAS_EXPIRED: TLS_DATES_HINT,
  CERT_NOT_YET_VALID: TLS_DATES_HINT,
};

/** A TLS failure as a KvClientError, or undefined when `inner` is not one. */
function tlsError(
  inner: unknown,
  cause: unknown,
  ctx: { method: string; url: string },
): KvClientError | undefined {
  if (!isErrorLike(inner)) return undefined;
  const code = typeof inner.code === 'string' ? inner.code : '';
  if (TLS_VERIFY_CODES.has(code)) {
    return new KvClientError(
      'tls_verification_failed',
      `TLS verification failed for ${ctx.url}: ${inner.message} (${code}); ${TLS_VERIFY_HINTS[code] ?? TLS_UNTRUSTED_HINT}`,
      { ...ctx, cause },
    );
  }
  if (code.startsWith('ERR_SSL_') || code === 'EPROTO' || code.startsWith('ERR_TLS_')) {
    return new KvClientError(
      'tls_error',
      `TLS handshake with ${ctx.url} failed: ${inner.message} (${code}); does the server speak https on that port?`,
      { ...ctx, cause },
    );
  }
  return undefined;
}

/**
 * An Error from any realm: errors raised inside Node (sockets, TLS) fail `instanceof Error` where the
 * caller's globals are another context's (a vm, jest), so their shape is what is checked.
 */
function isErrorLike(v: unknown): v is { name: string; message: string; code?: unknown; cause?: unknown } {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { message?: unknown }).message === 'string' &&
    typeof (v as { name?: unknown }).name === 'string'
  );
}

function transportError(
  cause: unknown,
  timeout: AbortSignal,
  timeoutMs: number,
  ctx: { method: string; url: string },
): KvClientError {
  const name = isErrorLike(cause) ? cause.name : '';
  if (name === 'TimeoutError' || (name === 'AbortError' && timeout.aborted)) {
    return new KvClientError('timeout', `${ctx.method} ${ctx.url}: no answer within ${timeoutMs} ms`, {
      ...ctx,
      cause,
    });
  }
  if (name === 'AbortError')
    return new KvClientError('aborted', `${ctx.method} ${ctx.url}: aborted`, { ...ctx, cause });
  // fetch reports every connection-level failure as TypeError('fetch failed') with the system error as cause.
  const inner = isErrorLike(cause) ? cause.cause : undefined;
  const tls = tlsError(inner, cause, ctx);
  if (tls) return tls;
  const detail = isErrorLike(inner)
    ? typeof inner.code === 'string'
      ? inner.code
      : inner.message
    : isErrorLike(cause)
      ? cause.message
      : String(cause);
  return new KvClientError('unreachable', `cannot reach ${ctx.url}: ${detail}`, { ...ctx, cause });
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

type ErrorContext = ConstructorParameters<typeof KvClientError>[2];

function writeResult(body: unknown, ctx: ErrorContext): WriteResult {
  if (!isRecord(body) || typeof body.key !== 'string' || typeof body.version !== 'string') {
    throw new KvClientError(
      'bad_response',
      'unexpected response: expected { "key": string, "version": string }',
      ctx,
    );
  }
  return { key: body.key, version: body.version };
}

/** Checks the shape, so a wrong URL (another service answering JSON) fails here rather than in a caller. */
export function parseClusterInfo(body: unknown, ctx?: ErrorContext): ClusterInfo {
  const badResponse = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected response: ${what}`, ctx);
  const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const isStr = (v: unknown): v is string => typeof v === 'string';
  if (!isRecord(body)) throw badResponse('cluster info is not an object');
  const { cluster, epoch, partitionCount, replicationFactor, nodes, partitions, moves, rebalance } = body;
  if (!isStr(cluster) || !isInt(epoch) || !isInt(partitionCount) || !isInt(replicationFactor)) {
    throw badResponse('cluster info lacks cluster, epoch, partitionCount or replicationFactor');
  }
  if (!Array.isArray(nodes) || !Array.isArray(partitions) || !Array.isArray(moves ?? [])) {
    throw badResponse('cluster info lacks nodes or partitions');
  }
  const cleanNodes = nodes.map((n: unknown): ClusterNode => {
    if (!isRecord(n) || !isStr(n.id) || !isStr(n.address) || !isInt(n.partitions)) {
      throw badResponse('malformed node in cluster info');
    }
    if (n.status !== 'up' && n.status !== 'down' && n.status !== 'unknown')
      throw badResponse(`node ${n.id} has status ${String(n.status)}`);
    const node: ClusterNode = { id: n.id, address: n.address, status: n.status, partitions: n.partitions };
    if (isStr(n.zone)) node.zone = n.zone;
    return node;
  });
  const cleanPartitions = partitions.map((owners: unknown): string[] => {
    if (!Array.isArray(owners) || !owners.every(isStr))
      throw badResponse('malformed partition in cluster info');
    return [...owners];
  });
  const cleanMoves = ((moves ?? []) as unknown[]).map((m: unknown): ClusterMove => {
    if (!isRecord(m) || !isInt(m.partition) || !isStr(m.from) || !isStr(m.to)) {
      throw badResponse('malformed move in cluster info');
    }
    return { partition: m.partition, from: m.from, to: m.to };
  });
  const info: ClusterInfo = {
    cluster,
    epoch,
    partitionCount,
    replicationFactor,
    nodes: cleanNodes,
    partitions: cleanPartitions,
    moves: cleanMoves,
  };
  // null or absent: no rebalance (gateways older than the field send none).
  if (rebalance !== undefined && rebalance !== null) {
    if (
      !isRecord(rebalance) ||
      !Array.isArray(rebalance.targetNodes) ||
      !rebalance.targetNodes.every(isStr) ||
      !isInt(rebalance.movesTotal) ||
      !isInt(rebalance.startedAt)
    ) {
      throw badResponse('malformed rebalance in cluster info');
    }
    info.rebalance = {
      targetNodes: [...rebalance.targetNodes],
      movesTotal: rebalance.movesTotal,
      startedAt: rebalance.startedAt,
    };
  }
  return info;
}

const MOVE_STATES: readonly string[] = ['streaming', 'syncing', 'ready'];

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** A node's incoming moves; undefined when malformed. */
function parseIncoming(v: unknown): IncomingMove[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: IncomingMove[] = [];
  for (const m of v) {
    if (
      !isRecord(m) ||
      !isCount(m.partition) ||
      typeof m.from !== 'string' ||
      typeof m.state !== 'string' ||
      !MOVE_STATES.includes(m.state) ||
      !isCount(m.keys) ||
      !isCount(m.bytes)
    ) {
      return undefined;
    }
    const move: IncomingMove = {
      partition: m.partition,
      from: m.from,
      state: m.state as IncomingMoveState,
      keys: m.keys,
      bytes: m.bytes,
    };
    if (typeof m.error === 'string') move.error = m.error;
    out.push(move);
  }
  return out;
}

/** Checks the shape of a rebalance status, so a wrong URL (the gateway's, say) fails here. */
export function parseRebalanceStatus(body: unknown, ctx?: ErrorContext): RebalanceStatus {
  const bad = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected response: ${what}`, ctx);
  const ids = (v: unknown): v is string[] => Array.isArray(v) && v.every((id) => typeof id === 'string');
  if (
    !isRecord(body) ||
    typeof body.active !== 'boolean' ||
    !ids(body.targetNodes) ||
    !ids(body.drainingNodes) ||
    !Array.isArray(body.moves)
  ) {
    throw bad('not a rebalance status (is the URL the launcher admin URL, port + 100?)');
  }
  const counts = [
    'epoch',
    'movesTotal',
    'movesDone',
    'movesLeft',
    'keysInFlight',
    'bytesInFlight',
    'keysStreamed',
    'bytesStreamed',
  ] as const;
  const n: Record<(typeof counts)[number], number> = {
    epoch: 0,
    movesTotal: 0,
    movesDone: 0,
    movesLeft: 0,
    keysInFlight: 0,
    bytesInFlight: 0,
    keysStreamed: 0,
    bytesStreamed: 0,
  };
  for (const k of counts) {
    const v = body[k];
    if (!isCount(v)) throw bad(`rebalance status lacks ${k}`);
    n[k] = v;
  }
  const moves = body.moves.map((m: unknown): RebalanceMoveStatus => {
    if (
      !isRecord(m) ||
      !isCount(m.partition) ||
      typeof m.from !== 'string' ||
      typeof m.to !== 'string' ||
      typeof m.state !== 'string' ||
      !(m.state === 'waiting' || MOVE_STATES.includes(m.state)) ||
      !isCount(m.keys) ||
      !isCount(m.bytes)
    ) {
      throw bad('malformed move in rebalance status');
    }
    const move: RebalanceMoveStatus = {
      partition: m.partition,
      from: m.from,
      to: m.to,
      state: m.state as RebalanceMoveStatus['state'],
      keys: m.keys,
      bytes: m.bytes,
    };
    if (typeof m.error === 'string') move.error = m.error;
    return move;
  });
  const status: RebalanceStatus = {
    ...n,
    active: body.active,
    targetNodes: [...body.targetNodes],
    drainingNodes: [...body.drainingNodes],
    moves,
  };
  if (isCount(body.startedAt)) status.startedAt = body.startedAt;
  return status;
}

/** Checks the shape of a repair report, so a wrong URL fails here rather than in a caller. */
export function parseRepairReport(body: unknown, ctx?: ErrorContext): RepairReport {
  const bad = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected response: ${what}`, ctx);
  const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
  if (!isRecord(body) || !isNum(body.epoch) || !Array.isArray(body.nodes)) {
    throw bad('repair report lacks epoch or nodes');
  }
  const nodes = body.nodes.map((n: unknown): NodeRepairReport => {
    if (!isRecord(n) || typeof n.id !== 'string' || typeof n.address !== 'string') {
      throw bad('malformed node in repair report');
    }
    const node: NodeRepairReport = { id: n.id, address: n.address };
    if (typeof n.ready === 'boolean') node.ready = n.ready;
    if (isNum(n.keys)) node.keys = n.keys;
    if (isNum(n.bytes)) node.bytes = n.bytes;
    if (isNum(n.hints)) node.hints = n.hints;
    if (n.incoming !== undefined) {
      const incoming = parseIncoming(n.incoming);
      if (!incoming) throw bad(`malformed incoming moves of node ${n.id}`);
      node.incoming = incoming;
    }
    if (isCount(n.streamedKeys)) node.streamedKeys = n.streamedKeys;
    if (isCount(n.streamedBytes)) node.streamedBytes = n.streamedBytes;
    if (isRecord(n.error) && typeof n.error.code === 'string' && typeof n.error.message === 'string') {
      node.error = { code: n.error.code, message: n.error.message };
    }
    const r = n.repair;
    if (r !== undefined) {
      if (
        !isRecord(r) ||
        typeof r.running !== 'boolean' ||
        !isNum(r.partitionsTotal) ||
        !isNum(r.partitionsDone) ||
        !isNum(r.keysRepaired) ||
        !isNum(r.lastFullRepairAt)
      ) {
        throw bad(`malformed repair status of node ${n.id}`);
      }
      const progress: RepairProgress = {
        running: r.running,
        partitionsTotal: r.partitionsTotal,
        partitionsDone: r.partitionsDone,
        keysRepaired: r.keysRepaired,
        lastFullRepairAt: r.lastFullRepairAt,
      };
      if (isNum(r.partitionsFailed)) progress.partitionsFailed = r.partitionsFailed;
      if (typeof r.refilling === 'boolean') progress.refilling = r.refilling;
      node.repair = progress;
    }
    return node;
  });
  const report: RepairReport = { epoch: body.epoch, nodes };
  if (Array.isArray(body.partitions) && body.partitions.every(isNum))
    report.partitions = [...body.partitions];
  return report;
}
