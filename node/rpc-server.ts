import net from 'node:net';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import { encodeFrame, FrameDecoder } from '../common/rpc-frame';
import type { RpcReply, RpcRequestFrame } from '../common/rpc-protocol';

export type RpcHandler = (req: RpcRequestFrame) => Promise<RpcReply>;

/**
 * The node's internal listener: length-prefixed msgpack frames, many requests in
 * flight per connection, replies in completion order. Replies finished in the same
 * turn go out in one write. A peer that sends an undecodable frame is disconnected;
 * it never takes the process down.
 */
export class RpcServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly handler: RpcHandler,
    private readonly log: Logger,
  ) {
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
    const decoder = new FrameDecoder();
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
        if (!socket.destroyed && frames.length)
          socket.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
      });
    };
    socket.on('data', (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        this.log.warn(
          { err: errorMessage(err), peer: socket.remoteAddress },
          'undecodable frame; closing connection',
        );
        socket.destroy();
        return;
      }
      for (const m of messages) void this.dispatch(m, send);
    });
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'rpc connection error'));
    socket.on('close', () => this.sockets.delete(socket));
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
    try {
      send(encodeFrame({ id, ...reply }));
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
