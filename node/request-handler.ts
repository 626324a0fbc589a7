import { ClockDriftError, type HybridLogicalClock } from '../common/hlc';
import { CorruptDataError, errorMessage, KvError } from '../common/errors';
import type { Logger } from '../common/logger';
import {
  fromWireClock,
  toWireClock,
  type HintWrite,
  type IncomingMoveStatus,
  type InfoReply,
  type KeyRef,
  type ReadReply,
  type RecordWrite,
  type RpcErrorBody,
  type RpcOp,
  type RpcReply,
  type RepairStatus,
  type RpcRequestFrame,
  type RangeReply,
  type ScanReply,
  type WriteReply,
} from '../common/rpc-protocol';
import type { NodeMetrics } from './metrics';
import { StorageError, type Storage } from './storage';

export interface NodeState {
  readonly nodeId: string;
  epoch(): number;
  /** a request came with a newer epoch than ours: go and fetch that map */
  onNewerEpoch(epoch: number): void;
  ready(): boolean;
}

/** Keeps writes for replicas that missed them (node/hinted-handoff.ts). */
export interface HintService {
  store(items: readonly HintWrite[]): Promise<boolean[]>;
  /** hints currently held */
  count(): number;
}

/** Serves and runs anti-entropy (node/anti-entropy.ts). */
export interface RepairService {
  roots(partitions: readonly number[]): Buffer[];
  leaves(partition: number): Buffer;
  bucket(partition: number, bucket: number): { k: Buffer; r: Buffer }[];
  /** starts a pass (if none is running) and returns the status */
  repair(partitions?: readonly number[]): RepairStatus;
  status(): RepairStatus;
}

/** Fills partitions moving to this node (node/partition-receiver.ts). */
export interface MoveService {
  status(): IncomingMoveStatus[];
  streamed(): { keys: number; bytes: number };
}

export interface NodeServices {
  readonly hints?: HintService;
  readonly repair?: RepairService;
  readonly moves?: MoveService;
  /**
   * Bytes of write and hint requests the node holds while they wait for their commit (default
   * DEFAULT_MAX_PENDING_WRITE_BYTES); more is refused at once with `overloaded`, so a flood of large
   * writes cannot grow the node's memory, and the shared connection is never paused for it.
   */
  readonly maxPendingWriteBytes?: number;
}

export const DEFAULT_MAX_PENDING_WRITE_BYTES = 256 * 1024 * 1024;

export class BadRequest extends Error {}

/** Every op of the protocol, as a record so the compiler notices a new one. */
const METRIC_OPS: Readonly<Record<RpcOp, true>> = {
  read: true,
  write: true,
  info: true,
  hint: true,
  'tree-roots': true,
  'tree-leaves': true,
  bucket: true,
  repair: true,
  scan: true,
  range: true,
};

/**
 * Serves the internal API on top of storage. Everything from the wire is
 * checked before it touches the database: a malformed request gets a
 * bad_request reply and changes nothing.
 */
export class NodeRequestHandler {
  constructor(
    private readonly storage: Storage,
    private readonly clock: HybridLogicalClock,
    private readonly state: NodeState,
    private readonly metrics: NodeMetrics,
    private readonly log: Logger,
    private readonly services: NodeServices = {},
  ) {}

  async handle(req: RpcRequestFrame): Promise<RpcReply> {
    // The op names a metric label: only the protocol's ops, so a peer sending junk cannot grow the series.
    const sent: unknown = req?.body?.op;
    const op = typeof sent === 'string' && Object.hasOwn(METRIC_OPS, sent) ? sent : 'unknown';
    const started = process.hrtime.bigint();
    const reply = await this.handleUntimed(req);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const outcome = reply.ok ? 'ok' : reply.error.code;
    // Labelled children looked up once per label set (prom-client still hashes the labels per observation).
    let timer = this.rpcTimers.get(op);
    if (!timer) this.rpcTimers.set(op, (timer = this.metrics.rpcDuration.labels(op)));
    timer.observe(seconds);
    const ckey = `${op} ${outcome}`;
    let counter = this.rpcCounters.get(ckey);
    if (!counter) this.rpcCounters.set(ckey, (counter = this.metrics.rpcRequests.labels(op, outcome)));
    counter.inc();
    return reply;
  }

  private pendingWriteBytes = 0;

  /**
   * Runs a write of `bytes` within the pending-write bound, or refuses it as `overloaded`. One
   * request is always let in when none is pending, so a write larger than the bound still goes.
   */
  private async bounded(bytes: number, run: () => Promise<RpcReply>): Promise<RpcReply> {
    const max = this.services.maxPendingWriteBytes ?? DEFAULT_MAX_PENDING_WRITE_BYTES;
    if (this.pendingWriteBytes > 0 && this.pendingWriteBytes + bytes > max) {
      return this.fail({
        code: 'overloaded',
        message: `${this.state.nodeId} holds ${this.pendingWriteBytes} bytes of writes waiting for their commit (at most ${max}); try another replica or later`,
      });
    }
    this.pendingWriteBytes += bytes;
    try {
      return await run();
    } finally {
      this.pendingWriteBytes -= bytes;
    }
  }

  private readonly rpcTimers = new Map<string, { observe(seconds: number): void }>();
  private readonly rpcCounters = new Map<string, { inc(): void }>();

  private async handleUntimed(req: RpcRequestFrame): Promise<RpcReply> {
    const remoteClock = fromWireClock(req?.clock);
    if (!remoteClock || typeof req.epoch !== 'number' || typeof req.body !== 'object' || req.body === null) {
      return this.fail({ code: 'bad_request', message: 'request lacks clock, epoch or body' });
    }
    try {
      this.clock.observe(remoteClock);
    } catch (err) {
      if (err instanceof ClockDriftError) return this.fail({ code: 'clock_drift', message: err.message });
      throw err;
    }
    const myEpoch = this.state.epoch();
    if (req.epoch < myEpoch) {
      return this.fail({
        code: 'stale_epoch',
        message: `request epoch ${req.epoch} < node epoch ${myEpoch}`,
        epoch: myEpoch,
      });
    }
    if (req.epoch > myEpoch) this.state.onNewerEpoch(req.epoch);
    try {
      switch (req.body.op) {
        case 'read':
          if (!this.state.ready())
            return this.fail({ code: 'not_ready', message: `${this.state.nodeId} is not ready` });
          return this.ok(this.read(checkKeyRefs(req.body.items), checkDigestFlag(req.body.digest)));
        case 'write': {
          const items = checkWrites(req.body.items);
          return await this.bounded(bytesOf(items), async () => this.ok(await this.write(items, req.rid)));
        }
        case 'info':
          return this.ok(this.info());
        case 'hint': {
          const items = checkHints(req.body.items);
          const hints = this.service('hints');
          return await this.bounded(bytesOf(items), async () =>
            this.ok({ stored: await hints.store(items) }),
          );
        }
        case 'tree-roots':
          return this.ok({ roots: this.service('repair').roots(checkPartitions(req.body.partitions)) });
        case 'tree-leaves':
          return this.ok({ leaves: this.service('repair').leaves(checkPartition(req.body.p)) });
        case 'bucket':
          return this.ok({
            items: this.service('repair').bucket(checkPartition(req.body.p), checkInt(req.body.b, 'b')),
          });
        case 'repair':
          return this.ok(
            this.service('repair').repair(
              req.body.partitions === undefined ? undefined : checkPartitions(req.body.partitions),
            ),
          );
        case 'scan':
          return this.ok(
            this.scan(
              checkPartition(req.body.p),
              req.body.after,
              checkRange(req.body.limit, 'limit', MAX_ITEMS),
              checkRange(req.body.maxBytes, 'maxBytes', MAX_SCAN_BYTES),
            ),
          );
        case 'range':
          if (!this.state.ready())
            return this.fail({ code: 'not_ready', message: `${this.state.nodeId} is not ready` });
          return this.ok(this.range(req.body));
        default:
          return this.fail({
            code: 'bad_request',
            message: `unknown op ${JSON.stringify((req.body as { op?: unknown }).op)}`,
          });
      }
    } catch (err) {
      // The disk is full or failed a commit: said as such, so the gateway answers 507 or tries elsewhere.
      if (
        err instanceof StorageError &&
        (err.code === 'insufficient_storage' || err.code === 'write_failed')
      ) {
        return this.fail({ code: err.code, message: `${this.state.nodeId}: ${err.message}` });
      }
      if (err instanceof BadRequest || err instanceof CorruptDataError || err instanceof StorageError) {
        return this.fail({ code: 'bad_request', message: errorMessage(err) });
      }
      // A service that cannot answer yet (anti-entropy building its trees): the caller retries later.
      if (err instanceof KvError && err.code === 'not_ready')
        return this.fail({ code: 'not_ready', message: err.message });
      throw err;
    }
  }

  private read(items: readonly KeyRef[], digest: boolean): ReadReply {
    if (digest) return { records: items.map((i) => this.storage.getDigest(i.p, i.k) ?? null) };
    return { records: items.map((i) => this.storage.getEncoded(i.p, i.k) ?? null) };
  }

  private async write(items: readonly RecordWrite[], rid: string | undefined): Promise<WriteReply> {
    const applied = await this.storage.apply(items.map((i) => ({ partition: i.p, key: i.k, record: i.r })));
    let n = 0;
    for (const a of applied) if (a) n++;
    this.metrics.recordsWritten.inc({ result: 'applied' }, n);
    if (applied.length - n) this.metrics.recordsWritten.inc({ result: 'superseded' }, applied.length - n);
    this.log.debug({ rid, records: items.length, applied: n }, 'write');
    return { applied };
  }

  /** A batch of a partition's records in key order, for a node receiving the partition by a move. */
  private scan(p: number, after: unknown, limit: number, maxBytes: number): ScanReply {
    if (after !== undefined && (!Buffer.isBuffer(after) || after.length === 0)) {
      throw new BadRequest('after must be non-empty key bytes');
    }
    const batch = this.storage.scan(p, { afterKey: after, limit });
    const items: { k: Buffer; r: Buffer }[] = [];
    let bytes = 0;
    for (const { key, raw } of batch) {
      if (items.length > 0 && bytes + key.length + raw.length > maxBytes) break;
      items.push({ k: key, r: raw });
      bytes += key.length + raw.length;
    }
    return { items, more: items.length < batch.length || batch.length === limit };
  }

  /** A page of a listing: the records of the partitions asked, in key order (Storage.range). */
  private range(body: Extract<RpcRequestFrame['body'], { op: 'range' }>): RangeReply {
    if (!Array.isArray(body.partitions) || body.partitions.length === 0 || body.partitions.length > 65536) {
      throw new BadRequest('partitions must be an array of 1..65536');
    }
    const partitions = body.partitions.map(checkPartition);
    const start = checkKeyBound(body.start, 'start', true);
    const end = body.end === undefined ? undefined : checkKeyBound(body.end, 'end', false);
    const after = body.after === undefined ? undefined : checkKeyBound(body.after, 'after', false);
    if (end !== undefined && Buffer.compare(start, end) >= 0) throw new BadRequest('end must be after start');
    const { items, more } = this.storage.range(partitions, end === undefined ? { start } : { start, end }, {
      ...(after === undefined ? {} : { after }),
      limit: checkRange(body.limit, 'limit', MAX_ITEMS),
      maxBytes: checkRange(body.maxBytes, 'maxBytes', MAX_SCAN_BYTES),
      digest: checkDigestFlag(body.digest),
    });
    return { items, more };
  }

  private info(): InfoReply {
    const stats = this.storage.stats();
    const moves = this.services.moves;
    const streamed = moves?.streamed();
    return {
      nodeId: this.state.nodeId,
      epoch: this.state.epoch(),
      keys: stats.keys,
      bytes: stats.bytes,
      ready: this.state.ready(),
      ...(this.services.hints ? { hints: this.services.hints.count() } : {}),
      ...(this.services.repair ? { repair: this.services.repair.status() } : {}),
      ...(moves && streamed
        ? { incoming: moves.status(), streamedKeys: streamed.keys, streamedBytes: streamed.bytes }
        : {}),
    };
  }

  private service<K extends keyof NodeServices>(name: K): NonNullable<NodeServices[K]> {
    const s = this.services[name];
    if (!s) throw new BadRequest(`this node does not serve ${name}`);
    return s as NonNullable<NodeServices[K]>;
  }

  private ok(body: unknown): RpcReply {
    return { ok: true, clock: toWireClock(this.clock.stamp()), body };
  }

  private fail(error: RpcErrorBody): RpcReply {
    return { ok: false, clock: toWireClock(this.clock.stamp()), error };
  }
}

const MAX_ITEMS = 10_000;

function bytesOf(items: readonly { readonly k: Buffer; readonly r: Buffer }[]): number {
  let n = 0;
  for (const i of items) n += i.k.length + i.r.length;
  return n;
}
/** One scan reply stays well inside the 64 MiB frame limit. */
const MAX_SCAN_BYTES = 16 * 1024 * 1024;

function checkRange(v: unknown, name: string, max: number): number {
  if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max) {
    throw new BadRequest(`${name} must be an integer in 1..${max}`);
  }
  return v as number;
}

function checkItems(items: unknown): unknown[] {
  if (!Array.isArray(items) || items.length === 0 || items.length > MAX_ITEMS) {
    throw new BadRequest(`items must be an array of 1..${MAX_ITEMS}`);
  }
  return items;
}

function checkKeyRef(i: unknown): KeyRef {
  const r = i as Partial<KeyRef> | null;
  if (!r || !Number.isInteger(r.p) || !Buffer.isBuffer(r.k) || r.k.length === 0) {
    throw new BadRequest('each item needs an integer partition p and non-empty key bytes k');
  }
  return r as KeyRef;
}

function checkDigestFlag(digest: unknown): boolean {
  if (digest === undefined) return false;
  if (typeof digest !== 'boolean') throw new BadRequest('digest must be true or false');
  return digest;
}

function checkKeyRefs(items: unknown): KeyRef[] {
  return checkItems(items).map(checkKeyRef);
}

/** Key bytes bounding a range; only `start` may be empty (the beginning of the key space). */
function checkKeyBound(v: unknown, name: string, mayBeEmpty: boolean): Buffer {
  if (!Buffer.isBuffer(v) || (!mayBeEmpty && v.length === 0)) {
    throw new BadRequest(`${name} must be ${mayBeEmpty ? '' : 'non-empty '}key bytes`);
  }
  return v;
}

function checkInt(v: unknown, name: string): number {
  if (!Number.isInteger(v) || (v as number) < 0)
    throw new BadRequest(`${name} must be a non-negative integer`);
  return v as number;
}

function checkPartition(p: unknown): number {
  const n = checkInt(p, 'partition');
  if (n > 65535) throw new BadRequest(`partition ${n} out of range`);
  return n;
}

function checkPartitions(ps: unknown): number[] {
  return checkItems(ps).map(checkPartition);
}

function checkHints(items: unknown): HintWrite[] {
  return checkWrites(items).map((w, i) => {
    const t = ((items as unknown[])[i] as { t?: unknown }).t;
    if (typeof t !== 'string' || t.length === 0) throw new BadRequest('each hint needs a target node id t');
    return { ...w, t };
  });
}

function checkWrites(items: unknown): RecordWrite[] {
  return checkItems(items).map((i) => {
    const ref = checkKeyRef(i);
    if (!Buffer.isBuffer((i as RecordWrite).r)) throw new BadRequest('each write needs record bytes r');
    return { ...ref, r: (i as RecordWrite).r };
  });
}
