import net from 'node:net';

/**
 * HTTP/1.1 over a bare TCP socket, for the fuzz suite: the request bytes go
 * out exactly as given (no client library to normalise or refuse them), and
 * the response bytes are parsed here, strictly enough to tell a well-formed
 * response from anything else.
 */

/** One write of a request; `delayMs` is waited before it (slow uploads). */
export interface Piece {
  readonly bytes: Buffer;
  readonly delayMs: number;
}

/**
 * What the sender does once every piece is written:
 * - `read`: wait for `responses` final responses (or for the server to close);
 * - `half-close`: end our side (FIN) at once, then read until the server closes;
 * - `destroy` / `reset`: drop the connection (FIN / RST) without reading.
 * Pieces can be cut short by `abortAfterPiece`, to disconnect mid-headers or mid-body.
 */
export type Ending = 'read' | 'half-close' | 'destroy' | 'reset';

export interface Exchange {
  readonly pieces: readonly Piece[];
  readonly ending: Ending;
  /** final responses to wait for when `ending` is `read` (several for keep-alive sequences) */
  readonly responses: number;
  /** the request methods in order, so a response to HEAD is known to have no body */
  readonly methods: readonly string[];
}

export interface HttpResponse {
  readonly status: number;
  readonly reason: string;
  /** names lower-cased, in order, duplicates kept */
  readonly headers: readonly (readonly [string, string])[];
  readonly body: Buffer;
}

export interface ExchangeResult {
  /** final responses (1xx interim ones are parsed and dropped) */
  readonly responses: readonly HttpResponse[];
  /** why the bytes received are not a sequence of well-formed responses, if they are not */
  readonly malformed?: string;
  /** received bytes after the last complete response (a response cut off by a close) */
  readonly leftover: number;
  /** the server closed (FIN or RST) before we had what we waited for */
  readonly closedEarly: boolean;
  /** a socket error seen (ECONNRESET, EPIPE), for the report; not in itself a failure */
  readonly socketError?: string;
  /** every piece was written before the exchange ended */
  readonly sentAll: boolean;
}

export interface SendOptions {
  readonly port: number;
  readonly host?: string;
  /**
   * A guard against a hung suite, not a timing assertion: a server that neither
   * answers nor closes within this long is reported as such.
   */
  readonly stallMs?: number;
}

export class StalledExchangeError extends Error {}

/** Sends the exchange over a fresh connection and collects what comes back. */
export function sendRaw(exchange: Exchange, opts: SendOptions): Promise<ExchangeResult> {
  const { port, host = '127.0.0.1', stallMs = 20_000 } = opts;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host });
    const chunks: Buffer[] = [];
    let received = Buffer.alloc(0);
    let socketError: string | undefined;
    let sentAll = false;
    let settled = false;
    let stallTimer: NodeJS.Timeout | undefined = undefined;

    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(stallTimer);
      const parsed = parseResponses(received, exchange.methods, closed);
      socket.destroy();
      resolve({
        responses: parsed.responses,
        malformed: parsed.malformed,
        leftover: parsed.leftover,
        closedEarly: closed && parsed.responses.length < exchange.responses,
        socketError,
        sentAll,
      });
    };

    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received = Buffer.concat(chunks);
      if (exchange.ending !== 'read') return;
      const parsed = parseResponses(received, exchange.methods, false);
      if (parsed.malformed !== undefined || parsed.responses.length >= exchange.responses) finish(false);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      socketError = err.code ?? err.message;
    });
    // 'close' follows 'error' too: either way the server side is gone.
    socket.on('close', () => finish(true));

    // Armed from the start: a server that stops reading our upload would stall the writes too.
    stallTimer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(
        new StalledExchangeError(
          `the server neither answered nor closed within ${stallMs} ms (received ${received.length} bytes, sent all: ${sentAll})`,
        ),
      );
    }, stallMs);

    const writeAll = async (): Promise<void> => {
      await new Promise<void>((ok, fail) => {
        socket.once('connect', ok);
        socket.once('error', fail);
      });
      for (const piece of exchange.pieces) {
        if (piece.delayMs > 0) await sleep(piece.delayMs);
        if (settled || socket.destroyed) return;
        // Waits for the kernel to take the bytes, so an abort after this piece cuts at a known point.
        await new Promise<void>((ok) => socket.write(piece.bytes, () => ok()));
      }
      sentAll = !socket.destroyed;
      switch (exchange.ending) {
        case 'destroy':
          socket.destroy();
          break;
        case 'reset':
          socket.resetAndDestroy();
          break;
        case 'half-close':
          socket.end();
          break;
        case 'read':
          break;
      }
    };
    writeAll().catch((err: unknown) => {
      // A refused connection is a dead server: that is for the caller to see.
      if (!settled) {
        settled = true;
        clearTimeout(stallTimer);
        socket.destroy();
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Parsed {
  responses: HttpResponse[];
  malformed?: string;
  leftover: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// field-value: visible ASCII, obs-text, space and tab; never CR, LF or NUL.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const STATUS_LINE = /^HTTP\/1\.1 ([1-5]\d\d) ([\t\x20-\x7e\x80-\xff]*)$/;

/**
 * Parses as many complete responses as `buf` holds. `closed`: the connection is
 * over, so a body delimited by the close is complete. A response whose bytes
 * stop short is left over, not malformed (the caller decides if that is fine).
 */
export function parseResponses(buf: Buffer, methods: readonly string[], closed: boolean): Parsed {
  const responses: HttpResponse[] = [];
  let at = 0;
  while (at < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', at, 'latin1');
    if (headEnd === -1) {
      // Bytes that can never become a status line are malformed now, not later.
      const start = buf.subarray(at, Math.min(buf.length, at + 9)).toString('latin1');
      if (!'HTTP/1.1 '.startsWith(start) && !start.startsWith('HTTP/1.1 ')) {
        return { responses, malformed: `not a status line: ${JSON.stringify(start)}`, leftover: 0 };
      }
      break;
    }
    const lines = buf.subarray(at, headEnd).toString('latin1').split('\r\n');
    const status = STATUS_LINE.exec(lines[0]);
    if (!status) return { responses, malformed: `bad status line ${JSON.stringify(lines[0])}`, leftover: 0 };
    const headers: [string, string][] = [];
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = colon === -1 ? '' : line.slice(0, colon);
      const value = line.slice(colon + 1).trim();
      if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) {
        return { responses, malformed: `bad header line ${JSON.stringify(line)}`, leftover: 0 };
      }
      headers.push([name.toLowerCase(), value]);
    }
    const code = Number(status[1]);
    let bodyStart = headEnd + 4;
    if (code >= 100 && code < 200) {
      // interim (100 Continue): no body; the final response follows
      at = bodyStart;
      continue;
    }
    // A response past the requests sent answers bytes the server read as one more request (the rest of a
    // body longer than its Content-Length): whatever they were, not a HEAD we sent.
    const method = methods[responses.length] ?? 'GET';
    const lengths = headers.filter(([n]) => n === 'content-length').map(([, v]) => v);
    const te = headers.filter(([n]) => n === 'transfer-encoding').map(([, v]) => v.toLowerCase());
    if (lengths.length > 1) return { responses, malformed: 'several Content-Length headers', leftover: 0 };
    if (lengths.length === 1 && te.length > 0) {
      return { responses, malformed: 'both Content-Length and Transfer-Encoding', leftover: 0 };
    }
    if (lengths.length === 1 && !/^\d{1,15}$/.test(lengths[0])) {
      return { responses, malformed: `bad Content-Length ${JSON.stringify(lengths[0])}`, leftover: 0 };
    }
    let body: Buffer;
    let end: number;
    if (method === 'HEAD' || code === 204 || code === 304) {
      body = Buffer.alloc(0);
      end = bodyStart;
    } else if (te.length > 0) {
      if (te.join(',') !== 'chunked') {
        return { responses, malformed: `unexpected Transfer-Encoding ${te.join(',')}`, leftover: 0 };
      }
      const chunked = parseChunked(buf, bodyStart);
      if (chunked === 'incomplete') break;
      if (typeof chunked === 'string') return { responses, malformed: chunked, leftover: 0 };
      ({ body, end } = chunked);
    } else if (lengths.length === 1) {
      end = bodyStart + Number(lengths[0]);
      if (end > buf.length) break;
      body = buf.subarray(bodyStart, end);
    } else {
      // No length: the body runs to the close, which only a closing response may do.
      const connection = headers.find(([n]) => n === 'connection')?.[1].toLowerCase();
      if (connection !== 'close') {
        return {
          responses,
          malformed: 'no Content-Length, no chunking and no Connection: close',
          leftover: 0,
        };
      }
      if (!closed) break;
      end = buf.length;
      body = buf.subarray(bodyStart, end);
    }
    responses.push({ status: code, reason: status[2], headers, body });
    at = end;
    bodyStart = end;
  }
  return { responses, leftover: buf.length - at };
}

function parseChunked(buf: Buffer, start: number): { body: Buffer; end: number } | 'incomplete' | string {
  const parts: Buffer[] = [];
  let at = start;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', at, 'latin1');
    if (lineEnd === -1) return 'incomplete';
    const sizeText = buf.subarray(at, lineEnd).toString('latin1').split(';')[0].trim();
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) return `bad chunk size ${JSON.stringify(sizeText)}`;
    const size = parseInt(sizeText, 16);
    at = lineEnd + 2;
    if (size === 0) {
      // trailers, then an empty line
      for (;;) {
        const e = buf.indexOf('\r\n', at, 'latin1');
        if (e === -1) return 'incomplete';
        const line = buf.subarray(at, e).toString('latin1');
        at = e + 2;
        if (line === '') return { body: Buffer.concat(parts), end: at };
      }
    }
    if (at + size + 2 > buf.length) return 'incomplete';
    parts.push(buf.subarray(at, at + size));
    if (buf.toString('latin1', at + size, at + size + 2) !== '\r\n') return 'chunk data not followed by CRLF';
    at += size + 2;
  }
}

export function header(res: HttpResponse, name: string): string | undefined {
  return res.headers.find(([n]) => n === name)?.[1];
}
