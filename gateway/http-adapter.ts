import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseQuery, type ParsedUrlQuery } from 'node:querystring';
import type { ApiRequest, RequestLabels } from './api-request';
import type { Authoriser } from './authoriser';
import { readBody } from './body-reader';
import { isUnexpected, renderError, toApiError } from './error-render';
import { writeResult } from './http-response';
import { KV_PREFIX, type Operation, type OperationDeps } from './operations/context';
import { deleteValue } from './operations/delete';
import { getValue } from './operations/get';
import { putValue } from './operations/put';
import { acceptRequestId } from './request-input';
import type { RequestObserver } from './request-observer';
import { GATEWAY_IDENTITY } from './identity-header';
import { flatSecurityHeaders } from './security-headers';

/** What the lean adapter serves a request with: the role it needs, the operation and its label. */
interface Route {
  readonly op: 'get' | 'put' | 'delete';
  readonly access: 'read' | 'write';
  readonly operation: Operation;
}

const GET: Route = { op: 'get', access: 'read', operation: getValue };
const PUT: Route = { op: 'put', access: 'write', operation: putValue };
const DELETE: Route = { op: 'delete', access: 'write', operation: deleteValue };

/** A node:http request as the operations see it (request-listener.ts hands the others to express). */
class HttpApiRequest implements ApiRequest {
  private parsedQuery: ParsedUrlQuery | undefined;

  constructor(
    private readonly req: IncomingMessage,
    readonly method: string,
    readonly target: string,
    readonly rid: string,
    readonly labels: RequestLabels,
    private readonly maxValueBytes: number,
  ) {}

  get headers(): IncomingHttpHeaders {
    return this.req.headers;
  }

  get remoteAddress(): string | undefined {
    return this.req.socket.remoteAddress;
  }

  query(name: string): unknown {
    const q = this.target.indexOf('?');
    if (q === -1) return undefined;
    // node:querystring is express 5's "simple" query parser: ?ttl=1&ttl=2 is an array, refused alike.
    this.parsedQuery ??= parseQuery(this.target.slice(q + 1));
    return this.parsedQuery[name];
  }

  readBody(): Promise<Buffer> {
    return readBody(this.req, this.maxValueBytes);
  }
}

/**
 * The data routes without express. A CPU profile of the gateway under load
 * (bench/RESULTS.md) showed express's router, its per-request prototype swaps,
 * `res.on('finish')` listeners and `res.json` taking about a quarter of the
 * gateway's time on /v1/kv/*. This adapter serves those routes with the same
 * operations, authoriser, error renderer and observer as express's, and
 * answers `false` for anything it does not cover, which express then serves:
 * HEAD, conditional GETs (If-None-Match: express answers 304), compressed
 * bodies (body-parser inflates them), other methods (405) and malformed paths.
 */
export function createKvAdapter(parts: {
  readonly ops: OperationDeps;
  readonly authz: Authoriser;
  readonly observer: RequestObserver;
}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { ops, authz, observer } = parts;
  const security = [...flatSecurityHeaders(), ...GATEWAY_IDENTITY];

  const serve = async (api: HttpApiRequest, res: ServerResponse, route: Route): Promise<void> => {
    const principal = await authz.check(api, route.access, api.rid);
    writeResult(res, await route.operation(ops, api, principal), security, api.rid);
  };

  const fail = (api: HttpApiRequest, res: ServerResponse, err: unknown): void => {
    const apiErr = toApiError(err);
    if (isUnexpected(err, apiErr))
      observer.unexpectedError(err, { rid: api.rid, method: api.method, path: api.target });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    writeResult(res, renderError(apiErr), security, api.rid);
  };

  return (req, res) => {
    const url = req.url;
    if (url === undefined || !url.startsWith(KV_PREFIX)) return false;
    let route: Route;
    switch (req.method) {
      case 'GET':
        if (req.headers['if-none-match'] !== undefined || req.headers['if-modified-since'] !== undefined)
          return false;
        route = GET;
        break;
      case 'PUT': {
        const enc = req.headers['content-encoding'];
        if (enc !== undefined && enc.toLowerCase() !== 'identity') return false;
        route = PUT;
        break;
      }
      case 'DELETE':
        route = DELETE;
        break;
      default:
        return false;
    }
    const started = process.hrtime.bigint();
    const rid = acceptRequestId(req.headers['x-request-id'], randomUUID);
    // As express's middleware: `none` unless the operation parsed X-Consistency (a bad header is no label value).
    const labels: RequestLabels = { op: route.op, consistency: 'none' };
    const api = new HttpApiRequest(req, req.method, url, rid, labels, ops.limits.maxValueBytes);
    serve(api, res, route)
      .catch((err: unknown) => fail(api, res, err))
      .finally(() => observer.answered({ rid, method: api.method, status: res.statusCode, labels, started }));
    return true;
  };
}
