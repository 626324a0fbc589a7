import { keyName } from './keys';
import {
  HttpReplyParser,
  makeValue,
  ProtocolError,
  type Op,
  type Outcome,
  type Protocol,
  type ReplyParser,
} from './protocols';

/*
 * Many keys a request, each system as its users batch: kvstore's POST /v1/batch (not atomic),
 * etcd's Txn of the same size through its JSON gateway (atomic: one consensus round for all), and
 * Redis pipelines of the same depth (one round trip, N commands, not atomic). A request is `size`
 * consecutive keys from the one the load generator picks (wrapping at `keys`). A request counts as
 * ok only when every operation in it succeeded.
 */

const keysFrom = (first: number, size: number, keys: number): string[] =>
  Array.from({ length: size }, (_, i) => keyName((first + i) % keys));

export function kvBatchHttp(host: string, valueSize: number, size: number, keys: number): Protocol {
  const value64 = makeValue(valueSize).toString('base64');
  return {
    name: `kv-batch-${size}`,
    request(op: Op, key: number) {
      const ops = keysFrom(key, size, keys).map((k) =>
        op === 'get' ? `{"op":"get","key":"${k}"}` : `{"op":"put","key":"${k}","value":"${value64}"}`,
      );
      const body = `{"operations":[${ops.join(',')}]}`;
      return Buffer.from(
        `POST /v1/batch HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        'latin1',
      );
    },
    // Every key is preloaded: each of the `size` results must be a 200.
    parser: () =>
      new HttpReplyParser((status, body) =>
        status === 200 && countOf(body, '"status":200') === size ? 'ok' : 'error',
      ),
  };
}

export function etcdTxnHttp(host: string, valueSize: number, size: number, keys: number): Protocol {
  const value64 = makeValue(valueSize).toString('base64');
  return {
    name: `etcd-txn-${size}`,
    request(op: Op, key: number) {
      const ops = keysFrom(key, size, keys).map((k) => {
        const k64 = Buffer.from(k).toString('base64');
        return op === 'get'
          ? `{"requestRange":{"key":"${k64}"}}`
          : `{"requestPut":{"key":"${k64}","value":"${value64}"}}`;
      });
      const body = `{"success":[${ops.join(',')}]}`;
      return Buffer.from(
        `POST /v3/kv/txn HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        'latin1',
      );
    },
    parser: () =>
      new HttpReplyParser((status, body) =>
        status === 200 && body.includes('"succeeded":true') ? 'ok' : 'error',
      ),
  };
}

export function respPipeline(valueSize: number, size: number, keys: number): Protocol {
  const value = makeValue(valueSize);
  const valueTail = Buffer.concat([Buffer.from(`$${value.length}\r\n`), value, Buffer.from('\r\n')]);
  return {
    name: `resp-pipeline-${size}`,
    request(op: Op, key: number) {
      return Buffer.concat(
        keysFrom(key, size, keys).map((k) =>
          op === 'get'
            ? Buffer.from(`*2\r\n$3\r\nGET\r\n$${k.length}\r\n${k}\r\n`, 'latin1')
            : Buffer.concat([
                Buffer.from(`*3\r\n$3\r\nSET\r\n$${k.length}\r\n${k}\r\n`, 'latin1'),
                valueTail,
              ]),
        ),
      );
    },
    parser: () => new PipelineReplyParser(size),
  };
}

function countOf(text: string, needle: string): number {
  let n = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) n++;
  return n;
}

/** `size` RESP replies in a row (+simple, -error, :integer or $bulk): ok when none is an error or nil. */
export class PipelineReplyParser implements ReplyParser {
  private buf: Buffer = Buffer.alloc(0);
  private seen = 0;
  private failed = false;

  constructor(private readonly size: number) {}

  push(chunk: Buffer): Outcome | undefined {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let at = 0;
    while (this.seen < this.size) {
      const eol = this.buf.indexOf('\r\n', at);
      if (eol < 0) break;
      const type = this.buf[at];
      let end = eol + 2;
      if (type === 0x2d /* - */) this.failed = true;
      else if (type === 0x24 /* $ */) {
        const len = Number(this.buf.toString('latin1', at + 1, eol));
        if (len < 0) this.failed = true;
        else end = eol + 2 + len + 2;
      } else if (type !== 0x2b /* + */ && type !== 0x3a /* : */) {
        throw new ProtocolError(`unexpected RESP type ${String.fromCharCode(type)}`);
      }
      if (this.buf.length < end) break;
      at = end;
      this.seen++;
    }
    this.buf = this.buf.subarray(at);
    if (this.seen < this.size) return undefined;
    if (this.buf.length > 0) throw new ProtocolError('bytes after the pipeline with no request outstanding');
    const outcome: Outcome = this.failed ? 'error' : 'ok';
    this.seen = 0;
    this.failed = false;
    return outcome;
  }
}
