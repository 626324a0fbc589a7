import type http from 'node:http';
import type https from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from '../common/logger';
import type { ApiErrorCode } from './api-error';

/**
 * Answers for what never reaches express: a request Node's HTTP parser refuses (malformed, headers
 * over the limit, too slow) and CONNECT. Node's defaults answer 400 to every parser error and reset
 * the socket, and CONNECT gets nothing at all; here a parser error gets its own status (431 headers
 * too large, 408 too slow, else 400) and a clean close, CONNECT the API's JSON 405. The connection
 * closes after either (past a parse error the stream cannot be trusted to continue).
 */

function rawJsonError(status: number, reason: string, code: ApiErrorCode, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return (
    `HTTP/1.1 ${status} ${reason}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' +
    body
  );
}

/**
 * The answer to a request the parser refused, by Node's error code: the status says what was wrong.
 * No body: the refused request may have been a HEAD (whose answer must not have one), and what the
 * parser choked on does not reliably say.
 */
export function clientErrorResponse(code: string | undefined): string {
  const [status, reason] =
    code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large']
      : code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout']
        : [400, 'Bad Request'];
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`;
}

export function attachProtocolErrorHandlers(server: http.Server | https.Server, log: Logger): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    log.debug({ code: err.code }, 'malformed request refused');
    // A connection reset or one already answered has no one to tell.
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // end, not destroy: a client still sending gets the status rather than a reset.
    socket.end(clientErrorResponse(err.code));
  });
  server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    socket.end(
      rawJsonError(
        405,
        'Method Not Allowed',
        'method_not_allowed',
        'CONNECT is not allowed: this is not a proxy',
      ),
    );
  });
}
