import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseQuery } from 'node:querystring';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Consistency } from '../common/consistency';
import { formatVersion, type Version } from '../common/hlc';
import type { Logger } from '../common/logger';
import type { PeerPool } from '../common/peer-pool';
import { parsePartitionsParam, repairStatus, startRepair } from './admin-repair';
import { ApiError } from './api-error';
import { requiredAccess, type ApiKeySet, type Principal } from '../common/api-keys';
import { createAuthoriser, WWW_AUTHENTICATE, type Authoriser } from './authoriser';
import { connectionCap } from './connection-cap';
import type { Coordinator, MapSource } from './coordinator';
import type { ConsistencyLabel, GatewayMetrics } from './metrics';
import { retryAfterHeader } from './rate-limit';
import {
  acceptRequestId,
  keyFromKvPath,
  parseConsistency,
  parseKey,
  parseTtl,
  type InputLimits,
} from './request-input';
import { flatSecurityHeaders, securityHeaders } from './security-headers';

export interface GatewayDeps {
  readonly coordinator: Coordinator;
  readonly maps: MapSource;
  readonly pool: PeerPool;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  readonly limits: InputLimits;
  /**
   * The API keys in force (`keys()` is read per request, so a reloaded file applies at once), or
   * `off` (--no-auth): every request is accepted, as an admin without a key id.
   */
  readonly auth: { keys(): ApiKeySet } | 'off';
  /** Requests one connection may have in flight; pipelined ones beyond it get 429 and the connection closes. */
  readonly maxRequestsPerConnection?: number;
  /**
   * The rate limiter's seam: called for every request that needs a key, once its key id is known (undefined
   * when the token is missing or unknown) and before a 401/403 is answered, so floods of bad tokens are limited
   * by address. Throwing ApiError(429, 'rate_limited', message, { retryAfterMs }) refuses the request with that
   * Retry-After; nothing else has happened yet (no body read, no replica asked).
   */
  readonly admission?: (address: string, keyId: string | undefined) => Promise<void>;
  /** True once the gateway is shutting down: /readyz answers 503 so load balancers stop sending it requests. */
  readonly draining?: () => boolean;
}

const KV_PREFIX = '/v1/kv/';

interface Locals {
  rid: string;
  op: string;
  /** the latency histogram's label: the level once the route parsed X-Consistency, `none` until then */
  consistency: ConsistencyLabel;
  /** set by the auth middleware before any route runs */
  principal: Principal;
}

function locals(res: Response): Locals {
  return res.locals as Locals;
}

/** The request's consistency level (400 when X-Consistency is invalid), recorded for the latency label. */
function requestConsistency(req: Request, res: Response): Consistency {
  const consistency = parseConsistency(req.headers['x-consistency']);
  locals(res).consistency = consistency;
  return consistency;
}

/** The public REST API (docs/design.md, "Public API"). Every error is JSON `{ error: { code, message } }`. */
export function createGatewayApp(deps: GatewayDeps): express.Express {
  const { coordinator, maps, pool, metrics, log, limits } = deps;
  const authz = createAuthoriser(deps);
  /** 403 unless the request's key may touch `key` (its prefix); call right after the key is parsed. */
  const mayTouch = (req: Request, res: Response, key: Buffer): void =>
    authz.checkKey(locals(res).principal, key, req, locals(res).rid);
  const app = express();
  app.disable('x-powered-by');
  // Values are opaque bytes; an ETag computed over them would cost a hash per read. Ours is the version.
  app.set('etag', false);

  app.use((req, res, next) => {
    const rid = acceptRequestId(req.headers['x-request-id'], randomUUID);
    res.locals.rid = rid;
    res.locals.op = 'other';
    res.locals.consistency = 'none';
    res.setHeader('X-Request-Id', rid);
    const stop = metrics.httpDuration.startTimer();
    res.on('finish', () => {
      const { op, consistency } = locals(res);
      metrics.httpRequests.inc({ op, method: req.method, status: String(res.statusCode) });
      stop({
        op,
        outcome: res.statusCode < 400 ? 'ok' : res.statusCode < 500 ? 'client_error' : 'server_error',
        consistency,
      });
      if (res.statusCode >= 500)
        log.warn({ rid, method: req.method, op, status: res.statusCode }, 'request failed');
      else log.debug({ rid, method: req.method, op, status: res.statusCode }, 'request');
    });
    next();
  });

  // Before any route and any body parser: a refused request reads no body and reaches no replica.
  app.use(async (req, res, next) => {
    // req.path: the pathname the router matches, whatever form the request target took.
    const access = requiredAccess(req.method, req.path);
    if (access !== 'open') locals(res).principal = await authz.check(req, access, locals(res).rid);
    next();
  });

  const rawBody = express.raw({ type: () => true, limit: limits.maxValueBytes });
  // JSON strings escape some bytes, so the legacy body may be somewhat larger than the value it carries.
  const jsonBody = express.json({
    limit: limits.maxValueBytes * 2 + limits.maxKeyBytes * 2 + 1024,
    strict: true,
  });

  app.get('/healthz', (_req, res) => {
    locals(res).op = 'health';
    res.json({ status: 'ok' });
  });

  app.get('/readyz', (_req, res) => {
    locals(res).op = 'health';
    if (deps.draining?.()) {
      res.status(503).json({ status: 'not ready', reason: 'shutting down' });
      return;
    }
    const map = maps.current();
    if (!map) {
      res.status(503).json({ status: 'not ready', reason: 'no partition map yet' });
      return;
    }
    res.json({ status: 'ready', epoch: map.epoch });
  });

  app.get('/metrics', async (_req, res) => {
    locals(res).op = 'metrics';
    const map = maps.current();
    metrics.mapEpoch.set(map?.epoch ?? 0);
    metrics.movesPending.set(map?.moves.length ?? 0);
    metrics.movesPlanned.set(map?.rebalance?.movesTotal ?? 0);
    res.setHeader('Content-Type', metrics.registry.contentType);
    res.send(await metrics.registry.metrics());
  });

  app.get('/v1/cluster', (_req, res) => {
    locals(res).op = 'cluster';
    const map = maps.current();
    if (!map) throw new ApiError(503, 'not_ready', 'the gateway has no partition map yet');
    const held = new Map<string, number>();
    for (const owners of map.partitions) for (const n of owners) held.set(n, (held.get(n) ?? 0) + 1);
    res.json({
      cluster: map.cluster,
      epoch: map.epoch,
      partitionCount: map.partitionCount,
      replicationFactor: map.replicationFactor,
      nodes: map.nodes.map((n) => ({ ...n, status: pool.status(n.id), partitions: held.get(n.id) ?? 0 })),
      partitions: map.partitions,
      moves: map.moves,
      // the recorded plan while a rebalance is under way (kvctl status shows its progress)
      rebalance: map.rebalance ?? null,
    });
  });

  // kvctl repair: start anti-entropy on every node (?partition=P, repeatable), or read each node's progress.
  app.post('/v1/admin/repair', async (req, res) => {
    locals(res).op = 'admin_repair';
    const map = maps.current();
    if (!map) throw new ApiError(503, 'not_ready', 'the gateway has no partition map yet');
    const partitions = parsePartitionsParam(req.query.partition, map.partitionCount);
    const report = await startRepair(maps, pool, partitions);
    if (report.nodes.every((n) => n.error)) {
      const reasons = report.nodes.map((n) => `${n.id}: ${n.error?.code}`).join(', ');
      throw new ApiError(503, 'unavailable', `no node could start a repair (${reasons})`);
    }
    res.status(202).json(report);
  });
  app.get('/v1/admin/repair', async (_req, res) => {
    locals(res).op = 'admin_repair';
    res.json(await repairStatus(maps, pool));
  });
  app.all('/v1/admin/repair', methodNotAllowed('GET, HEAD, POST'));

  const kvPath = /^\/v1\/kv(?:\/.*)?$/;

  app.get(kvPath, async (req, res) => {
    locals(res).op = 'get';
    const key = keyFromKvPath(req.originalUrl, KV_PREFIX, limits);
    mayTouch(req, res, key);
    const consistency = requestConsistency(req, res);
    const rec = await coordinator.get(key, { consistency, rid: locals(res).rid });
    if (!rec) throw new ApiError(404, 'not_found', 'key not found');
    res.setHeader('ETag', `"${formatVersion(rec.version)}"`);
    res.setHeader('Content-Type', 'application/octet-stream');
    res.send(rec.value);
  });

  // The key is in the path: its prefix is checked before the body is read.
  const kvKeyFirst = (req: Request, res: Response, next: NextFunction): void => {
    locals(res).op = 'put';
    mayTouch(req, res, keyFromKvPath(req.originalUrl, KV_PREFIX, limits));
    next();
  };
  app.put(kvPath, kvKeyFirst, rawBody, async (req, res) => {
    locals(res).op = 'put';
    const key = keyFromKvPath(req.originalUrl, KV_PREFIX, limits);
    const consistency = requestConsistency(req, res);
    const ttlSeconds = parseTtl(req.query.ttl);
    const value = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const version = await coordinator.put(key, value, { consistency, ttlSeconds, rid: locals(res).rid });
    res.json({ key: key.toString('utf8'), version: formatVersion(version) });
  });

  app.delete(kvPath, async (req, res) => {
    locals(res).op = 'delete';
    const key = keyFromKvPath(req.originalUrl, KV_PREFIX, limits);
    mayTouch(req, res, key);
    const consistency = requestConsistency(req, res);
    const version = await coordinator.delete(key, { consistency, rid: locals(res).rid });
    res.json({ key: key.toString('utf8'), version: formatVersion(version) });
  });

  app.all(kvPath, methodNotAllowed('GET, HEAD, PUT, DELETE'));

  // The original design's routes, served byte for byte as its client expects.
  app.get('/get', async (req, res) => {
    locals(res).op = 'get';
    const key = parseKey(req.query.key, limits);
    mayTouch(req, res, key);
    const consistency = requestConsistency(req, res);
    const rec = await coordinator.get(key, { consistency, rid: locals(res).rid });
    if (!rec) throw new ApiError(404, 'not_found', 'key not found');
    res.json({ key: key.toString('utf8'), value: rec.value.toString('utf8') });
  });
  app.all('/get', methodNotAllowed('GET, HEAD'));

  app.post('/put', jsonBody, async (req, res) => {
    locals(res).op = 'put';
    const body: unknown = req.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new ApiError(400, 'bad_request', 'body must be a JSON object { "key": string, "value": string }');
    }
    const { key: rawKey, value: rawValue } = body as { key?: unknown; value?: unknown };
    const key = parseKey(rawKey, limits);
    mayTouch(req, res, key);
    if (typeof rawValue !== 'string') throw new ApiError(400, 'bad_request', 'value must be a string');
    const value = Buffer.from(rawValue, 'utf8');
    if (value.length > limits.maxValueBytes) {
      throw new ApiError(
        413,
        'payload_too_large',
        `value is ${value.length} bytes; the limit is ${limits.maxValueBytes}`,
      );
    }
    const consistency = requestConsistency(req, res);
    await coordinator.put(key, value, { consistency, rid: locals(res).rid });
    res.json({ success: true });
  });
  app.all('/put', methodNotAllowed('POST'));

  app.delete('/delete', async (req, res) => {
    locals(res).op = 'delete';
    const key = parseKey(req.query.key, limits);
    mayTouch(req, res, key);
    const consistency = requestConsistency(req, res);
    await coordinator.delete(key, { consistency, rid: locals(res).rid });
    res.json({ success: true });
  });
  app.all('/delete', methodNotAllowed('DELETE'));

  app.use((req) => {
    throw new ApiError(404, 'not_found', `no route ${req.method} ${req.path}`);
  });

  // Express needs the four-argument signature to recognise an error handler.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const apiErr = toApiError(err);
    if (apiErr.status >= 500 && !(err instanceof ApiError)) {
      log.error({ err, rid: res.locals.rid, method: req.method, path: req.path }, 'unexpected error');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    setErrorHeaders(res, apiErr);
    res.status(apiErr.status).json(apiErr.toBody());
  });

  // The lean path for GET/PUT/DELETE /v1/kv/* runs before express's router (see createKvFastPath);
  // everything it does not take, express handles exactly as before.
  const fast = createKvFastPath(deps, authz);
  const headers = securityHeaders();
  const admitConnection = connectionCap(deps);
  const dispatchable = app as unknown as Dispatchable;
  const routerHandle = dispatchable.handle.bind(app);
  dispatchable.handle = (req, res) => {
    if (!admitConnection(req, res)) return;
    // The security headers on every response: the lean path writes them with its own (one writeHead).
    if (fast(req, res)) return;
    for (const [name, value] of headers) res.setHeader(name, value);
    routerHandle(req, res, (err?: unknown) => routerFallthrough(req, res, err));
  };

  /**
   * What express's router leaves unanswered: a target it cannot parse into a path (`//#@a/`: url.parse
   * gives a null path, so no middleware matches) would get express's HTML 404. Ours is the API's JSON.
   */
  const routerFallthrough = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    const apiErr = err === undefined ? new ApiError(404, 'not_found', 'no such route') : toApiError(err);
    if (apiErr.status >= 500) log.error({ err, method: req.method }, 'unexpected error outside the router');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    setErrorHeaders(res, apiErr);
    const body = JSON.stringify(apiErr.toBody());
    res.writeHead(apiErr.status, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  };

  return app;
}

interface Dispatchable {
  handle(req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void;
}

type Op = 'get' | 'put' | 'delete';

/** What serve learns about a request that the latency histogram is labelled by. */
interface FastPathLabels {
  consistency: ConsistencyLabel;
}

/**
 * The data routes without express. A CPU profile of the gateway under load
 * (bench/RESULTS.md) showed express's router, its per-request prototype swaps,
 * `res.on('finish')` listeners and `res.json` taking about a quarter of the
 * gateway's time on /v1/kv/*. This path serves the same routes with the same
 * request parsing (request-input.ts), metrics, logs, headers and error bodies,
 * and answers `false` for anything it does not cover, which express then serves:
 * HEAD, conditional GETs (If-None-Match: express answers 304), compressed
 * bodies (body-parser inflates them), other methods (405) and malformed paths.
 */
export function createKvFastPath(
  deps: GatewayDeps,
  authz: Authoriser = createAuthoriser(deps),
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { coordinator, metrics, log, limits } = deps;
  const security = flatSecurityHeaders();
  /** Every header of a lean-path response in one list, so node skips its per-header map. */
  const head = (rid: string, ...rest: (string | number)[]): (string | number)[] => [
    ...security,
    'X-Request-Id',
    rid,
    ...rest,
  ];
  // Labelled children looked up once per label set (prom-client still validates and hashes the labels on each
  // observation, ~0.5 µs: measured, not worth metric code of our own; bench/RESULTS.md).
  const counters = new Map<string, { inc(): void }>();
  const timers = new Map<string, { observe(v: number): void }>();

  const finish = (
    req: IncomingMessage,
    res: ServerResponse,
    op: Op,
    consistency: ConsistencyLabel,
    rid: string,
    started: bigint,
  ): void => {
    const status = res.statusCode;
    const ckey = `${op} ${req.method} ${status}`;
    let c = counters.get(ckey);
    if (!c) counters.set(ckey, (c = metrics.httpRequests.labels(op, req.method ?? '', String(status))));
    c.inc();
    const outcome = status < 400 ? 'ok' : status < 500 ? 'client_error' : 'server_error';
    const tkey = `${op} ${outcome} ${consistency}`;
    let t = timers.get(tkey);
    if (!t) timers.set(tkey, (t = metrics.httpDuration.labels(op, outcome, consistency)));
    t.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (status >= 500) log.warn({ rid, method: req.method, op, status }, 'request failed');
    else log.debug({ rid, method: req.method, op, status }, 'request');
  };

  const sendJson = (res: ServerResponse, status: number, body: unknown, rid: string): void => {
    const text = JSON.stringify(body);
    res.writeHead(
      status,
      head(rid, 'Content-Type', 'application/json; charset=utf-8', 'Content-Length', Buffer.byteLength(text)),
    );
    res.end(text);
  };

  const fail = (req: IncomingMessage, res: ServerResponse, err: unknown, rid: string): void => {
    const apiErr = toApiError(err);
    if (apiErr.status >= 500 && !(err instanceof ApiError)) {
      log.error({ err, rid, method: req.method, path: req.url }, 'unexpected error');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    setErrorHeaders(res, apiErr);
    sendJson(res, apiErr.status, apiErr.toBody(), rid);
  };

  const serve = async (
    req: IncomingMessage,
    res: ServerResponse,
    op: Op,
    rid: string,
    labels: FastPathLabels,
  ): Promise<void> => {
    const url = req.url ?? '';
    const principal = await authz.check(req, op === 'get' ? 'read' : 'write', rid);
    const key = keyFromKvPath(url, KV_PREFIX, limits);
    authz.checkKey(principal, key, req, rid);
    const consistency = parseConsistency(req.headers['x-consistency']);
    labels.consistency = consistency;
    if (op === 'get') {
      const rec = await coordinator.get(key, { consistency, rid });
      if (!rec) throw new ApiError(404, 'not_found', 'key not found');
      res.writeHead(
        200,
        head(
          rid,
          'ETag',
          `"${formatVersion(rec.version)}"`,
          'Content-Type',
          'application/octet-stream',
          'Content-Length',
          rec.value.length,
        ),
      );
      res.end(rec.value);
      return;
    }
    let version: Version;
    if (op === 'put') {
      const q = url.indexOf('?');
      // node:querystring is express 5's "simple" query parser: ?ttl=1&ttl=2 is an array, refused alike.
      const ttlSeconds = parseTtl(q === -1 ? undefined : parseQuery(url.slice(q + 1)).ttl);
      const value = await readBody(req, limits.maxValueBytes);
      version = await coordinator.put(key, value, { consistency, ttlSeconds, rid });
    } else {
      version = await coordinator.delete(key, { consistency, rid });
    }
    sendJson(res, 200, { key: key.toString('utf8'), version: formatVersion(version) }, rid);
  };

  return (req, res) => {
    const url = req.url;
    if (url === undefined || !url.startsWith(KV_PREFIX)) return false;
    let op: Op;
    switch (req.method) {
      case 'GET':
        if (req.headers['if-none-match'] !== undefined || req.headers['if-modified-since'] !== undefined)
          return false;
        op = 'get';
        break;
      case 'PUT': {
        const enc = req.headers['content-encoding'];
        if (enc !== undefined && enc.toLowerCase() !== 'identity') return false;
        op = 'put';
        break;
      }
      case 'DELETE':
        op = 'delete';
        break;
      default:
        return false;
    }
    const started = process.hrtime.bigint();
    const rid = acceptRequestId(req.headers['x-request-id'], randomUUID);
    // As express's middleware: `none` unless serve parsed X-Consistency (a bad header is no label value).
    const labels: FastPathLabels = { consistency: 'none' };
    serve(req, res, op, rid, labels)
      .catch((err: unknown) => fail(req, res, err, rid))
      .finally(() => finish(req, res, op, labels.consistency, rid, started));
    return true;
  };
}

/**
 * Retry-After on 429 and 503 (whole seconds: the error's `retryAfterMs` context when it has one, e.g. from the
 * rate limiter, else 1) and the Bearer challenge on 401.
 */
function setErrorHeaders(res: ServerResponse, err: ApiError): void {
  if (err.apiCode === 'rate_limited' || err.status === 503)
    res.setHeader('Retry-After', retryAfterHeader(err));
  if (err.status === 401) res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
}

/**
 * The request body as one Buffer, refused with 413 past `limit` (from the
 * Content-Length before reading, or while streaming a chunked body), as
 * express.raw does; the rest of a refused body is drained so the connection
 * stays usable.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): void => {
      req.removeAllListeners('data');
      req.resume();
      reject(new ApiError(413, 'payload_too_large', 'request body is larger than the limit'));
    };
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      tooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        tooLarge();
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () =>
      resolve(
        chunks.length === 1 ? chunks[0] : chunks.length === 0 ? Buffer.alloc(0) : Buffer.concat(chunks, size),
      ),
    );
    req.once('aborted', () => reject(new ApiError(400, 'bad_request', 'request aborted')));
    req.once('error', (err) => reject(new ApiError(400, 'bad_request', err.message)));
  });
}

function methodNotAllowed(allow: string) {
  return (req: Request, res: Response): void => {
    res.setHeader('Allow', allow);
    throw new ApiError(
      405,
      'method_not_allowed',
      `${req.method} is not allowed on ${req.path}; use ${allow}`,
    );
  };
}

/** Maps anything thrown in a handler, including body-parser's errors, to the API's error shape. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string } | null;
  switch (e?.type) {
    case 'entity.too.large':
      return new ApiError(413, 'payload_too_large', 'request body is larger than the limit');
    case 'entity.parse.failed':
      return new ApiError(400, 'bad_request', 'body is not valid JSON');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new ApiError(415, 'unsupported_media_type', e.message ?? 'unsupported encoding');
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
      return new ApiError(400, 'bad_request', e.message ?? 'malformed request body');
  }
  const status = e?.status ?? e?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ApiError(status, status === 404 ? 'not_found' : 'bad_request', e?.message ?? 'bad request');
  }
  return new ApiError(500, 'internal', 'internal error');
}
