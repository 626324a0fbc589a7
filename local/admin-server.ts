import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorMessage, KvError } from '../common/errors';
import type { Logger } from '../common/logger';
import { authenticate, type ApiKeySet } from '../common/api-keys';
import { RebalancePlanError } from '../common/rebalance-plan';
import type { RebalanceStatus, ScaleResult } from '../common/rest-api';
import { ScaleRequestError } from './cluster';
import { IDENTITY_HEADER, identity } from '../common/version';

/**
 * The launcher's own admin listener (127.0.0.1:port+100), the local stand-in
 * for `kubectl scale`: `kvctl scale` posts here. Plain node:http, JSON in and
 * out, errors shaped like the gateway's: `{ "error": { "code", "message" } }`.
 *
 *   GET  /healthz               the launcher is up
 *   GET  /v1/admin/rebalance    where the rebalance stands (RebalanceStatus)
 *   POST /v1/admin/scale        {"nodes": N}: 202 with the plan's progress
 *
 * It listens before the cluster starts, so a busy port is found before any
 * process is started; until `attach` it answers 503.
 *
 * With the launcher's --auth-file, /v1/admin/* needs an admin key from that
 * file (`Authorization: Bearer <token>`, as at the gateway): 401 without a
 * known key, 403 for a key of another role. /healthz stays open.
 */
export interface ScalableCluster {
  scale(nodes: number): Promise<ScaleResult>;
  progress(): Promise<RebalanceStatus>;
}

/** A request body larger than this is not a scale request. */
const MAX_BODY_BYTES = 16 * 1024;

class HttpError extends KvError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

export class RunnerAdminServer {
  private readonly server: http.Server;
  private cluster: ScalableCluster | undefined;

  constructor(
    private readonly log: Logger,
    /** the launcher's API keys; undefined: the launcher runs without auth, as its gateway does */
    private readonly auth?: { keys(): ApiKeySet },
  ) {
    this.server = http.createServer((req, res) => {
      // Says what answers on this port: a client given the wrong URL is told so (common/version.ts).
      res.setHeader(IDENTITY_HEADER, identity('launcher'));
      this.route(req, res).catch((err: unknown) => {
        const e = toHttpError(err);
        if (e.status >= 500) this.log.error({ err: errorMessage(err), url: req.url }, 'admin request failed');
        if (!res.headersSent) res.writeHead(e.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: e.code, message: e.message } }));
      });
    });
  }

  /** From now on requests reach this cluster. */
  attach(cluster: ScalableCluster): void {
    this.cluster = cluster;
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const only = (method: string): void => {
      if (req.method !== method) {
        res.setHeader('allow', method);
        throw new HttpError(
          405,
          'method_not_allowed',
          `${req.method} is not allowed on ${path}; use ${method}`,
        );
      }
    };
    if (path !== '/healthz') this.requireAdmin(req, res);
    switch (path) {
      case '/healthz':
        only('GET');
        json(200, { status: 'ok' });
        return;
      case '/v1/admin/rebalance':
        only('GET');
        json(200, await this.attached().progress());
        return;
      case '/v1/admin/scale': {
        only('POST');
        const nodes = parseScaleBody(await readBody(req));
        json(202, await this.attached().scale(nodes));
        return;
      }
      default:
        throw new HttpError(404, 'not_found', `no route ${req.method} ${path}`);
    }
  }

  /** 401 without a known key, 403 for a non-admin one; nothing else is read first. */
  private requireAdmin(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (!this.auth) return;
    const a = authenticate(this.auth.keys(), req.headers.authorization);
    if (!a.ok) {
      this.log.warn({ reason: a.reason, url: req.url }, 'admin request refused: no valid API key');
      res.setHeader('www-authenticate', 'Bearer realm="kvstore"');
      throw new HttpError(
        401,
        'unauthorized',
        a.reason === 'missing'
          ? 'this request needs an admin API key: send Authorization: Bearer <token> (kvctl --token)'
          : 'the bearer token is malformed or is not a known API key',
      );
    }
    if (a.principal.role !== 'admin') {
      this.log.warn({ reason: 'role', keyId: a.principal.keyId, url: req.url }, 'admin request refused');
      throw new HttpError(
        403,
        'forbidden',
        `key ${JSON.stringify(a.principal.keyId)} has role ${a.principal.role}; the launcher's admin API needs an admin key`,
      );
    }
  }

  private attached(): ScalableCluster {
    if (!this.cluster) throw new HttpError(503, 'not_ready', 'the cluster is still starting');
    return this.cluster;
  }
}

/** `{"nodes": N}` with N a whole number; the range (replication factor..64) is the cluster's to check. */
export function parseScaleBody(body: string): number {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new HttpError(400, 'bad_request', 'the body must be JSON: {"nodes": N}');
  }
  const nodes =
    typeof parsed === 'object' && parsed !== null ? (parsed as { nodes?: unknown }).nodes : undefined;
  if (typeof nodes !== 'number' || !Number.isSafeInteger(nodes)) {
    throw new HttpError(
      400,
      'bad_request',
      `nodes must be a whole number, got ${nodes === undefined ? 'nothing' : JSON.stringify(nodes)}`,
    );
  }
  return nodes;
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > MAX_BODY_BYTES) {
      throw new HttpError(413, 'payload_too_large', `the body must be at most ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The status a failure answers with: the caller's fault (400, 409) or ours (500). */
function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  // A target the cluster can never reach as asked: nothing was changed.
  if (err instanceof ScaleRequestError || err instanceof RebalancePlanError) {
    return new HttpError(400, 'bad_request', err.message);
  }
  if (err instanceof KvError && err.code === 'ports_busy') return new HttpError(409, 'conflict', err.message);
  if (err instanceof KvError && err.code === 'stopping')
    return new HttpError(503, 'unavailable', err.message);
  return new HttpError(500, 'internal', errorMessage(err));
}
