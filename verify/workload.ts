import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { KeyValueStoreClient, KvClientError, type Consistency } from '../client';
import type { DeleteOp, FinalRead, GetOp, History, HistoryOp, OpKind, Outcome, PutOp } from './history';

/**
 * The workload behind `kvctl verify` and the fault suite: concurrent clients
 * doing puts, deletes and gets over a small key space, each request recorded
 * with its outcome and times, for history-checker.ts to judge afterwards.
 */

/** ms on one monotonic clock with sub-ms precision; wall-clock jumps cannot reorder a history. */
export function monotonicNow(): number {
  return performance.timeOrigin + performance.now();
}

export class VerifyError extends Error {
  override readonly name = 'VerifyError';
  constructor(
    readonly code: 'not_ready' | 'final_read_failed',
    message: string,
  ) {
    super(message);
  }
}

export interface RequestSettings {
  readonly consistency: Consistency;
  readonly timeoutMs: number;
}

/**
 * Runs requests and records each one. Shared by every phase of a run (the
 * workload, a harness's own writes) so they form one history with unique ids.
 */
export class HistoryRecorder {
  private readonly ops: HistoryOp[] = [];
  private nextId = 1;

  async put(
    kv: KeyValueStoreClient,
    client: string,
    key: string,
    value: string,
    s: RequestSettings,
  ): Promise<PutOp> {
    const id = this.nextId++;
    const start = monotonicNow();
    const base = {
      id,
      client,
      op: 'put' as const,
      key,
      value,
      start,
      consistency: s.consistency,
      timeoutMs: s.timeoutMs,
    };
    let op: PutOp;
    try {
      const { version } = await kv.putEntry(key, value, { consistency: s.consistency });
      op = { ...base, end: monotonicNow(), outcome: 'ok', version };
    } catch (err) {
      op = { ...base, end: monotonicNow(), ...failure(err) };
    }
    this.ops.push(op);
    return op;
  }

  async delete(kv: KeyValueStoreClient, client: string, key: string, s: RequestSettings): Promise<DeleteOp> {
    const id = this.nextId++;
    const start = monotonicNow();
    const base = {
      id,
      client,
      op: 'delete' as const,
      key,
      start,
      consistency: s.consistency,
      timeoutMs: s.timeoutMs,
    };
    let op: DeleteOp;
    try {
      const { version } = await kv.deleteEntry(key, { consistency: s.consistency });
      op = { ...base, end: monotonicNow(), outcome: 'ok', version };
    } catch (err) {
      op = { ...base, end: monotonicNow(), ...failure(err) };
    }
    this.ops.push(op);
    return op;
  }

  async get(kv: KeyValueStoreClient, client: string, key: string, s: RequestSettings): Promise<GetOp> {
    const id = this.nextId++;
    const start = monotonicNow();
    const base = {
      id,
      client,
      op: 'get' as const,
      key,
      start,
      consistency: s.consistency,
      timeoutMs: s.timeoutMs,
    };
    let op: GetOp;
    try {
      const entry = await kv.getEntry(key, { consistency: s.consistency });
      const end = monotonicNow();
      op = entry
        ? { ...base, end, outcome: 'ok', value: entry.value.toString('utf8'), version: entry.version }
        : { ...base, end, outcome: 'ok', value: null };
    } catch (err) {
      op = { ...base, end: monotonicNow(), ...failure(err) };
    }
    this.ops.push(op);
    return op;
  }

  /** Every operation recorded so far, in the order they ended. */
  operations(): readonly HistoryOp[] {
    return this.ops;
  }

  history(final: readonly FinalRead[]): History {
    return { ops: [...this.ops], final: [...final] };
  }
}

/**
 * A request that did not succeed: `timeout` when no answer came in time, else
 * `failed` (an error answer or a broken connection; a write may still apply).
 * Anything but a KvClientError, or a request refused before it was sent, is a
 * bug in the caller and is thrown, not recorded.
 */
function failure(err: unknown): { outcome: Exclude<Outcome, 'ok'>; error: string } {
  if (!(err instanceof KvClientError) || (err.code === 'bad_request' && err.status === undefined)) throw err;
  return { outcome: err.code === 'timeout' ? 'timeout' : 'failed', error: `${err.code}: ${err.message}` };
}

export interface OpMix {
  readonly put: number;
  readonly delete: number;
  readonly get: number;
}

export interface WorkloadOptions {
  readonly url: string;
  /** concurrent clients, each a loop of requests (mixed reads and writes). Default 4. */
  readonly clients?: number;
  /** keys in the key space. Default 16. */
  readonly keys?: number;
  /** run for this long; with maxOps, whichever comes first. One of the two is required. */
  readonly durationMs?: number;
  /** stop after this many requests in total */
  readonly maxOps?: number;
  /** per request deadline. Default 5000 ms. */
  readonly timeoutMs?: number;
  /** Default quorum. */
  readonly consistency?: Consistency;
  /** prepended to every key, so runs never share keys. Default `verify/<random>/`. */
  readonly keyPrefix?: string;
  /** relative weights. Default put 4, delete 1, get 5. */
  readonly mix?: OpMix;
  readonly token?: string;
  /** PEM CA certificate(s) to trust for an https url (the client's `ca`) */
  readonly ca?: string | Buffer;
  /** stops the workload early (requests in flight finish and are recorded) */
  readonly signal?: AbortSignal;
  /** pause after a request that did not succeed, so a dead gateway is not hammered. Default 50 ms. */
  readonly failurePauseMs?: number;
  /** client names are `<clientPrefix><n>`. Default `c`. */
  readonly clientPrefix?: string;
  /** record into this recorder (shared with other phases); a new one by default */
  readonly recorder?: HistoryRecorder;
  readonly random?: () => number;
}

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export interface WorkloadStats {
  readonly operations: number;
  readonly durationMs: number;
  readonly byOp: Record<OpKind, Record<Outcome, number>>;
  /** failed and timed-out requests by error code (unavailable, unreachable, timeout, ...) */
  readonly errors: Record<string, number>;
  /** over every request, whatever its outcome, in ms */
  readonly latency: Record<OpKind | 'all', LatencySummary>;
}

export interface WorkloadResult {
  readonly recorder: HistoryRecorder;
  /** every key the workload used */
  readonly keys: readonly string[];
  readonly stats: WorkloadStats;
  readonly settings: RequestSettings;
}

export const DEFAULT_MIX: OpMix = { put: 4, delete: 1, get: 5 };

export function runId(): string {
  return `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(3).toString('hex')}`;
}

/** Runs the workload until its duration or op count is reached. */
export async function runWorkload(o: WorkloadOptions): Promise<WorkloadResult> {
  if (o.durationMs === undefined && o.maxOps === undefined) {
    throw new RangeError('runWorkload needs durationMs or maxOps');
  }
  const clients = o.clients ?? 4;
  const keyCount = o.keys ?? 16;
  for (const [name, n] of [
    ['clients', clients],
    ['keys', keyCount],
  ] as const) {
    if (!Number.isSafeInteger(n) || n < 1)
      throw new RangeError(`${name} must be a whole number >= 1, got ${n}`);
  }
  const settings: RequestSettings = {
    consistency: o.consistency ?? 'quorum',
    timeoutMs: o.timeoutMs ?? 5000,
  };
  const prefix = o.keyPrefix ?? `verify/${runId()}/`;
  const keys = Array.from({ length: keyCount }, (_, i) => `${prefix}k${i}`);
  const mix = o.mix ?? DEFAULT_MIX;
  const total = mix.put + mix.delete + mix.get;
  if (!(total > 0) || mix.put < 0 || mix.delete < 0 || mix.get < 0) throw new RangeError('bad op mix');
  const random = o.random ?? Math.random;
  const recorder = o.recorder ?? new HistoryRecorder();
  const pause = o.failurePauseMs ?? 50;
  const startedAt = Date.now();
  const deadline = o.durationMs === undefined ? Infinity : startedAt + o.durationMs;
  const firstOp = recorder.operations().length;
  let issued = 0;
  const more = (): boolean =>
    !o.signal?.aborted && Date.now() < deadline && (o.maxOps === undefined || issued < o.maxOps);

  const loop = async (n: number): Promise<void> => {
    const name = `${o.clientPrefix ?? 'c'}${n}`;
    const kv = new KeyValueStoreClient({
      url: o.url,
      timeoutMs: settings.timeoutMs,
      token: o.token,
      ca: o.ca,
    });
    let seq = 0;
    while (more()) {
      issued++;
      const key = keys[Math.floor(random() * keys.length)];
      const roll = random() * total;
      const op =
        roll < mix.put
          ? await recorder.put(kv, name, key, `${name}-${++seq}`, settings)
          : roll < mix.put + mix.delete
            ? await recorder.delete(kv, name, key, settings)
            : await recorder.get(kv, name, key, settings);
      if (op.outcome !== 'ok' && pause > 0 && more()) await sleep(pause);
    }
    // Releases the connections a client with its own CA keeps (a no-op otherwise).
    await kv.close();
  };
  await Promise.all(Array.from({ length: clients }, (_, i) => loop(i + 1)));
  const ops = recorder.operations().slice(firstOp);
  return { recorder, keys, settings, stats: summarize(ops, Date.now() - startedAt) };
}

/**
 * Reads every key once more after the workload ended, retrying a read that
 * fails (a final state is needed for every key). `converged` marks reads made
 * after the cluster converged, which must reflect every acknowledged write.
 */
export async function readFinal(
  kv: KeyValueStoreClient,
  keys: readonly string[],
  o: { consistency: Consistency; source: string; converged?: boolean; attempts?: number; pauseMs?: number },
): Promise<FinalRead[]> {
  const out: FinalRead[] = [];
  const unread: string[] = [];
  const attempts = o.attempts ?? 5;
  for (const key of keys) {
    let last: unknown;
    let done = false;
    for (let i = 0; i < attempts && !done; i++) {
      if (i > 0) await sleep(o.pauseMs ?? 500);
      try {
        const entry = await kv.getEntry(key, { consistency: o.consistency });
        out.push({
          key,
          source: o.source,
          ...(o.converged ? {} : { consistency: o.consistency }),
          ...(entry ? { value: entry.value.toString('utf8'), version: entry.version } : { value: null }),
        });
        done = true;
      } catch (err) {
        if (!(err instanceof KvClientError)) throw err;
        last = err;
      }
    }
    if (!done) unread.push(`${key} (${last instanceof Error ? last.message : String(last)})`);
  }
  if (unread.length > 0) {
    throw new VerifyError(
      'final_read_failed',
      `final read from ${o.source} failed for ${unread.length} key(s): ${unread.slice(0, 5).join('; ')}${unread.length > 5 ? '; ...' : ''}`,
    );
  }
  return out;
}

/** Counts and latency percentiles of a list of operations. Pure. */
export function summarize(ops: readonly HistoryOp[], durationMs: number): WorkloadStats {
  const zero = (): Record<Outcome, number> => ({ ok: 0, failed: 0, timeout: 0 });
  const byOp: Record<OpKind, Record<Outcome, number>> = { put: zero(), delete: zero(), get: zero() };
  const errors: Record<string, number> = {};
  const lat: Record<OpKind | 'all', number[]> = { put: [], delete: [], get: [], all: [] };
  for (const op of ops) {
    byOp[op.op][op.outcome]++;
    if (op.outcome !== 'ok') {
      const code = op.error?.split(':')[0] ?? op.outcome;
      errors[code] = (errors[code] ?? 0) + 1;
    }
    const ms = op.end - op.start;
    lat[op.op].push(ms);
    lat.all.push(ms);
  }
  return {
    operations: ops.length,
    durationMs,
    byOp,
    errors,
    latency: {
      all: latencySummary(lat.all),
      put: latencySummary(lat.put),
      delete: latencySummary(lat.delete),
      get: latencySummary(lat.get),
    },
  };
}

/** Nearest-rank percentiles over a copy of the samples. */
export function latencySummary(samples: readonly number[]): LatencySummary {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (p: number): number =>
    sorted.length === 0 ? 0 : sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
  return {
    count: sorted.length,
    p50: rank(50),
    p99: rank(99),
    max: sorted.length ? sorted[sorted.length - 1] : 0,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
