import net from 'node:net';
import { errorMessage } from '../common/errors';
import { InternalTokenVerifier } from '../common/internal-token';
import type { Logger } from '../common/logger';
import { announcedFormat, RECORD_FORMAT, replyForFormat } from '../common/record-format';
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES, writeFrames } from '../common/rpc-frame';
import {
  isAuthFrame,
  MAX_AUTH_FRAME_BYTES,
  type RpcOp,
  type RpcReply,
  type RpcReplyFrame,
  type RpcRequestFrame,
} from '../common/rpc-protocol';

export type RpcHandler = (req: RpcRequestFrame) => Promise<RpcReply>;

/** Why a connection was refused: it sent no auth frame first, or one with another token. */
export type RpcAuthFailure = 'missing_token' | 'wrong_token';

export interface RpcServerAuth {
  /** the cluster's internal token (or tokens, during a rotation): every connection must present one first */
  readonly token: string | readonly string[];
  /** called once per refused connection (a metric) */
  readonly onFailure?: (reason: RpcAuthFailure) => void;
  /** how long a new connection may stay silent before it must have sent its auth frame (default 10 s) */
  readonly authTimeoutMs?: number;
}

/** A refused connection is closed by us after its replies; if the peer never closes its side, it goes after this. */
const REFUSED_LINGER_MS = 5000;
const DEFAULT_AUTH_TIMEOUT_MS = 10_000;
/** What a refused connection may still send while it waits for its replies: enough for any request batch worth answering. */
const MAX_REFUSED_BYTES = 1024 * 1024;

/**
 * The node's internal listener: length-prefixed msgpack frames, many requests in
 * flight per connection, replies in completion order. Replies finished in the same
 * turn go out in one write. A peer that sends an undecodable frame is disconnected;
 * it never takes the process down.
 *
 * With `auth`, a connection's first frame must carry the cluster's internal token
 * (rpc-protocol's RpcAuthFrame). Until it has, no handler runs: each request gets an
 * `unauthorized` reply and the connection is closed once they are written.
 */
export class RpcServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly verifier: InternalTokenVerifier | undefined;

  constructor(
    private readonly handler: RpcHandler,
    private readonly log: Logger,
    private readonly auth?: RpcServerAuth,
  ) {
    this.verifier = auth ? new InternalTokenVerifier(auth.token) : undefined;
    this.server = net.createServer({ noDelay: true }, (socket) => this.onConnection(socket));
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private onConnection(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.setKeepAlive(true, 10_000);
    const verifier = this.verifier;
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    let state: 'authenticating' | 'open' | 'refused' = verifier ? 'authenticating' : 'open';
    const decoder = new FrameDecoder(MAX_FRAME_BYTES, verifier ? MAX_AUTH_FRAME_BYTES : undefined);
    let timer: NodeJS.Timeout | undefined;
    if (verifier) {
      // A silent connection must not hold a socket forever without ever authenticating.
      timer = setTimeout(() => {
        if (state !== 'authenticating') return;
        this.authFailed('missing_token', peer, 'no auth frame in time');
        socket.destroy();
      }, this.auth?.authTimeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS);
      timer.unref();
    }
    let outbox: Buffer[] = [];
    let flushScheduled = false;
    const send = (frame: Buffer): void => {
      outbox.push(frame);
      if (flushScheduled) return;
      flushScheduled = true;
      setImmediate(() => {
        flushScheduled = false;
        const frames = outbox;
        outbox = [];
        if (!socket.destroyed && frames.length) writeFrames(socket, frames);
      });
    };
    // Refused: requests still get `unauthorized` until one batch of replies is written (an auth
    // frame and the first requests may arrive in separate reads); then the rest is read and dropped,
    // so closing does not reset the connection (and lose the replies) over unread bytes.
    let refusedFor: RpcAuthFailure | undefined;
    let refusedBytes = 0;
    let replied = false;
    const refuse = (reason: RpcAuthFailure, detail: string): void => {
      clearTimeout(timer);
      this.authFailed(reason, peer, detail);
      state = 'refused';
      refusedFor = reason;
      timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
      timer.unref();
    };
    socket.on('data', (chunk: Buffer) => {
      if (state === 'refused') {
        if (replied) return;
        refusedBytes += chunk.length;
        if (refusedBytes > MAX_REFUSED_BYTES) {
          socket.destroy();
          return;
        }
      }
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        if (state === 'authenticating') {
          clearTimeout(timer);
          this.authFailed('missing_token', peer, `first frame is not an auth frame (${errorMessage(err)})`);
        } else if (state === 'open') {
          this.log.warn({ err: errorMessage(err), peer }, 'undecodable frame; closing connection');
        }
        socket.destroy();
        return;
      }
      const refusals: Buffer[] = [];
      for (const m of messages) {
        if (state === 'authenticating') {
          if (isAuthFrame(m) && verifier?.matches(m.auth)) {
            clearTimeout(timer);
            state = 'open';
            continue;
          }
          if (isAuthFrame(m)) refuse('wrong_token', 'wrong token');
          else refuse('missing_token', 'no auth frame first');
        }
        if (state === 'refused') {
          if (!isAuthFrame(m)) refusals.push(unauthorizedReply(m, refusedFor ?? 'missing_token'));
          continue;
        }
        // A node without a token ignores auth frames, as does one that has checked the first.
        if (isAuthFrame(m)) continue;
        void this.dispatch(m, send);
      }
      if (refusals.length > 0) {
        replied = true;
        socket.end(Buffer.concat(refusals));
      }
    });
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'rpc connection error'));
    socket.on('close', () => {
      clearTimeout(timer);
      this.sockets.delete(socket);
    });
  }

  private authFailed(reason: RpcAuthFailure, peer: string, detail: string): void {
    // The peer's address, never what it sent: a wrong token may be a real one mistyped.
    this.log.warn({ peer, reason }, `rpc connection refused: ${detail}`);
    this.auth?.onFailure?.(reason);
  }

  private async dispatch(message: unknown, send: (frame: Buffer) => void): Promise<void> {
    const req = message as RpcRequestFrame;
    const id = typeof req?.id === 'number' ? req.id : 0;
    let reply: RpcReply;
    try {
      reply = await this.handler(req);
    } catch (err) {
      this.log.error({ err, rid: req?.rid }, 'rpc handler failed');
      reply = { ok: false, clock: [0, 0], error: { code: 'internal', message: errorMessage(err) } };
    }
    // A caller of an older release gets records it can read (common/record-format.ts), and every
    // caller learns what this node reads.
    if (reply.ok) {
      const op = (req?.body as { op?: RpcOp } | undefined)?.op;
      reply = { ...reply, body: replyForFormat(op, reply.body, announcedFormat(req?.rf)) };
    }
    try {
      send(encodeFrame({ id, rf: RECORD_FORMAT, ...reply }));
    } catch (err) {
      this.log.error({ err, rid: req?.rid }, 'cannot encode rpc reply');
      send(
        encodeFrame({
          id,
          ok: false,
          clock: reply.clock,
          error: { code: 'internal', message: errorMessage(err) },
        }),
      );
    }
  }
}

/** The answer to a request on a connection that did not authenticate: no handler ran, nothing was read or written. */
function unauthorizedReply(message: unknown, reason: RpcAuthFailure): Buffer {
  const rawId = (message as { id?: unknown } | null)?.id;
  const reply: RpcReplyFrame = {
    id: typeof rawId === 'number' ? rawId : 0,
    ok: false,
    clock: [0, 0],
    error: {
      code: 'unauthorized',
      message:
        reason === 'wrong_token'
          ? "the token presented is not this cluster's internal token"
          : "this node's internal API requires the cluster's internal token",
    },
  };
  return encodeFrame(reply);
}
