import net from 'node:net';
import { KvError } from './errors';
import type { HybridLogicalClock } from './hlc';
import type { Logger } from './logger';
import { encodeFrame, FrameDecoder, writeFrames } from './rpc-frame';
import {
  announcedFormat,
  needsFormat2,
  RECORD_FORMAT,
  requestForFormat,
  type RecordFormat,
} from './record-format';
import {
  fromWireClock,
  toWireClock,
  type NodeStatus,
  type ReplyByOp,
  type RpcAuthFrame,
  type RpcErrorBody,
  type RpcOp,
  type RpcReplyFrame,
  type RpcRequestBody,
} from './rpc-protocol';

export type RpcFailure = 'unavailable' | 'timeout' | 'remote';

export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024;
/** Requests unanswered this long, with no answer to anything meanwhile, mark a node down (RpcClient.status). */
export const STALL_MS = 3000;

/** A call to one node that did not succeed. `remote` carries the node's own error (e.g. stale_epoch). */
export class RpcError extends KvError {
  constructor(
    readonly failure: RpcFailure,
    readonly nodeId: string,
    message: string,
    readonly remote?: RpcErrorBody,
    options?: { cause?: unknown },
  ) {
    super(
      failure === 'remote' ? (remote?.code ?? 'internal') : `rpc_${failure}`,
      message,
      { nodeId, failure },
      options,
    );
  }
}

/**
 * The epoch a replica that refused a request as stale says it holds; undefined for other
 * errors. A node that omits it (it always sends it) still means "newer than yours": 0 makes the
 * caller reload without a floor.
 */
export function staleEpochOf(err: unknown): number | undefined {
  if (!(err instanceof RpcError) || err.remote?.code !== 'stale_epoch') return undefined;
  return typeof err.remote.epoch === 'number' ? err.remote.epoch : 0;
}

/**
 * The write a call carried missed that replica and is worth a hint: the node was down, did not
 * answer in time, was overloaded, or had no room or a failed commit (it takes the hint's replay
 * once it can).
 * Another refusal (bad request, stale epoch) is not a miss: a hint would be refused the same way.
 */
export function missedNode(err: unknown): boolean {
  if (!(err instanceof RpcError)) return false;
  if (err.failure === 'unavailable' || err.failure === 'timeout') return true;
  if (err.failure === 'remote' && err.remote?.code === 'overloaded') return true;
  return isStorageRefusal(err);
}

/** The node refused a write for its disk: no room under the watermark, or a failed commit. */
export function isStorageRefusal(err: unknown): boolean {
  return (
    err instanceof RpcError &&
    err.failure === 'remote' &&
    (err.remote?.code === 'insufficient_storage' || err.remote?.code === 'write_failed')
  );
}

export interface RpcClientOptions {
  readonly nodeId: string;
  readonly address: string;
  readonly clock: HybridLogicalClock;
  /** current map epoch, read on every request */
  readonly epoch: () => number;
  readonly timeoutMs: number;
  readonly connectTimeoutMs?: number;
  /**
   * Bytes of requests waiting to be written to the node at most (default 64 MiB): past it a call
   * fails at once as `unavailable` instead of joining a backlog it would time out in, whose frames
   * would stay in memory after their callers gave up.
   */
  readonly maxQueuedBytes?: number;
  readonly log?: Logger;
  /**
   * the cluster's internal token (common/internal-token.ts), presented once per connection;
   * a node that requires it answers every request without it with `unauthorized`
   */
  readonly token?: string;
}

interface Pending {
  resolve(body: unknown): void;
  reject(err: RpcError): void;
  timer: NodeJS.Timeout;
}

// Defined with the protocol so that common/rest-replies (and the client package) need no RPC code.
export type { NodeStatus } from './rpc-protocol';

/**
 * One multiplexed connection to a node. Requests issued in the same tick are
 * written together (one syscall, one TCP segment when they fit); replies are
 * matched by id, so a slow request never blocks the ones behind it.
 */
export class RpcClient {
  private socket: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  /** when the node last answered anything; when the pending requests began (pending was empty before) */
  private lastAnswerAt = 0;
  private pendingSince = 0;
  private flushScheduled = false;
  private lastStatus: NodeStatus = 'unknown';
  private closed = false;
  private readonly authFrame: Buffer | undefined;
  /** What the node on the current connection reads (its replies say); undefined until one arrives. */
  private peerFormat: RecordFormat | undefined;
  /** An `info` call asking the node its format, while one is out. */
  private probe: Promise<void> | undefined;

  constructor(private readonly opts: RpcClientOptions) {
    const auth: RpcAuthFrame | undefined = opts.token === undefined ? undefined : { auth: opts.token };
    this.authFrame = auth && encodeFrame(auth);
  }

  get nodeId(): string {
    return this.opts.nodeId;
  }

  get address(): string {
    return this.opts.address;
  }

  /**
   * From answers, not from the connection alone: `down` when the connection failed, and also when
   * requests have waited STALL_MS with no answer at all (a stopped or hung process keeps its socket
   * open). A slow node that still answers something stays `up`.
   */
  status(): NodeStatus {
    if (this.lastStatus === 'up' && this.pending.size > 0) {
      const waitingSince = Math.max(this.lastAnswerAt, this.pendingSince);
      if (Date.now() - waitingSince > STALL_MS) return 'down';
    }
    return this.lastStatus;
  }

  /** Requests sent and not answered yet: a node that stalls piles them up. */
  get inFlight(): number {
    return this.pending.size;
  }

  call<Op extends RpcOp>(body: Extract<RpcRequestBody, { op: Op }>, rid?: string): Promise<ReplyByOp[Op]> {
    if (this.closed) return Promise.reject(new RpcError('unavailable', this.opts.nodeId, 'client closed'));
    // Records with content types go only to a node known to read them: the first such write on a
    // connection waits for one round trip that asks (a node of an older release would refuse them).
    if (this.peerFormat === undefined && needsFormat2(body)) {
      return this.learnFormat().then(() => this.send(body, rid));
    }
    return this.send(body, rid);
  }

  private learnFormat(): Promise<void> {
    this.probe ??= this.send({ op: 'info' }).then(
      () => {
        this.probe = undefined;
      },
      () => {
        // Unreachable or slow: the write goes as a format-1 node could read it (and fails the same way).
        this.probe = undefined;
      },
    );
    return this.probe;
  }

  private send<Op extends RpcOp>(
    body: Extract<RpcRequestBody, { op: Op }>,
    rid?: string,
  ): Promise<ReplyByOp[Op]> {
    if (this.closed) return Promise.reject(new RpcError('unavailable', this.opts.nodeId, 'client closed'));
    const queued = this.queuedBytes();
    const maxQueued = this.opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    if (queued > maxQueued) {
      return Promise.reject(
        new RpcError(
          'unavailable',
          this.opts.nodeId,
          `${this.opts.nodeId} is behind: ${queued} bytes of requests wait to be sent to it (at most ${maxQueued})`,
        ),
      );
    }
    const id = this.nextId++;
    if (this.nextId > 0x7fffffff) this.nextId = 1;
    const frame = encodeFrame({
      id,
      epoch: this.opts.epoch(),
      clock: toWireClock(this.opts.clock.stamp()),
      ...(rid ? { rid } : {}),
      rf: RECORD_FORMAT,
      body: requestForFormat(body, this.peerFormat ?? 1),
    });
    return new Promise<ReplyByOp[Op]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new RpcError(
            'timeout',
            this.opts.nodeId,
            `${body.op} to ${this.opts.nodeId} timed out after ${this.opts.timeoutMs} ms`,
          ),
        );
      }, this.opts.timeoutMs);
      if (this.pending.size === 0) this.pendingSince = Date.now();
      this.pending.set(id, { resolve: resolve as (b: unknown) => void, reject, timer });
      this.outbox.push(frame);
      this.outboxBytes += frame.length;
      this.scheduleFlush();
    });
  }

  /** Request bytes not yet handed to the kernel: in the outbox and in the socket's write buffer. */
  private queuedBytes(): number {
    return (this.socket?.writableLength ?? 0) + this.outboxBytes;
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.failAll(new RpcError('unavailable', this.opts.nodeId, 'client closed'));
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.outbox.length === 0) return;
    let socket: net.Socket;
    try {
      socket = await this.connected();
    } catch (err) {
      this.outbox = [];
      this.outboxBytes = 0;
      this.failAll(err as RpcError);
      return;
    }
    const frames = this.outbox;
    this.outbox = [];
    this.outboxBytes = 0;
    if (frames.length === 0) return;
    writeFrames(socket, frames);
  }

  private connected(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    const { host, port } = splitAddress(this.opts.address);
    this.connecting = new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host, port, noDelay: true });
      const connectTimeoutMs = this.opts.connectTimeoutMs ?? this.opts.timeoutMs;
      const connectTimer = setTimeout(() => {
        socket.destroy(new Error(`connect timed out after ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      let settled = false;
      const failConnect = (reason: string, cause?: unknown): void => {
        clearTimeout(connectTimer);
        if (settled) return;
        settled = true;
        this.connecting = undefined;
        this.lastStatus = 'down';
        reject(
          new RpcError(
            'unavailable',
            this.opts.nodeId,
            `cannot reach ${this.opts.nodeId} at ${this.opts.address}: ${reason}`,
            undefined,
            { cause },
          ),
        );
      };
      const decoder = new FrameDecoder();
      socket.once('connect', () => {
        clearTimeout(connectTimer);
        settled = true;
        socket.setKeepAlive(true, 10_000);
        // First on the connection, ahead of any request (written before anyone can flush to it).
        if (this.authFrame) socket.write(this.authFrame);
        this.socket = socket;
        this.connecting = undefined;
        this.lastStatus = 'up';
        resolve(socket);
      });
      socket.on('data', (chunk: Buffer) => {
        let messages: unknown[];
        try {
          messages = decoder.push(chunk);
        } catch (err) {
          this.opts.log?.error({ err, node: this.opts.nodeId }, 'undecodable reply; dropping connection');
          socket.destroy();
          return;
        }
        for (const m of messages) this.onReply(m as RpcReplyFrame);
      });
      socket.on('error', (err) => failConnect(err.message, err));
      socket.on('close', () => {
        failConnect('connection closed');
        if (this.socket === socket) {
          this.socket = undefined;
          // The next connection may reach another release of the node (a rolling upgrade): ask again.
          this.peerFormat = undefined;
          if (!this.closed) this.lastStatus = 'down';
          this.failAll(
            new RpcError('unavailable', this.opts.nodeId, `connection to ${this.opts.nodeId} closed`),
          );
        }
      });
    });
    return this.connecting;
  }

  private onReply(reply: RpcReplyFrame): void {
    const clock = fromWireClock(reply?.clock);
    if (clock) {
      try {
        this.opts.clock.observe(clock);
      } catch (err) {
        this.opts.log?.warn({ err, node: this.opts.nodeId }, 'ignoring clock of a node far ahead of ours');
      }
    }
    this.peerFormat = announcedFormat(reply?.rf);
    const p = this.pending.get(reply?.id);
    if (!p) return; // timed out already
    this.pending.delete(reply.id);
    clearTimeout(p.timer);
    this.lastStatus = 'up';
    this.lastAnswerAt = Date.now();
    if (reply.ok) {
      p.resolve(reply.body);
    } else {
      const e = reply.error;
      const err = new RpcError(
        'remote',
        this.opts.nodeId,
        `${this.opts.nodeId}: ${e?.code}: ${e?.message}`,
        e,
      );
      p.reject(err);
      // The node refuses this client's credential: it closes the connection and answers nothing
      // more on it, and would refuse every other request the same way. Fail them all now, and let
      // the next call connect afresh (a token rotated meanwhile would be read by a new client).
      if (e?.code === 'unauthorized') this.dropConnection(err);
    }
  }

  private dropConnection(err: RpcError): void {
    const socket = this.socket;
    this.socket = undefined;
    this.peerFormat = undefined;
    socket?.destroy();
    this.outbox = [];
    this.outboxBytes = 0;
    this.failAll(err);
  }

  private failAll(err: RpcError): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
  }
}

export function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new KvError('bad_address', `not a host:port address: ${address}`, { address });
  }
  return { host, port };
}
