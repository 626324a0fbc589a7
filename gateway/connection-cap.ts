import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ApiError } from './api-error';
import { renderError } from './error-render';
import { writeResult } from './http-response';
import { acceptRequestId } from './request-input';
import type { RequestObserver } from './request-observer';
import { GATEWAY_IDENTITY } from './identity-header';
import { flatSecurityHeaders } from './security-headers';

export const DEFAULT_MAX_REQUESTS_PER_CONNECTION = 32;

/**
 * The per-connection cap on requests in flight. Node parses pipelined requests as they arrive and queues their
 * responses, so one connection could otherwise start any number of requests at once. Beyond the cap a request
 * gets 429 at once (no replica contacted) with `Connection: close`, and the connection ends after it.
 */
export function connectionCap(
  maxRequestsPerConnection: number | undefined,
  observer: RequestObserver,
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const max = maxRequestsPerConnection ?? DEFAULT_MAX_REQUESTS_PER_CONNECTION;
  const inFlight = new WeakMap<Socket, number>();
  const security = [...flatSecurityHeaders(), ...GATEWAY_IDENTITY];
  return (req, res) => {
    const socket = req.socket;
    const n = (inFlight.get(socket) ?? 0) + 1;
    inFlight.set(socket, n);
    res.once('close', () => inFlight.set(socket, (inFlight.get(socket) ?? 1) - 1));
    if (n <= max) return true;
    const rid = acceptRequestId(req.headers['x-request-id'], randomUUID);
    const refusal = new ApiError(
      429,
      'rate_limited',
      `more than ${max} requests in flight on one connection; this connection closes after this response`,
    );
    writeResult(res, renderError(refusal), [...security, 'X-Request-Id', rid, 'Connection', 'close']);
    observer.connectionCapped({
      rid,
      method: req.method ?? '',
      address: req.socket.remoteAddress,
      inFlight: n,
      max,
    });
    return false;
  };
}
