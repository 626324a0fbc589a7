import type { ClusterReply } from '../common/rest-api';
import { openApiDocument } from '../common/rest-openapi';
import { KVSTORE_VERSION } from '../common/version';
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { requiredAccess, type Principal } from '../common/api-keys';
import { parsePartitionsParam, repairStatus, startRepair } from './admin-repair';
import { ApiError } from './api-error';
import type { ApiRequest, ApiResult, OpLabel, RequestLabels } from './api-request';
import type { Authoriser } from './authoriser';
import { isUnexpected, renderError, toApiError } from './error-render';
import type { GatewayDeps } from './gateway-deps';
import { writeResult } from './http-response';
import type { Operation, OperationDeps } from './operations/context';
import { batch } from './operations/batch';
import { deleteValue, legacyDelete } from './operations/delete';
import { getValue, legacyGet } from './operations/get';
import { listKeys } from './operations/list';
import { legacyPut, putValue } from './operations/put';
import { GATEWAY_IDENTITY } from './identity-header';
import { acceptRequestId, DEFAULT_MAX_BATCH_BYTES } from './request-input';
import type { RequestObserver } from './request-observer';
import { securityHeaders } from './security-headers';

/** An express request as the operations see it. */
class ExpressApiRequest implements ApiRequest {
  readonly labels: RequestLabels = { op: 'other', consistency: 'none' };

  constructor(
    private readonly req: Request,
    private readonly res: Response,
    readonly rid: string,
    private readonly rawBody: RequestHandler,
  ) {}

  get method(): string {
    return this.req.method;
  }

  get target(): string {
    return this.req.originalUrl;
  }

  get headers(): IncomingHttpHeaders {
    return this.req.headers;
  }

  get remoteAddress(): string | undefined {
    return this.req.socket.remoteAddress;
  }

  query(name: string): unknown {
    return (this.req.query as Record<string, unknown>)[name];
  }

  /** Through express.raw: body-parser inflates a compressed body and applies the limit to what it inflates to. */
  readBody(): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.rawBody(this.req, this.res, (err?: unknown) => {
        if (err) reject(err);
        else resolve(Buffer.isBuffer(this.req.body) ? this.req.body : Buffer.alloc(0));
      });
    });
  }
}

interface Locals {
  api: ExpressApiRequest;
  /** set by the auth middleware before any route that needs a key runs */
  principal: Principal;
}

function locals(res: Response): Locals {
  return res.locals as Locals;
}

/** The request's ApiRequest, claimed by a route: from here on it is recorded as `op`. */
function claim(res: Response, op: OpLabel): Locals {
  const l = locals(res);
  l.api.labels.op = op;
  return l;
}

/**
 * Answers with an operation's result. res.send, not a raw write: express answers HEAD without a body and a
 * conditional GET whose ETag matches with 304.
 */
function sendResult(res: Response, result: ApiResult): void {
  res.status(result.status);
  for (let i = 0; i < result.headers.length; i += 2) res.setHeader(result.headers[i], result.headers[i + 1]);
  res.send(result.body);
}

/**
 * The public REST API behind express (docs/design.md, "Public API"): admin, health, metrics, the cluster
 * view, the original design's `/get` `/put` `/delete`, and the /v1/kv requests the lean adapter hands over
 * (http-adapter.ts). Every error is JSON `{ error: { code, message } }` (error-render.ts). Returns the
 * request listener that serves them.
 */
export function createExpressAdapter(
  deps: GatewayDeps,
  parts: { readonly ops: OperationDeps; readonly authz: Authoriser; readonly observer: RequestObserver },
): (req: IncomingMessage, res: ServerResponse) => void {
  const { maps, pool, metrics, limits } = deps;
  const { ops, authz, observer } = parts;
  const app = express();
  app.disable('x-powered-by');
  // Values are opaque bytes; an ETag computed over them would cost a hash per read. Ours is the version.
  app.set('etag', false);

  const rawBody = express.raw({ type: () => true, limit: limits.maxValueBytes });
  // JSON strings escape some bytes, so the legacy body may be somewhat larger than the value it carries.
  const jsonBody = express.json({
    limit: limits.maxValueBytes * 2 + limits.maxKeyBytes * 2 + 1024,
    strict: true,
  });

  app.use((req, res, next) => {
    const rid = acceptRequestId(req.headers['x-request-id'], randomUUID);
    const api = new ExpressApiRequest(req, res, rid, rawBody);
    res.locals.api = api;
    res.setHeader('X-Request-Id', rid);
    const started = process.hrtime.bigint();
    res.on('finish', () =>
      observer.answered({ rid, method: req.method, status: res.statusCode, labels: api.labels, started }),
    );
    next();
  });

  // Before any route and any body parser: a refused request reads no body and reaches no replica.
  app.use(async (req, res, next) => {
    // req.path: the pathname the router matches, whatever form the request target took.
    const access = requiredAccess(req.method, req.path);
    const l = locals(res);
    if (access !== 'open') l.principal = await authz.check(l.api, access, l.api.rid);
    next();
  });

  app.get('/healthz', (_req, res) => {
    claim(res, 'health');
    res.json({ status: 'ok' });
  });

  app.get('/readyz', (_req, res) => {
    claim(res, 'health');
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
    claim(res, 'metrics');
    const map = maps.current();
    metrics.mapEpoch.set(map?.epoch ?? 0);
    metrics.movesPending.set(map?.moves.length ?? 0);
    metrics.movesPlanned.set(map?.rebalance?.movesTotal ?? 0);
    res.setHeader('Content-Type', metrics.registry.contentType);
    res.send(await metrics.registry.metrics());
  });

  // The document of this API, generated from common/rest-api.ts (docs/openapi.json is the same).
  const openapi = JSON.stringify(openApiDocument(KVSTORE_VERSION));
  app.get('/openapi.json', (_req, res) => {
    claim(res, 'other');
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.send(openapi);
  });

  app.get('/v1/cluster', (_req, res) => {
    claim(res, 'cluster');
    const map = maps.current();
    if (!map) throw new ApiError(503, 'not_ready', 'the gateway has no partition map yet');
    const held = new Map<string, number>();
    for (const owners of map.partitions) for (const n of owners) held.set(n, (held.get(n) ?? 0) + 1);
    const reply: ClusterReply = {
      cluster: map.cluster,
      epoch: map.epoch,
      partitionCount: map.partitionCount,
      replicationFactor: map.replicationFactor,
      nodes: map.nodes.map((n) => ({ ...n, status: pool.status(n.id), partitions: held.get(n.id) ?? 0 })),
      partitions: map.partitions,
      moves: map.moves,
      // the recorded plan while a rebalance is under way (kvctl status shows its progress)
      rebalance: map.rebalance ?? null,
    };
    res.json(reply);
  });

  // kvctl repair: start anti-entropy on every node (?partition=P, repeatable), or read each node's progress.
  app.post('/v1/admin/repair', async (req, res) => {
    claim(res, 'admin_repair');
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
    claim(res, 'admin_repair');
    res.json(await repairStatus(maps, pool));
  });
  app.all('/v1/admin/repair', methodNotAllowed('GET, HEAD, POST'));
  // After every GET above: a route that only reads answers other methods with 405, not 404.
  for (const path of ['/healthz', '/readyz', '/metrics', '/openapi.json', '/v1/cluster'])
    app.all(path, methodNotAllowed('GET, HEAD'));

  /** A route served by an operation, recorded as `op`. */
  const serve =
    (op: OpLabel, operation: Operation) =>
    async (_req: Request, res: Response): Promise<void> => {
      const { api, principal } = claim(res, op);
      sendResult(res, await operation(ops, api, principal));
    };

  // What the lean adapter hands over on /v1/kv: HEAD, conditional GETs, compressed bodies, other methods.
  const kvPath = /^\/v1\/kv(?:\/.*)?$/;
  // GET /v1/kv, with no key: a listing (?prefix, ?start&end).
  app.get('/v1/kv', serve('list', listKeys));
  app.all('/v1/kv', methodNotAllowed('GET, HEAD'));
  app.get(kvPath, serve('get', getValue));
  app.put(kvPath, serve('put', putValue));
  app.delete(kvPath, serve('delete', deleteValue));
  app.all(kvPath, methodNotAllowed('GET, HEAD, PUT, DELETE'));

  // POST /v1/batch: JSON, values in base64 (4/3 of their size), the whole batch within maxBatchBytes.
  const batchBody = express.json({ limit: limits.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES, strict: true });
  app.post('/v1/batch', batchBody, async (req, res) => {
    const { api, principal } = claim(res, 'batch');
    sendResult(res, await batch(ops, api, principal, req.body));
  });
  app.all('/v1/batch', methodNotAllowed('POST'));

  // The original design's routes, served byte for byte as its client expects.
  app.get('/get', serve('get', legacyGet));
  app.all('/get', methodNotAllowed('GET, HEAD'));
  app.post('/put', jsonBody, async (req, res) => {
    const { api, principal } = claim(res, 'put');
    sendResult(res, await legacyPut(ops, api, principal, req.body));
  });
  app.all('/put', methodNotAllowed('POST'));
  app.delete('/delete', serve('delete', legacyDelete));
  app.all('/delete', methodNotAllowed('DELETE'));

  app.use((req) => {
    throw new ApiError(404, 'not_found', `no route ${req.method} ${req.path}`);
  });

  // Express needs the four-argument signature to recognise an error handler.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const apiErr = toApiError(err);
    if (isUnexpected(err, apiErr))
      observer.unexpectedError(err, { rid: locals(res).api.rid, method: req.method, path: req.path });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendResult(res, renderError(apiErr));
  });

  /**
   * What express's router leaves unanswered: a target it cannot parse into a path (`//#@a/`: url.parse
   * gives a null path, so no middleware matches) would get express's HTML 404. Ours is the API's JSON.
   */
  const routerFallthrough = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    const apiErr = err === undefined ? new ApiError(404, 'not_found', 'no such route') : toApiError(err);
    if (apiErr.status >= 500) observer.unexpectedOutsideRouter(err, req.method);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    writeResult(res, renderError(apiErr), []);
  };

  const headers = securityHeaders();
  return (req, res) => {
    // The security headers on every response (the lean adapter writes them with its own, in one writeHead).
    for (const [name, value] of headers) res.setHeader(name, value);
    res.setHeader(...GATEWAY_IDENTITY);
    // An express app is also connect-style middleware (what app.use(subApp) calls): the third argument
    // gets what its router leaves unanswered. Until express has seen them, req and res are node's own.
    app(req as Request, res as Response, (err?: unknown) => routerFallthrough(req, res, err));
  };
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
