import type { IncomingMessage, ServerResponse } from 'node:http';
import { createExpressAdapter } from './app';
import { createAuthoriser } from './authoriser';
import { connectionCap } from './connection-cap';
import type { GatewayDeps } from './gateway-deps';
import { createKvAdapter } from './http-adapter';
import { RequestObserver } from './request-observer';
import { randomUUID } from 'node:crypto';
import { ApiError } from './api-error';
import { renderError } from './error-render';
import { writeResult } from './http-response';
import { GATEWAY_IDENTITY } from './identity-header';
import { DEFAULT_IN_FLIGHT_LIMITS, InFlightBudget, REQUEST_OVERHEAD_BYTES } from './in-flight-budget';
import { acceptRequestId, DEFAULT_MAX_BATCH_BYTES, type InputLimits } from './request-input';
import { flatSecurityHeaders } from './security-headers';

/**
 * The public server's `request` listener: the per-connection cap first, then the gateway's in-flight
 * budget (health, readiness and metrics bypass it, so probes answer under any load), then the lean
 * node:http adapter for GET/PUT/DELETE /v1/kv/* (http-adapter.ts), and express for everything it does
 * not take (app.ts). Both adapters run the same operations (operations/), authoriser, error renderer
 * and request observer.
 */
export function createRequestListener(
  deps: GatewayDeps,
): (req: IncomingMessage, res: ServerResponse) => void {
  const observer = new RequestObserver(deps.metrics, deps.log);
  const authz = createAuthoriser(deps);
  const parts = { ops: { coordinator: deps.coordinator, limits: deps.limits, authz }, authz, observer };
  const lean = createKvAdapter(parts);
  const express = createExpressAdapter(deps, parts);
  const admitConnection = connectionCap(deps.maxRequestsPerConnection, observer);
  const budget = new InFlightBudget(deps.inFlight ?? DEFAULT_IN_FLIGHT_LIMITS);
  deps.metrics.inFlight = () => budget.held();
  const security = [...flatSecurityHeaders(), ...GATEWAY_IDENTITY];
  const route = (req: IncomingMessage, res: ServerResponse): void => {
    if (lean(req, res)) return;
    express(req, res);
  };
  const admitted = (req: IncomingMessage, res: ServerResponse, bytes: number): void => {
    res.once('close', () => budget.release(bytes));
    route(req, res);
  };
  const shed = (req: IncomingMessage, res: ServerResponse): void => {
    deps.metrics.shedRequests.inc();
    const rid = acceptRequestId(req.headers['x-request-id'], randomUUID);
    const { bytes, requests } = budget.held();
    const refusal = new ApiError(
      503,
      'overloaded',
      `the gateway holds ${requests} requests and ${bytes} bytes of request bodies, its bound; try again after Retry-After`,
    );
    // The body is read and dropped, so the connection stays usable for the client's retry.
    req.resume();
    writeResult(res, renderError(refusal), [...security, 'X-Request-Id', rid]);
    observer.answered({
      rid,
      method: req.method ?? 'GET',
      status: 503,
      labels: { op: 'other', consistency: 'none' },
      started: process.hrtime.bigint(),
    });
  };
  return (req, res) => {
    if (!admitConnection(req, res)) return;
    if (req.method === 'GET' && PROBES.has(pathOf(req.url))) return route(req, res);
    const bytes = costOf(req, deps.limits);
    const got = budget.acquire(bytes);
    if (got === true) return admitted(req, res, bytes);
    if (got === false) return shed(req, res);
    got.then(
      (ok) => (ok ? admitted(req, res, bytes) : shed(req, res)),
      (err: unknown) => deps.log.error({ err }, 'in-flight budget failed'),
    );
  };
}

const PROBES = new Set(['/healthz', '/readyz', '/metrics']);

function pathOf(url: string | undefined): string {
  const q = (url ?? '/').indexOf('?');
  return q === -1 ? (url ?? '/') : (url ?? '/').slice(0, q);
}

/**
 * What a request takes of the budget: its declared body, capped at what its route accepts; a
 * streamed (chunked) body its route's whole limit, since its size is known only once read.
 */
function costOf(req: IncomingMessage, limits: InputLimits): number {
  const limit =
    pathOf(req.url) === '/v1/batch'
      ? (limits.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES)
      : limits.maxValueBytes;
  const declared = req.headers['content-length'];
  const body =
    declared !== undefined
      ? Math.min(Number(declared) || 0, limit)
      : req.headers['transfer-encoding'] !== undefined
        ? limit
        : 0;
  return REQUEST_OVERHEAD_BYTES + body;
}
