import type { IncomingMessage, ServerResponse } from 'node:http';
import { createExpressAdapter } from './app';
import { createAuthoriser } from './authoriser';
import { connectionCap } from './connection-cap';
import type { GatewayDeps } from './gateway-deps';
import { createKvAdapter } from './http-adapter';
import { RequestObserver } from './request-observer';

/**
 * The public server's `request` listener: the per-connection cap first, then the lean node:http adapter for
 * GET/PUT/DELETE /v1/kv/* (http-adapter.ts), and express for everything it does not take (app.ts). Both
 * adapters run the same operations (operations/), authoriser, error renderer and request observer.
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
  return (req, res) => {
    if (!admitConnection(req, res)) return;
    if (lean(req, res)) return;
    express(req, res);
  };
}
