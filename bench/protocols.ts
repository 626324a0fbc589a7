import { keyName } from './keys';

/**
 * What the load generator says to each kind of server, and how it knows a reply
 * is complete. One request is outstanding per connection (no pipelining), so a
 * parser only ever holds the bytes of one reply.
 */
export type Op = 'get' | 'put';

export type Outcome = 'ok' | 'miss' | 'error';

export interface Protocol {
  readonly name: string;
  request(op: Op, key: number): Buffer;
  /** a fresh parser per connection */
  parser(): ReplyParser;
}

export interface ReplyParser {
  /** Feeds bytes; returns the outcome once the reply is complete, else undefined. Throws on garbage. */
  push(chunk: Buffer): Outcome | undefined;
}

export class ProtocolError extends Error {}

/** The same value bytes for every key and system: printable, so JSON and base64 carry them as is. */
export function makeValue(size: number): Buffer {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = alphabet.charCodeAt(i % alphabet.length);
  return b;
}

/** kvstore's `/v1/kv/{key}` API, also spoken by the minimal in-memory server. */
export function kvHttp(host: string, valueSize: number, extraHeaders: Record<string, string> = {}): Protocol {
  const value = makeValue(valueSize);
  const extra = Object.entries(extraHeaders)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const getTail = Buffer.from(` HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`, 'latin1');
  const putTail = Buffer.from(
    ` HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\n${extra}Content-Length: ${value.length}\r\n\r\n`,
    'latin1',
  );
  return {
    name: 'kv-http',
    request(op, key) {
      const line = Buffer.from(`${op === 'get' ? 'GET' : 'PUT'} /v1/kv/${keyName(key)}`, 'latin1');
      return op === 'get' ? Buffer.concat([line, getTail]) : Buffer.concat([line, putTail, value]);
    },
    parser: () =>
      new HttpReplyParser((status) => (status === 200 ? 'ok' : status === 404 ? 'miss' : 'error')),
  };
}

/**
 * etcd v3's HTTP JSON gateway (grpc-gateway): base64 keys and values. GET is a
 * serializable range (served by the member asked, no consensus round), as the
 * issue's baseline measured.
 */
export function etcdHttp(host: string, valueSize: number): Protocol {
  const value64 = makeValue(valueSize).toString('base64');
  return {
    name: 'etcd-http',
    request(op, key) {
      const k64 = Buffer.from(keyName(key)).toString('base64');
      const body =
        op === 'get' ? `{"key":"${k64}","serializable":true}` : `{"key":"${k64}","value":"${value64}"}`;
      const path = op === 'get' ? '/v3/kv/range' : '/v3/kv/put';
      return Buffer.from(
        `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        'latin1',
      );
    },
    // A range for an absent key is a 200 without "kvs"; every key is preloaded, so a 200 counts as a hit.
    parser: () => new HttpReplyParser((status) => (status === 200 ? 'ok' : 'error')),
  };
}

/** Redis's RESP, non-pipelined GET and SET, as redis-benchmark sends them. */
export function resp(valueSize: number): Protocol {
  const value = makeValue(valueSize);
  const valueTail = Buffer.concat([Buffer.from(`$${value.length}\r\n`), value, Buffer.from('\r\n')]);
  return {
    name: 'resp',
    request(op, key) {
      const k = keyName(key);
      return op === 'get'
        ? Buffer.from(`*2\r\n$3\r\nGET\r\n$${k.length}\r\n${k}\r\n`, 'latin1')
        : Buffer.concat([Buffer.from(`*3\r\n$3\r\nSET\r\n$${k.length}\r\n${k}\r\n`, 'latin1'), valueTail]);
    },
    parser: () => new RespReplyParser(),
  };
}

function concat(held: Buffer | undefined, chunk: Buffer): Buffer {
  return held && held.length ? Buffer.concat([held, chunk]) : chunk;
}

const CRLF = Buffer.from('\r\n');
const CRLFCRLF = Buffer.from('\r\n\r\n');

/** An HTTP/1.1 reply: status line, headers, then a Content-Length or chunked body. */
export class HttpReplyParser implements ReplyParser {
  private buf: Buffer | undefined;

  /** `classify` may read the body (latin1) too: a batch's reply says how each operation went. */
  constructor(private readonly classify: (status: number, body: string) => Outcome) {}

  push(chunk: Buffer): Outcome | undefined {
    const buf = concat(this.buf, chunk);
    this.buf = buf;
    const headEnd = buf.indexOf(CRLFCRLF);
    if (headEnd < 0) return undefined;
    const head = buf.toString('latin1', 0, headEnd).toLowerCase();
    if (!head.startsWith('http/1.')) throw new ProtocolError(`not an HTTP reply: ${head.slice(0, 40)}`);
    const status = Number(head.slice(9, 12));
    const bodyStart = headEnd + 4;
    const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
    let end: number;
    if (cl) {
      end = bodyStart + Number(cl[1]);
      if (buf.length < end) return undefined;
    } else if (/\r\ntransfer-encoding:\s*chunked/.test(head)) {
      const e = chunkedEnd(buf, bodyStart);
      if (e === undefined) return undefined;
      end = e;
    } else if (status === 204 || status === 304) {
      end = bodyStart;
    } else {
      throw new ProtocolError('reply has neither Content-Length nor chunked body');
    }
    if (buf.length > end) throw new ProtocolError('bytes after the reply with no request outstanding');
    this.buf = undefined;
    return this.classify(status, this.classify.length > 1 ? buf.toString('latin1', bodyStart, end) : '');
  }
}

/** Offset just past a complete chunked body starting at `at`, or undefined if more bytes are needed. */
function chunkedEnd(buf: Buffer, at: number): number | undefined {
  let pos = at;
  for (;;) {
    const eol = buf.indexOf(CRLF, pos);
    if (eol < 0) return undefined;
    const size = parseInt(buf.toString('latin1', pos, eol), 16);
    if (!Number.isFinite(size)) throw new ProtocolError('bad chunk size');
    if (size === 0) {
      // No trailers from the servers we test: the body ends with an empty line.
      return buf.length >= eol + 4 ? eol + 4 : undefined;
    }
    pos = eol + 2 + size + 2;
    if (buf.length < pos) return undefined;
  }
}

/** One RESP reply: +simple, -error, :integer or $bulk (nil is a miss). */
export class RespReplyParser implements ReplyParser {
  private buf: Buffer | undefined;

  push(chunk: Buffer): Outcome | undefined {
    const buf = concat(this.buf, chunk);
    this.buf = buf;
    const eol = buf.indexOf(CRLF);
    if (eol < 0) return undefined;
    const type = buf[0];
    let outcome: Outcome;
    let end = eol + 2;
    if (type === 0x2b /* + */ || type === 0x3a /* : */) outcome = 'ok';
    else if (type === 0x2d /* - */) outcome = 'error';
    else if (type === 0x24 /* $ */) {
      const len = Number(buf.toString('latin1', 1, eol));
      if (len < 0) outcome = 'miss';
      else {
        end = eol + 2 + len + 2;
        outcome = 'ok';
      }
    } else throw new ProtocolError(`unexpected RESP type ${String.fromCharCode(type)}`);
    if (buf.length < end) return undefined;
    if (buf.length > end) throw new ProtocolError('bytes after the reply with no request outstanding');
    this.buf = undefined;
    return outcome;
  }
}
