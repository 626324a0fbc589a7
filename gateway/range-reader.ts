import { requiredAcks, type Consistency } from '../common/consistency';
import { compareVersions } from '../common/hlc';
import type { KeyRange } from '../common/key-range';
import type { Logger } from '../common/logger';
import { replicasOf, type PartitionMap } from '../common/partition-map';
import { decodeRecord, encodeRecord } from '../common/record';
import { RpcError, staleEpochOf } from '../common/rpc-client';
import type { RpcRequestBody, RangeReply, ReadReply, WriteReply } from '../common/rpc-protocol';
import { ApiError } from './api-error';
import type { GatewayMetrics } from './metrics';
import {
  resolveRangePage,
  type ListedEntry,
  type RangeAnswer,
  type RangeFetchRepair,
  type RangeRepair,
} from './range-merge';

/** What a listing needs of the coordinator: its map, its replica order, and its counted RPCs. */
export interface RangeReaderDeps {
  current(): PartitionMap | undefined;
  /** reload the map, to at least `epoch` (0: any newer one) */
  refresh(epoch: number): Promise<PartitionMap | undefined>;
  /** replicas in the order a read asks them (least busy first) */
  order(replicas: readonly string[]): string[];
  range(node: string, body: Extract<RpcRequestBody, { op: 'range' }>, rid?: string): Promise<RangeReply>;
  read(node: string, body: Extract<RpcRequestBody, { op: 'read' }>, rid?: string): Promise<ReadReply>;
  write(node: string, body: Extract<RpcRequestBody, { op: 'write' }>, rid?: string): Promise<WriteReply>;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  readonly now: () => number;
}

export interface ListOptions {
  readonly consistency: Consistency;
  readonly rid?: string;
  /** entries per page */
  readonly limit: number;
  /** versions only: replicas answer digests; a stale replica's repair reads the record first */
  readonly keysOnly: boolean;
  /** resume after this key (the cursor of the page before) */
  readonly after?: Buffer;
}

export interface ListPage {
  readonly entries: ListedEntry[];
  /** the listing goes on after this key; undefined: it is complete */
  readonly next: Buffer | undefined;
}

/** A node's reply to one page stays far below the 64 MiB frame limit, and a page's memory bounded. */
export const MAX_RANGE_REPLY_BYTES = 4 * 1024 * 1024;
/** Pages of deleted keys only are read on, up to this many, before an empty page is answered. */
const MAX_ROUNDS_PER_PAGE = 16;
const MAX_STALE_RETRIES = 8;

/**
 * Listings (GET /v1/kv; docs/design.md, "Listing"). Keys are hashed over partitions, so every
 * partition holds part of any range: a page asks, for each partition, R of its replicas (chosen as
 * a read chooses them), grouped so each node gets one range RPC for all the partitions it is asked
 * for, and merges the answers (gateway/range-merge.ts). A node that fails has its partitions asked
 * of their next replicas; a partition left with fewer than R answers fails the page with 503.
 */
export class RangeReader {
  constructor(private readonly deps: RangeReaderDeps) {}

  async list(range: KeyRange, opts: ListOptions): Promise<ListPage> {
    let after = opts.after;
    for (let round = 1; ; round++) {
      const page = await this.pageWithRetry(range, after, opts);
      if (page.entries.length > 0 || page.next === undefined || round >= MAX_ROUNDS_PER_PAGE) return page;
      after = page.next;
    }
  }

  private async pageWithRetry(
    range: KeyRange,
    after: Buffer | undefined,
    opts: ListOptions,
  ): Promise<ListPage> {
    const first = this.deps.current();
    if (!first) throw new ApiError(503, 'not_ready', 'the gateway has no partition map yet');
    let map: PartitionMap = first;
    for (let retry = 0; ; retry++) {
      const result = await this.pageOnce(map, range, after, opts);
      if (result.ok) return result.page;
      const held = this.deps.current();
      const fresh: PartitionMap | undefined =
        held && held.epoch > map.epoch
          ? held
          : result.staleEpoch !== undefined
            ? await this.deps.refresh(result.staleEpoch)
            : undefined;
      if (retry >= MAX_STALE_RETRIES || !fresh || fresh.epoch <= map.epoch) {
        this.deps.metrics.quorumFailures.inc({ op: 'list', consistency: opts.consistency });
        this.deps.log.warn({ rid: opts.rid, err: result.error }, 'listing: not enough replicas');
        throw result.error;
      }
      map = fresh;
    }
  }

  private async pageOnce(
    map: PartitionMap,
    range: KeyRange,
    after: Buffer | undefined,
    opts: ListOptions,
  ): Promise<{ ok: true; page: ListPage } | { ok: false; error: ApiError; staleEpoch: number | undefined }> {
    const spare = new Map<number, string[]>();
    let wave = new Map<string, number[]>();
    let rf = 0;
    let need = 0;
    for (let p = 0; p < map.partitionCount; p++) {
      const replicas = replicasOf(map, p);
      rf = replicas.length;
      need = requiredAcks(opts.consistency, replicas.length);
      const order = this.deps.order(replicas);
      for (const node of order.slice(0, need)) push(wave, node, p);
      spare.set(p, order.slice(need));
    }
    const answers: RangeAnswer[] = [];
    const failed: Array<readonly [string, unknown]> = [];
    const unserved: number[] = [];
    while (wave.size > 0) {
      const asked = [...wave];
      const settled = await Promise.allSettled(
        asked.map(([node, parts]) => this.ask(node, parts, range, after, opts)),
      );
      const next = new Map<string, number[]>();
      settled.forEach((s, i) => {
        const [node, parts] = asked[i];
        if (s.status === 'fulfilled') {
          answers.push(s.value);
          return;
        }
        failed.push([node, s.reason]);
        // Its partitions go to their next replicas, one more RPC per node that takes some.
        for (const p of parts) {
          const alt = spare.get(p)?.shift();
          if (alt === undefined) unserved.push(p);
          else push(next, alt, p);
        }
      });
      wave = next;
    }
    if (unserved.length > 0) {
      let staleEpoch: number | undefined;
      for (const [, e] of failed) {
        const claimed = staleEpochOf(e);
        if (claimed !== undefined && (staleEpoch === undefined || claimed > staleEpoch)) staleEpoch = claimed;
      }
      const reasons = [
        ...new Set(failed.map(([node, e]) => `${node}: ${e instanceof RpcError ? e.code : 'error'}`)),
      ]
        .sort()
        .join(', ');
      const error = new ApiError(
        503,
        'unavailable',
        `consistency ${opts.consistency} needs ${need} of ${rf} replicas of every partition; ${unserved.length} partition(s) had fewer (${reasons})`,
        { partitions: unserved.length, need, rf },
      );
      return { ok: false, error, staleEpoch };
    }
    const page = resolveRangePage(answers, opts.limit, this.deps.now());
    if (page.repairs.length > 0 || page.fetchRepairs.length > 0) {
      this.repair(page.repairs, page.fetchRepairs, opts.rid).catch((err: unknown) =>
        this.deps.log.error({ err, rid: opts.rid }, 'listing read repair failed'),
      );
    }
    return { ok: true, page: { entries: page.entries, next: page.next } };
  }

  private async ask(
    node: string,
    partitions: number[],
    range: KeyRange,
    after: Buffer | undefined,
    opts: ListOptions,
  ): Promise<RangeAnswer> {
    const reply = await this.deps.range(
      node,
      {
        op: 'range',
        partitions,
        start: range.start,
        ...(range.end === undefined ? {} : { end: range.end }),
        ...(after === undefined ? {} : { after }),
        limit: opts.limit,
        maxBytes: MAX_RANGE_REPLY_BYTES,
        ...(opts.keysOnly ? { digest: true } : {}),
      },
      opts.rid,
    );
    return {
      node,
      partitions,
      items: reply.items.map((i) => ({ p: i.p, k: i.k, rec: decodeRecord(i.r) })),
      more: reply.more,
      digest: opts.keysOnly,
    };
  }

  /**
   * Read repair of a page, after it is answered: the records seen only by digest are read first,
   * one read RPC per node holding them; then one write RPC per stale node carries all its repairs.
   */
  private async repair(
    repairs: readonly RangeRepair[],
    fetches: readonly RangeFetchRepair[],
    rid: string | undefined,
  ): Promise<void> {
    const fetched = fetches.length === 0 ? [] : await this.fetchForRepair(fetches, rid);
    const byNode = groupBy([...repairs, ...fetched], (r) => r.node);
    const { metrics, log } = this.deps;
    await Promise.all(
      [...byNode].map(async ([node, list]) => {
        const items = list.map((r) => ({ p: r.p, k: r.key, r: encodeRecord(r.rec) }));
        try {
          await this.deps.write(node, { op: 'write', items }, rid);
          metrics.readRepairs.inc({ outcome: 'ok' }, items.length);
        } catch (err) {
          metrics.readRepairs.inc({ outcome: 'failed' }, items.length);
          log.warn({ err, node, rid, records: items.length }, 'listing read repair write failed');
        }
      }),
    );
  }

  /** The repairs `fetches` stand for, with the records read from a replica holding each. */
  private async fetchForRepair(
    fetches: readonly RangeFetchRepair[],
    rid: string | undefined,
  ): Promise<RangeRepair[]> {
    const { metrics, log } = this.deps;
    const repairs: RangeRepair[] = [];
    await Promise.all(
      [...groupBy(fetches, (f) => f.from[0])].map(async ([source, list]) => {
        let records: (Buffer | null)[];
        try {
          ({ records } = await this.deps.read(
            source,
            { op: 'read', items: list.map((f) => ({ p: f.p, k: f.key })) },
            rid,
          ));
        } catch (err) {
          const writes = list.reduce((n, f) => n + f.to.length, 0);
          metrics.readRepairs.inc({ outcome: 'failed' }, writes);
          log.warn(
            { err, node: source, rid, records: list.length },
            'listing read repair: reading the newest records failed',
          );
          return;
        }
        list.forEach((f, i) => {
          const raw = records[i];
          // Gone (purged after expiring) or older than its digest said: nothing to repair with.
          if (raw === null || raw === undefined) return;
          const rec = decodeRecord(raw);
          if (compareVersions(rec.version, f.version) < 0) return;
          // Newer than the digest (written since) is as good a repair: the newest version wins anyway.
          for (const node of f.to) repairs.push({ node, p: f.p, key: f.key, rec });
        });
      }),
    );
    return repairs;
  }
}

function groupBy<T>(items: readonly T[], keyOf: (item: T) => string | undefined): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    if (key === undefined) continue;
    let list = groups.get(key);
    if (!list) groups.set(key, (list = []));
    list.push(item);
  }
  return groups;
}

function push(m: Map<string, number[]>, node: string, p: number): void {
  const list = m.get(node);
  if (list) list.push(p);
  else m.set(node, [p]);
}
