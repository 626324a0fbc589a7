import { compareVersions, type Version } from '../common/hlc';
import type { KvRecord } from '../common/record';

/**
 * What one replica answered to a read: its record (undefined: it holds none), and whether it was
 * asked for a digest (the record without its value) rather than in full.
 */
export interface ReadAnswer {
  readonly rec: KvRecord | undefined;
  readonly digest: boolean;
}

/**
 * value: the newest version any replica answered, with its value (undefined: no replica holds
 * the key). fetch: the newest version came from digests only, so its value must be read in full
 * from one of `from` (the replicas that answered it). expired: the newest version came from
 * digests only and has expired, so the key reads as absent whatever its value; the value is not
 * known, so nothing can be repaired with it (anti-entropy does that).
 */
export type ReadResolution =
  | { readonly kind: 'value'; readonly record: KvRecord | undefined }
  | { readonly kind: 'fetch'; readonly version: Version; readonly from: readonly string[] }
  | { readonly kind: 'expired'; readonly version: Version };

/**
 * Resolves a digest read (Cassandra's digest reads): the newest version wins, as in every read;
 * its value is known when a replica asked in full answered it, or when it is a tombstone (whose
 * digest is the whole record). Otherwise the value has to be fetched from a replica that holds it,
 * unless the record expired by `nowMs` (a fetch could then find it purged and fail a read whose
 * answer, absent, is already known).
 */
export function resolveRead(
  answers: ReadonlyArray<readonly [string, ReadAnswer]>,
  nowMs: number,
): ReadResolution {
  let newest: Version | undefined;
  for (const [, a] of answers) {
    if (a.rec && (!newest || compareVersions(a.rec.version, newest) > 0)) newest = a.rec.version;
  }
  if (!newest) return { kind: 'value', record: undefined };
  const top = answers.filter(([, a]) => a.rec && compareVersions(a.rec.version, newest) === 0);
  const full = top.find(([, a]) => !a.digest || a.rec?.tombstone);
  if (full) return { kind: 'value', record: withKnownContentType(full[1].rec as KvRecord, top) };
  const expiresAt = top[0][1].rec?.expiresAt;
  if (expiresAt !== undefined && expiresAt <= nowMs) return { kind: 'expired', version: newest };
  return { kind: 'fetch', version: newest, from: top.map(([node]) => node) };
}

/**
 * The same write on every replica, but one of an older release stored it without its content type
 * (common/record-format.ts): the type another replica answered, digests included, is the write's.
 */
function withKnownContentType(record: KvRecord, top: ReadonlyArray<readonly [string, ReadAnswer]>): KvRecord {
  if (record.contentType !== undefined) return record;
  const contentType = top.find(([, a]) => a.rec?.contentType !== undefined)?.[1].rec?.contentType;
  return contentType === undefined ? record : { ...record, contentType };
}

/** Replicas that answered with no record or one older than `newest`: the ones read repair writes to. */
export function staleReplicas(
  answers: ReadonlyArray<readonly [string, ReadAnswer]>,
  newest: Version,
): string[] {
  return answers
    .filter(([, a]) => !a.rec || compareVersions(a.rec.version, newest) < 0)
    .map(([node]) => node);
}
