import type { Version } from '../common/hlc';
import { isLive, type KvRecord } from '../common/record';
import { resolveRead, staleReplicas, type ReadAnswer } from './read-resolution';

/** One node's answer to a range RPC, its records decoded. */
export interface RangeAnswer {
  readonly node: string;
  /** the partitions this node was asked for */
  readonly partitions: readonly number[];
  /** in key order */
  readonly items: readonly { readonly p: number; readonly k: Buffer; readonly rec: KvRecord }[];
  /** it stopped at its limit: complete only up to its last item's key */
  readonly more: boolean;
  /** asked for digests (records without values) */
  readonly digest: boolean;
}

/** A key seen in a page, with what each replica asked for its partition answered (undefined: none). */
export interface MergedKey {
  readonly key: Buffer;
  readonly p: number;
  readonly answers: Array<readonly [string, ReadAnswer]>;
}

/**
 * The keys every asked replica has answered for: those up to `bound`, the lowest last key among
 * the answers that stopped at a limit (an answer is complete up to its last key, and says nothing
 * beyond it). `bound` undefined: every answer is complete, to the end of the range. Each key has
 * one answer per replica asked for its partition, absent where that replica holds nothing.
 */
export function mergeRange(answers: readonly RangeAnswer[]): {
  keys: MergedKey[];
  bound: Buffer | undefined;
} {
  let bound: Buffer | undefined;
  for (const a of answers) {
    if (!a.more) continue;
    const last = a.items[a.items.length - 1]?.k;
    if (last === undefined) throw new Error(`range answer of ${a.node} says more but holds no record`);
    if (bound === undefined || Buffer.compare(last, bound) < 0) bound = last;
  }
  const askedFor = new Map<number, Array<{ node: string; digest: boolean }>>();
  for (const a of answers) {
    for (const p of a.partitions) {
      let list = askedFor.get(p);
      if (!list) askedFor.set(p, (list = []));
      list.push({ node: a.node, digest: a.digest });
    }
  }
  const byKey = new Map<string, { key: Buffer; p: number; held: Map<string, ReadAnswer> }>();
  for (const a of answers) {
    for (const item of a.items) {
      if (bound !== undefined && Buffer.compare(item.k, bound) > 0) break;
      const name = item.k.toString('latin1');
      let entry = byKey.get(name);
      if (!entry) byKey.set(name, (entry = { key: item.k, p: item.p, held: new Map() }));
      entry.held.set(a.node, { rec: item.rec, digest: a.digest });
    }
  }
  const keys: MergedKey[] = [];
  for (const { key, p, held } of byKey.values()) {
    const asked = askedFor.get(p) ?? [];
    keys.push({
      key,
      p,
      answers: asked.map(({ node, digest }) => [node, held.get(node) ?? { rec: undefined, digest }] as const),
    });
  }
  keys.sort((x, y) => Buffer.compare(x.key, y.key));
  return { keys, bound };
}

/** A live key of a listing: its newest version, and the record itself when it was read in full. */
export interface ListedEntry {
  readonly key: Buffer;
  readonly version: Version;
  readonly record?: KvRecord;
}

/** A write read repair sends: `rec`, the newest version, to a replica that answered an older one or none. */
export interface RangeRepair {
  readonly node: string;
  readonly p: number;
  readonly key: Buffer;
  readonly rec: KvRecord;
}

/**
 * A repair whose newest version was seen only by digest (keys_only): the record must first be read
 * in full from one of `from`, the replicas that answered `version`, then written to `to`.
 */
export interface RangeFetchRepair {
  readonly p: number;
  readonly key: Buffer;
  readonly version: Version;
  readonly from: readonly string[];
  readonly to: readonly string[];
}

export interface RangePage {
  /** in key order, at most the limit */
  readonly entries: ListedEntry[];
  /** the listing goes on after this key; undefined: it is complete */
  readonly next: Buffer | undefined;
  readonly repairs: RangeRepair[];
  readonly fetchRepairs: RangeFetchRepair[];
}

/**
 * A page of a listing from the replicas' answers: each key resolved as a read resolves it (the
 * newest version wins), deleted and expired keys left out, at most `limit` entries. Stale replicas
 * of keys read in full get repairs; those of a live key seen only by digest get fetch repairs. An
 * expired newest version seen only by digest is anti-entropy's to fix: its value is not known, and
 * may be purged before a fetch.
 */
export function resolveRangePage(answers: readonly RangeAnswer[], limit: number, nowMs: number): RangePage {
  const { keys, bound } = mergeRange(answers);
  const entries: ListedEntry[] = [];
  const repairs: RangeRepair[] = [];
  const fetchRepairs: RangeFetchRepair[] = [];
  for (const { key, p, answers: said } of keys) {
    if (entries.length === limit) {
      return { entries, next: entries[entries.length - 1].key, repairs, fetchRepairs };
    }
    const resolved = resolveRead(said, nowMs);
    if (resolved.kind === 'expired') continue;
    if (resolved.kind === 'fetch') {
      const { version, from } = resolved;
      const to = staleReplicas(said, version);
      if (to.length > 0) fetchRepairs.push({ p, key, version, from, to });
      entries.push({ key, version });
      continue;
    }
    const rec = resolved.record;
    if (!rec) continue;
    for (const node of staleReplicas(said, rec.version)) repairs.push({ node, p, key, rec });
    if (!isLive(rec, nowMs)) continue;
    entries.push(
      said.some(([, a]) => !a.digest)
        ? { key, version: rec.version, record: rec }
        : { key, version: rec.version },
    );
  }
  return { entries, next: bound, repairs, fetchRepairs };
}
