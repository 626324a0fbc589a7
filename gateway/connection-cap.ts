import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ApiError } from './api-error';
import type { GatewayDeps } from './app';
import { acceptRequestId } from './request-input';
import { flatSecurityHeaders } from './security-headers';

export const DEFAULT_MAX_REQUESTS_PER_CONNECTION = 32;

/**
 * The per-connection cap on requests in flight. Node parses pipelined requests as they arrive and queues their
 * responses, so one connection could otherwise start any number of requests at once. Beyond the cap a request
 * gets 429 at once (no replica contacted) with `Connection: close`, and the connection ends after it.
 */
export function connectionCap(
  deps: Pick<GatewayDeps, 'maxRequestsPerConnection' | 'metrics' | 'log'>,
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const max = deps.maxRequestsPerConnection ?? DEFAULT_MAX_REQUESTS_PER_CONNECTION;
  const inFlight = new WeakMap<Socket, number>();
  const security = flatSecurityHeaders();
  return (req, res) => {
    const socket = req.socket;
    const n = (inFlight.get(socket) ?? 0) + 1;
    inFlight.set(socket, n);
    res.once('close', () => inFlight.set(socket, (inFlight.get(socket) ?? 1) - 1));
    if (n <= max) return true;
    const rid = acceptRequestId(req.headers['x-request-id'], randomUUID);
    const body = JSON.stringify(
      new ApiError(
        429,
        'rate_limited',
        `more than ${max} requests in flight on one connection; this connection closes after this response`,
      ).toBody(),
    );
    res.writeHead(429, [
      ...security,
      'X-Request-Id',
      rid,
      'Retry-After',
      '1',
      'Connection',
      'close',
      'Content-Type',
      'application/json; charset=utf-8',
      'Content-Length',
      Buffer.byteLength(body),
    ]);
    res.end(body);
    deps.metrics.httpRequests.inc({ op: 'other', method: req.method ?? '', status: '429' });
    deps.metrics.rateLimited.inc({ scope: 'connection' });
    deps.log.warn(
      { rid, address: req.socket.remoteAddress, inFlight: n, max },
      'too many requests in flight on one connection',
    );
    return false;
  };
}
