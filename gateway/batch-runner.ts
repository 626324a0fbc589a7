import { requiredAcks, type Consistency } from '../common/consistency';
import { KvError } from '../common/errors';
import { partitionOf } from '../common/hash';
import type { HybridLogicalClock, Version } from '../common/hlc';
import type { Logger } from '../common/logger';
import { pendingReplicasOf, replicasOf, type PartitionMap } from '../common/partition-map';
import { decodeRecord, encodeRecord, isLive, type KvRecord } from '../common/record';
import { missedNode } from '../common/rpc-client';
import type {
  HintReply,
  HintWrite,
  KeyRef,
  ReadReply,
  RecordWrite,
  WriteReply,
} from '../common/rpc-protocol';
import { ApiError } from './api-error';
import type { GatewayMetrics } from './metrics';
import { levelSettled, type Outcome, type Shortfall } from './quorum';
import { resolveRead, staleReplicas, type ReadAnswer } from './read-resolution';

/** One operation of a batch (POST /v1/batch), its input checked. */
export type BatchItem =
  | { readonly op: 'get'; readonly key: Buffer }
  | {
      readonly op: 'put';
      readonly key: Buffer;
      readonly value: Buffer;
      readonly ttlSeconds?: number;
      readonly contentType?: string;
    }
  | { readonly op: 'delete'; readonly key: Buffer };

/** What one operation of a batch came to: the record read (undefined: absent), the version written, or why not. */
export type BatchOutcome =
  | { readonly ok: true; readonly op: 'get'; readonly record: KvRecord | undefined }
  | { readonly ok: true; readonly op: 'put' | 'delete'; readonly version: Version }
  | { readonly ok: false; readonly error: ApiError };

/** What a batch needs of the coordinator: its map, replica order, counted RPCs, hints and errors. */
export interface BatchRunnerDeps {
  current(): PartitionMap | undefined;
  /** reload the map, to at least `epoch` (0: any newer one) */
  refresh(epoch: number): Promise<PartitionMap | undefined>;
  /** replicas in the order a read asks them (least busy first) */
  order(replicas: readonly string[]): string[];
  read(node: string, items: readonly KeyRef[], rid?: string): Promise<ReadReply>;
  write(node: string, items: readonly RecordWrite[], rid?: string): Promise<WriteReply>;
  hint(node: string, items: readonly HintWrite[], rid?: string): Promise<HintReply>;
  /** hinted handoff of one write, trying every holder in turn: the fallback when a grouped hint fails */
  leaveHints(p: number, key: Buffer, encoded: Buffer, outcome: Outcome<unknown>, rid?: string): Promise<void>;
  /** the 503 of a key short of its level, as a single request gets it */
  shortfall(
    op: string,
    o: BatchOptions,
    p: number,
    rf: number,
    need: number,
    outcome: Outcome<unknown>,
  ): Shortfall;
  readonly clock: HybridLogicalClock;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  readonly now: () => number;
  /** a read round short of its level after this long asks one more replica for each key still short */
  readonly hedgeAfterMs?: number;
}

export interface BatchOptions {
  readonly consistency: Consistency;
  readonly rid?: string;
}

const MAX_STALE_RETRIES = 8;

/** A key's state in one attempt of a round: whom it asked, and what came back. */
interface Slot<T> {
  readonly i: number;
  readonly p: number;
  readonly key: Buffer;
  /** every replica it may ask, in the order it asks them */
  readonly targets: readonly string[];
  readonly need: number;
  asked: number;
  readonly ok: [string, T][];
  readonly failed: [string, unknown][];
  decided: boolean;
}

/**
 * POST /v1/batch (docs/design.md, "Public API"): many keys, not atomically, at the cost of a few RPCs.
 * The operations run in rounds, the n-th operation on each key in round n, so operations on one key
 * take effect in the order given; a round's operations are on different keys and run together.
 * A round sends each replica node one write RPC carrying every write it is a replica for, and one
 * read RPC carrying every key it is asked to read (in full: the values of a key's R answers are
 * compared directly, with no digest round trip). Each key is then decided as a single request is:
 * writes by W durable acks (plus one per replica a move is filling), reads by the newest of R
 * answers, a node that fails or stays silent past the hedge replaced by the next replica, stale
 * replicas repaired and missed ones left hints, all grouped per node again. A key short of its level
 * gets the 503 a single request would, and a replica saying the map is stale retries those keys
 * with the newer map.
 */
export class BatchRunner {
  constructor(private readonly deps: BatchRunnerDeps) {}

  async run(items: readonly BatchItem[], opts: BatchOptions): Promise<BatchOutcome[]> {
    const out = new Array<BatchOutcome | undefined>(items.length);
    for (const round of rounds(items)) {
      const reads = round.filter((i) => items[i].op === 'get');
      const writes = round.filter((i) => items[i].op !== 'get');
      await Promise.all([
        reads.length > 0 ? this.readRound(items, reads, opts, out) : undefined,
        writes.length > 0 ? this.writeRound(items, writes, opts, out) : undefined,
      ]);
    }
    return out.map((o, i) => {
      if (o) return o;
      throw new ApiError(500, 'internal', `batch operation ${i} was never decided`);
    });
  }

  private async writeRound(
    items: readonly BatchItem[],
    idx: readonly number[],
    opts: BatchOptions,
    out: Array<BatchOutcome | undefined>,
  ): Promise<void> {
    // Versions in the order given; the same version on a retry keeps the retry idempotent.
    const records = new Map<number, { version: Version; encoded: Buffer }>();
    for (const i of idx) {
      const rec = recordOf(items[i], this.deps.clock.now());
      records.set(i, { version: rec.version, encoded: encodeRecord(rec) });
    }
    await this.withRetry(idx, opts, out, 'write', (map, pending) =>
      this.writeOnce(map, items, pending, records, opts),
    );
    for (const i of idx) {
      if (out[i]) continue;
      const op = items[i].op === 'delete' ? 'delete' : 'put';
      out[i] = { ok: true, op, version: (records.get(i) as { version: Version }).version };
    }
  }

  private async readRound(
    items: readonly BatchItem[],
    idx: readonly number[],
    opts: BatchOptions,
    out: Array<BatchOutcome | undefined>,
  ): Promise<void> {
    const read = new Map<number, KvRecord | undefined>();
    await this.withRetry(idx, opts, out, 'get', (map, pending) =>
      this.readOnce(map, items, pending, read, opts),
    );
    const now = this.deps.now();
    for (const i of idx) {
      if (out[i]) continue;
      const rec = read.get(i);
      out[i] = { ok: true, op: 'get', record: isLive(rec, now) ? rec : undefined };
    }
  }

  /**
   * Runs `attempt` over the keys still short, with a newer map each time a replica says ours is
   * stale (or a newer one is held by then), as the single-key path does; keys still short after
   * that get their 503 in `out`.
   */
  private async withRetry(
    idx: readonly number[],
    opts: BatchOptions,
    out: Array<BatchOutcome | undefined>,
    op: 'get' | 'write',
    attempt: (map: PartitionMap, pending: readonly number[]) => Promise<Map<number, Shortfall>>,
  ): Promise<void> {
    let map = this.requireMap();
    let pending = idx;
    for (let retry = 0; ; retry++) {
      const short = await attempt(map, pending);
      if (short.size === 0) return;
      let staleEpoch: number | undefined;
      for (const s of short.values()) {
        if (s.staleEpoch !== undefined && (staleEpoch === undefined || s.staleEpoch > staleEpoch)) {
          staleEpoch = s.staleEpoch;
        }
      }
      const held = this.deps.current();
      const fresh =
        held && held.epoch > map.epoch
          ? held
          : staleEpoch !== undefined
            ? await this.deps.refresh(staleEpoch)
            : undefined;
      if (retry >= MAX_STALE_RETRIES || !fresh || fresh.epoch <= map.epoch) {
        for (const [i, s] of short) {
          s.report();
          out[i] = { ok: false, error: s.error };
        }
        this.deps.log.debug({ rid: opts.rid, op, short: short.size }, 'batch: keys short of their level');
        return;
      }
      map = fresh;
      pending = [...short.keys()];
    }
  }

  private writeOnce(
    map: PartitionMap,
    items: readonly BatchItem[],
    idx: readonly number[],
    records: ReadonlyMap<number, { encoded: Buffer }>,
    opts: BatchOptions,
  ): Promise<Map<number, Shortfall>> {
    const slots: Slot<unknown>[] = idx.map((i) => {
      const key = items[i].key;
      const p = partitionOf(key, map.partitionCount);
      const replicas = replicasOf(map, p);
      const extra = pendingReplicasOf(map, p);
      // As a single write: a replica a move is filling gets the write and raises the acks needed by one.
      const need = requiredAcks(opts.consistency, replicas.length) + extra.length;
      const targets = extra.length === 0 ? replicas : [...replicas, ...extra];
      return { i, p, key, targets, need, asked: targets.length, ok: [], failed: [], decided: false };
    });
    const byNode = new Map<string, Slot<unknown>[]>();
    for (const s of slots) for (const node of s.targets) push(byNode, node, s);
    const encodedOf = (s: Slot<unknown>): Buffer => (records.get(s.i) as { encoded: Buffer }).encoded;

    let decide!: () => void;
    const decided = new Promise<void>((resolve) => (decide = resolve));
    let open = slots.length;
    const check = (s: Slot<unknown>): void => {
      if (s.decided || !levelSettled(s.ok.length, s.failed.length, s.targets.length, s.need)) return;
      s.decided = true;
      if (--open === 0) decide();
    };
    if (open === 0) decide();
    const calls = [...byNode].map(([node, list]) =>
      this.deps
        .write(
          node,
          list.map((s) => ({ p: s.p, k: s.key, r: encodedOf(s) })),
          opts.rid,
        )
        .then(
          () => {
            for (const s of list) {
              s.ok.push([node, true]);
              check(s);
            }
          },
          (err: unknown) => {
            for (const s of list) {
              s.failed.push([node, err]);
              check(s);
            }
          },
        ),
    );
    // Hints go out once every replica has answered or failed, off the client's path.
    void Promise.all(calls)
      .then(() => this.leaveHints(slots, encodedOf, opts.rid))
      .catch((err: unknown) => this.deps.log.error({ err, rid: opts.rid }, 'batch: leaving hints failed'));
    return decided.then(() =>
      this.shortOf(slots, opts, (s) => (items[s.i].op === 'delete' ? 'delete' : 'put')),
    );
  }

  private readOnce(
    map: PartitionMap,
    items: readonly BatchItem[],
    idx: readonly number[],
    read: Map<number, KvRecord | undefined>,
    opts: BatchOptions,
  ): Promise<Map<number, Shortfall>> {
    const slots: Slot<Raw>[] = idx.map((i) => {
      const key = items[i].key;
      const p = partitionOf(key, map.partitionCount);
      const replicas = replicasOf(map, p);
      const need = requiredAcks(opts.consistency, replicas.length);
      return {
        i,
        p,
        key,
        targets: this.deps.order(replicas),
        need,
        asked: 0,
        ok: [],
        failed: [],
        decided: false,
      };
    });
    let decide!: () => void;
    const decided = new Promise<void>((resolve) => (decide = resolve));
    let open = slots.length;
    let inFlight = 0;
    let allDone!: () => void;
    const settled = new Promise<void>((resolve) => (allDone = resolve));
    let hedge: NodeJS.Timeout | undefined;
    const { metrics } = this.deps;

    const check = (s: Slot<Raw>): void => {
      if (s.decided || !levelSettled(s.ok.length, s.failed.length, s.targets.length, s.need)) return;
      s.decided = true;
      if (--open === 0) {
        if (hedge) clearTimeout(hedge);
        decide();
      }
    };
    /** One read RPC per node for the keys in `wave`. */
    const send = (wave: Map<string, Slot<Raw>[]>): void => {
      for (const [node, list] of wave) {
        inFlight++;
        const failed = (err: unknown): void => {
          const next = new Map<string, Slot<Raw>[]>();
          for (const s of list) {
            s.failed.push([node, err]);
            // Its place goes to the next replica, asked with the others that lost this node.
            if (!s.decided && s.asked < s.targets.length) {
              push(next, s.targets[s.asked++], s);
              metrics.readExtraRequests.inc({ reason: 'failed' });
            }
            check(s);
          }
          send(next);
        };
        this.deps
          .read(
            node,
            list.map((s) => ({ p: s.p, k: s.key })),
            opts.rid,
          )
          .then((reply) => {
            const records: unknown = reply.records;
            // One record (or null) per key asked, in order; anything else is no answer at all.
            if (!Array.isArray(records) || records.length !== list.length) {
              const got = Array.isArray(records) ? records.length : 'no';
              failed(
                new KvError('bad_reply', `${node} answered ${got} records to a read of ${list.length}`, {
                  node,
                }),
              );
              return;
            }
            list.forEach((s, j) => {
              s.ok.push([node, (records[j] as Raw | undefined) ?? null]);
              check(s);
            });
          }, failed)
          .finally(() => {
            if (--inFlight === 0) allDone();
          });
      }
    };
    const first = new Map<string, Slot<Raw>[]>();
    for (const s of slots) {
      for (const node of s.targets.slice(0, s.need)) push(first, node, s);
      s.asked = s.need;
    }
    if (open === 0) decide();
    if (first.size === 0) allDone();
    send(first);
    const hedgeMs = this.deps.hedgeAfterMs;
    if (hedgeMs !== undefined && open > 0) {
      // One hedge for the round, not a timer per key: the keys still short ask one more replica each.
      hedge = setTimeout(() => {
        const extra = new Map<string, Slot<Raw>[]>();
        for (const s of slots) {
          if (s.decided || s.asked >= s.targets.length) continue;
          push(extra, s.targets[s.asked++], s);
          metrics.readExtraRequests.inc({ reason: 'slow' });
        }
        send(extra);
      }, hedgeMs);
    }
    void settled
      .then(() => this.repair(slots, opts.rid))
      .catch((err: unknown) => this.deps.log.error({ err, rid: opts.rid }, 'batch: read repair failed'));
    return decided.then(() => {
      const now = this.deps.now();
      const short = this.shortOf(slots, opts, () => 'get');
      for (const s of slots) if (!short.has(s.i)) read.set(s.i, newestOf(s.ok, now).record);
      return short;
    });
  }

  private shortOf<T>(
    slots: readonly Slot<T>[],
    opts: BatchOptions,
    opOf: (s: Slot<T>) => string,
  ): Map<number, Shortfall> {
    const short = new Map<number, Shortfall>();
    for (const s of slots) {
      if (s.ok.length >= s.need) continue;
      const outcome = { ok: [...s.ok], failed: [...s.failed] };
      short.set(s.i, this.deps.shortfall(opOf(s), opts, s.p, s.targets.length, s.need, outcome));
    }
    return short;
  }

  /** Read repair once every asked replica answered: one write RPC per stale node, carrying all its keys. */
  private async repair(slots: readonly Slot<Raw>[], rid: string | undefined): Promise<void> {
    const now = this.deps.now();
    const byNode = new Map<string, RecordWrite[]>();
    for (const s of slots) {
      const { record: winner, answers } = newestOf(s.ok, now);
      // Alike answers (the usual case) leave nothing to repair.
      if (!winner || !answers) continue;
      const stale = staleReplicas(answers, winner.version);
      if (stale.length === 0) continue;
      const item = { p: s.p, k: s.key, r: encodeRecord(winner) };
      for (const node of stale) push(byNode, node, item);
    }
    const { metrics, log } = this.deps;
    await Promise.all(
      [...byNode].map(async ([node, list]) => {
        try {
          await this.deps.write(node, list, rid);
          metrics.readRepairs.inc({ outcome: 'ok' }, list.length);
        } catch (err) {
          metrics.readRepairs.inc({ outcome: 'failed' }, list.length);
          log.warn({ err, node, rid, records: list.length }, 'batch: read repair write failed');
        }
      }),
    );
  }

  /**
   * Hinted handoff for the writes that missed a replica that was down or timed out: one hint RPC per
   * holder, each write's holder a replica that took it (chosen by partition, so hints spread); a
   * write whose grouped hint failed tries its other holders on its own.
   */
  private async leaveHints(
    slots: readonly Slot<unknown>[],
    encodedOf: (s: Slot<unknown>) => Buffer,
    rid: string | undefined,
  ): Promise<void> {
    const byHolder = new Map<string, { slot: Slot<unknown>; hints: HintWrite[] }[]>();
    for (const s of slots) {
      const missed = s.failed.filter(([, e]) => missedNode(e)).map(([node]) => node);
      if (missed.length === 0) continue;
      const acked = s.ok.map(([node]) => node).sort();
      if (acked.length === 0) {
        this.deps.metrics.hintsSent.inc({ outcome: 'no_live_replica' }, missed.length);
        continue;
      }
      const r = encodedOf(s);
      push(byHolder, acked[s.p % acked.length], {
        slot: s,
        hints: missed.map((t) => ({ t, p: s.p, k: s.key, r })),
      });
    }
    const { metrics, log } = this.deps;
    await Promise.all(
      [...byHolder].map(async ([holder, list]) => {
        const hints = list.flatMap((e) => e.hints);
        try {
          const reply = await this.deps.hint(holder, hints, rid);
          const stored = reply.stored.filter(Boolean).length;
          if (stored > 0) metrics.hintsSent.inc({ outcome: 'stored' }, stored);
          if (hints.length > stored) {
            metrics.hintsSent.inc({ outcome: 'refused' }, hints.length - stored);
            log.warn({ rid, holder, refused: hints.length - stored }, 'hint holder refused hints');
          }
        } catch (err) {
          log.warn(
            { err, rid, holder, hints: hints.length },
            'batch: cannot leave hints; each write tries the others',
          );
          await Promise.all(
            list.map((e) =>
              this.deps.leaveHints(
                e.slot.p,
                e.slot.key,
                encodedOf(e.slot),
                { ok: e.slot.ok, failed: e.slot.failed },
                rid,
              ),
            ),
          );
        }
      }),
    );
  }

  private requireMap(): PartitionMap {
    const map = this.deps.current();
    if (!map) throw new ApiError(503, 'not_ready', 'the gateway has no partition map yet');
    return map;
  }
}

/** A replica's answer to a read: the encoded record, null where it holds nothing. */
type Raw = Uint8Array | null;

/**
 * The newest record among a key's answers, all asked in full. Replicas that agree answer the same
 * bytes, so those are decoded once and compared no further; otherwise each answer is decoded and
 * resolved as a single read resolves them, and `answers` is returned for read repair.
 */
function newestOf(
  ok: ReadonlyArray<readonly [string, Raw]>,
  now: number,
): { record: KvRecord | undefined; answers?: Array<readonly [string, ReadAnswer]> } {
  const first = ok[0]?.[1] ?? null;
  if (
    ok.every(([, raw]) =>
      raw === null ? first === null : first !== null && Buffer.compare(raw, first) === 0,
    )
  ) {
    return { record: first === null ? undefined : decodeRecord(first) };
  }
  const answers = ok.map(
    ([node, raw]) => [node, { rec: raw === null ? undefined : decodeRecord(raw), digest: false }] as const,
  );
  const resolved = resolveRead(answers, now);
  // Every answer is in full, so the newest version always comes with its value.
  return { record: resolved.kind === 'value' ? resolved.record : undefined, answers };
}

/** The record a put or delete writes, at `version`. */
export function recordOf(item: BatchItem, version: Version): KvRecord {
  if (item.op === 'get') throw new ApiError(500, 'internal', 'a get writes no record');
  if (item.op === 'delete') return { version, value: Buffer.alloc(0), tombstone: true };
  return putRecord(version, item.value, item);
}

/** A put's record: its value, expiry from `ttlSeconds`, content type. */
export function putRecord(
  version: Version,
  value: Buffer,
  opts: { readonly ttlSeconds?: number; readonly contentType?: string },
): KvRecord {
  return {
    version,
    value,
    tombstone: false,
    ...(opts.ttlSeconds === undefined ? {} : { expiresAt: version.wall + opts.ttlSeconds * 1000 }),
    ...(opts.contentType === undefined ? {} : { contentType: opts.contentType }),
  };
}

/** Indexes of `items` by round: the n-th operation on each key is in round n. */
export function rounds(items: readonly { readonly key: Buffer }[]): number[][] {
  const out: number[][] = [];
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const name = item.key.toString('latin1');
    const n = seen.get(name) ?? 0;
    seen.set(name, n + 1);
    (out[n] ??= []).push(i);
  });
  return out;
}

function push<K, V>(m: Map<K, V[]>, key: K, value: V): void {
  const list = m.get(key);
  if (list) list.push(value);
  else m.set(key, [value]);
}
