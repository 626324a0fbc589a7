import { requiredAcks } from '../common/consistency';
import { errorMessage } from '../common/errors';
import { compareVersions, parseVersion, type Version } from '../common/hlc';
import type { DeleteOp, FinalRead, History, HistoryOp, PutOp } from './history';

/**
 * Checks a history of requests against what kvstore promises (README,
 * "Consistency, stated honestly") and names every violation. Pure: no I/O.
 *
 * ## Model
 *
 * Each key is a last-writer-wins register: every put or delete gets a version
 * `<wall>.<logical>.<writer>` (ordered numerically by wall, then logical, then
 * by writer as a string), and the state of a key is the write with the highest
 * version among those applied (a delete leaves a tombstone: absent).
 *
 * - A write answered `ok` took effect, with the version it returned.
 * - A write that `failed` or hit a `timeout` is indeterminate: it may or may not
 *   have taken effect, now or later. It may explain what a read returns, but is
 *   never required to be seen. Its version is unknown, unless a read returned
 *   its value with an ETag.
 * - Values are unique per key, so a value read names the one put that wrote it.
 *
 * ## Ordering without false positives
 *
 * A write X is *provably older* than an acknowledged write W when:
 * - both versions are known and version(X) < version(W); or
 * - X's version is unknown, `realTimeVersions` is set, and X's version was
 *   issued before W began: X got an answer (ok or an error) before W started,
 *   or a read that returned X ended before W started. (Unanswered requests
 *   may be versioned any time after they start, so they are never provably
 *   older by time alone.)
 * Nothing else is assumed: operations that overlap in time may be ordered
 * either way. `realTimeVersions` holds when every write is versioned by one
 * hybrid logical clock (a single gateway, restarts included); with several
 * gateways behind a Service it does not (README: a write can lose to one made
 * earlier by a gateway whose clock runs ahead), so it is off by default.
 *
 * ## Which writes a read must see
 *
 * A read R *must see* an acknowledged write W when W ended before R started
 * (strictly, on the client's monotonic clock: equal times count as overlapping)
 * and their levels overlap (W + R > RF, with one = 1, quorum = RF/2 + 1, all = RF).
 * A final read (after everything ended) must see every acknowledged write of
 * its level, or, when it has no level (read after the cluster converged, e.g.
 * from one node alone), every acknowledged write at all.
 *
 * ## Violations
 *
 * - `phantom-value`: a read returned a value no put of that key wrote, or one
 *   whose put started only after the read had ended.
 * - `lost-write`: a read returned data (a value, or absent) that is provably
 *   older than an acknowledged write it must see, the newest of which is a put.
 *   A value is judged by its put's version. Absent is explained only by a delete
 *   (acknowledged or indeterminate) that started no later than the read ended
 *   and is not provably older than any write the read must see; a key never
 *   written, or with nothing the read must see, may always read absent.
 * - `resurrected`: a read returned a value provably older than an acknowledged
 *   delete it must see, with no acknowledged put it must see newer than that
 *   delete: a deleted key came back.
 * - `hung`: a request got no answer within its deadline (`timeout`), or took
 *   longer than its deadline plus `hangSlackMs` (the client's own timer failed).
 * - `version-mismatch`: a value was read with a version other than the one its
 *   put was given (or than another read of it showed).
 * - `version-order` (only with `realTimeVersions`): a write that began after
 *   another write's version was issued got a lower version, so last writer
 *   wins would order them against real time.
 */

export type ViolationKind =
  'phantom-value' | 'lost-write' | 'resurrected' | 'hung' | 'version-mismatch' | 'version-order';

export const VIOLATION_KINDS: readonly ViolationKind[] = [
  'lost-write',
  'resurrected',
  'phantom-value',
  'hung',
  'version-mismatch',
  'version-order',
];

export interface Violation {
  readonly kind: ViolationKind;
  readonly key: string;
  readonly message: string;
  /** the operation that observed the problem (a read, or the hung request) */
  readonly opId?: number;
  /** set instead of opId when a final read observed it */
  readonly finalSource?: string;
  /** the write at the root of it: lost, undone, or ordered against time */
  readonly writeId?: number;
}

export interface CheckOptions {
  /** replicas per partition; decides which levels overlap. Default 3. */
  readonly replicationFactor?: number;
  /** every write was versioned by one clock, so real-time order implies version order. Default false. */
  readonly realTimeVersions?: boolean;
  /** deadline for operations that do not carry their own `timeoutMs`; none by default */
  readonly timeoutMs?: number;
  /** how far past its deadline an answered request may end before it counts as hung. Default 1000 ms. */
  readonly hangSlackMs?: number;
}

export interface CheckResult {
  readonly violations: readonly Violation[];
  /** reads (including final reads) that were checked */
  readonly readsChecked: number;
  readonly keys: number;
}

/** The history itself is malformed (not a finding about the store). */
export class HistoryInputError extends Error {
  override readonly name = 'HistoryInputError';
}

export type ParsedVersion = Version;

/** The gateway's version text, as common/hlc.ts writes it; a malformed one is bad input to the checker. */
export function parseVersionText(text: string): ParsedVersion {
  try {
    return parseVersion(text);
  } catch (err) {
    throw new HistoryInputError(errorMessage(err));
  }
}

/** The store's own order of versions: wall, then logical, then writer. */
export const compareParsedVersions = compareVersions;

/** A put or delete, with what is known about its version. */
interface Write {
  readonly op: PutOp | DeleteOp;
  readonly acked: boolean;
  readonly strength: number;
  version: ParsedVersion | undefined;
  versionText: string | undefined;
  /** the latest time its version can have been issued (Infinity: unknown) */
  issuedBy: number;
}

/** A successful read: a get that answered, or a final read. */
interface Read {
  readonly value: string | null;
  readonly versionText: string | undefined;
  readonly start: number;
  readonly end: number;
  /** must-see threshold: W is seen when W.strength + strength > rf; Infinity sees every acked write */
  readonly strength: number;
  readonly opId?: number;
  readonly finalSource?: string;
  readonly label: string;
}

/** Facts about the acknowledged writes a read must see, enough to decide "provably older" for any X. */
interface MustSee {
  /** the highest-versioned one */
  readonly newest: Write;
  /** the one that started last (binds the real-time rule) */
  readonly latestStart: Write;
}

export function checkHistory(history: History, options: CheckOptions = {}): CheckResult {
  const rf = options.replicationFactor ?? 3;
  if (!Number.isInteger(rf) || rf < 1)
    throw new HistoryInputError(`replicationFactor must be >= 1, got ${rf}`);
  const realTime = options.realTimeVersions ?? false;
  const slack = options.hangSlackMs ?? 1000;
  validate(history);

  const t0 = history.ops.reduce((min, op) => Math.min(min, op.start), Infinity);
  const at = (t: number): string => (Number.isFinite(t) ? `${((t - t0) / 1000).toFixed(3)} s` : 'the end');
  const violations: Violation[] = [];

  for (const op of history.ops) {
    const deadline = op.timeoutMs ?? options.timeoutMs;
    if (op.outcome === 'timeout') {
      violations.push({
        kind: 'hung',
        key: op.key,
        opId: op.id,
        message: `${describeOp(op)} got no answer within its ${deadline === undefined ? '' : `${deadline} ms `}deadline (started ${at(op.start)})`,
      });
    } else if (deadline !== undefined && op.end - op.start > deadline + slack) {
      violations.push({
        kind: 'hung',
        key: op.key,
        opId: op.id,
        message: `${describeOp(op)} took ${Math.round(op.end - op.start)} ms, past its ${deadline} ms deadline (started ${at(op.start)})`,
      });
    }
  }

  const byKey = groupByKey(history);
  let readsChecked = 0;
  for (const [key, { ops, finals }] of byKey) {
    const writes: Write[] = [];
    const putsByValue = new Map<string, Write>();
    for (const op of ops) {
      if (op.op === 'get') continue;
      const acked = op.outcome === 'ok';
      const w: Write = {
        op,
        acked,
        strength: requiredAcks(op.consistency ?? 'quorum', rf),
        version: op.version === undefined ? undefined : parseVersionText(op.version),
        versionText: op.version,
        // An answer (even an error) means the gateway versioned the write, if at all, before it answered.
        issuedBy: op.outcome === 'timeout' ? Infinity : op.end,
      };
      writes.push(w);
      if (op.op === 'put') putsByValue.set(op.value, w);
    }

    const reads: Read[] = [];
    for (const op of ops) {
      if (op.op !== 'get' || op.outcome !== 'ok') continue;
      reads.push({
        value: op.value ?? null,
        versionText: op.version,
        start: op.start,
        end: op.end,
        strength: requiredAcks(op.consistency ?? 'quorum', rf),
        opId: op.id,
        label: describeOp(op),
      });
    }
    for (const f of finals) {
      reads.push({
        value: f.value,
        versionText: f.version,
        start: Infinity,
        end: Infinity,
        strength: f.consistency === undefined ? Infinity : requiredAcks(f.consistency, rf),
        finalSource: f.source,
        label: `final read from ${f.source}${f.consistency ? ` at ${f.consistency}` : ''}`,
      });
    }

    // What reads reveal about puts: versions of indeterminate puts, and an earlier bound on when they were issued.
    for (const r of reads) {
      if (r.value === null) continue;
      const w = putsByValue.get(r.value);
      if (!w || w.op.start > r.end) continue; // a phantom: reported below
      w.issuedBy = Math.min(w.issuedBy, r.end);
      if (r.versionText === undefined) continue;
      const seen = parseVersionText(r.versionText);
      if (w.version === undefined) {
        w.version = seen;
        w.versionText = r.versionText;
      } else if (compareParsedVersions(w.version, seen) !== 0) {
        violations.push({
          kind: 'version-mismatch',
          key,
          ...readRef(r),
          writeId: w.op.id,
          message: `${r.label} returned ${JSON.stringify(r.value)} with version ${r.versionText}, but ${describeOp(w.op)} ${w.acked ? 'was given' : 'was already seen with'} version ${w.versionText}`,
        });
      }
    }

    const olderThan = (x: Write, m: MustSee): boolean => {
      if (x.version !== undefined) return compareParsedVersions(x.version, m.newest.version!) < 0;
      return realTime && x.issuedBy < m.latestStart.op.start;
    };

    const acked = writes.filter((w) => w.acked);
    const deletes = writes.filter((w) => w.op.op === 'delete');
    for (const r of reads) {
      readsChecked++;
      const m = mustSee(acked, r, rf);
      if (r.value !== null) {
        const x = putsByValue.get(r.value);
        if (!x || x.op.start > r.end) {
          violations.push({
            kind: 'phantom-value',
            key,
            ...readRef(r),
            writeId: x?.op.id,
            message: x
              ? `${r.label} returned ${JSON.stringify(r.value)}, which ${describeOp(x.op)} wrote only after the read ended (${at(x.op.start)})`
              : `${r.label} returned ${JSON.stringify(r.value)}, which no put of this key wrote`,
          });
          continue;
        }
        if (m && olderThan(x, m)) {
          const culprit = x.version !== undefined ? m.newest : m.latestStart;
          const kind = culprit.op.op === 'delete' ? 'resurrected' : 'lost-write';
          violations.push({
            kind,
            key,
            ...readRef(r),
            writeId: culprit.op.id,
            message: `${r.label} returned ${JSON.stringify(r.value)} (${x.versionText ? `version ${x.versionText}` : 'version unknown'}, from ${describeOp(x.op)}), older than ${describeOp(culprit.op)} (version ${culprit.versionText}), acknowledged at ${at(culprit.op.end)} before the read began`,
          });
        }
        continue;
      }
      if (!m) continue;
      // Absent: some tombstone that could be the newest state must exist.
      const explained = deletes.some((d) => d.op.start <= r.end && !olderThan(d, m));
      if (!explained) {
        violations.push({
          kind: 'lost-write',
          key,
          ...readRef(r),
          writeId: m.newest.op.id,
          message: `${r.label} found the key absent, but ${describeOp(m.newest.op)} (version ${m.newest.versionText}) was acknowledged at ${at(m.newest.op.end)} before the read began, and no delete explains it`,
        });
      }
    }

    if (realTime) violations.push(...versionOrder(key, writes, at));
  }

  return { violations, readsChecked, keys: byKey.size };
}

function readRef(r: Read): { opId?: number; finalSource?: string } {
  return r.opId !== undefined ? { opId: r.opId } : { finalSource: r.finalSource };
}

/** The acknowledged writes read r must see, reduced to the two that decide "provably older"; none: undefined. */
function mustSee(acked: readonly Write[], r: Read, rf: number): MustSee | undefined {
  let newest: Write | undefined;
  let latestStart: Write | undefined;
  for (const w of acked) {
    if (!(w.op.end < r.start) || !(w.strength + r.strength > rf)) continue;
    if (!newest || compareParsedVersions(w.version!, newest.version!) > 0) newest = w;
    if (!latestStart || w.op.start > latestStart.op.start) latestStart = w;
  }
  return newest && latestStart ? { newest, latestStart } : undefined;
}

/** Writes with known versions whose version order contradicts real time (one clock assumed). */
function versionOrder(key: string, writes: readonly Write[], at: (t: number) => string): Violation[] {
  const known = writes.filter((w) => w.version !== undefined);
  const byIssued = [...known].sort((a, b) => a.issuedBy - b.issuedBy);
  const byStart = [...known].sort((a, b) => a.op.start - b.op.start);
  const out: Violation[] = [];
  let i = 0;
  let highest: Write | undefined;
  for (const y of byStart) {
    while (i < byIssued.length && byIssued[i].issuedBy < y.op.start) {
      const x = byIssued[i++];
      if (!highest || compareParsedVersions(x.version!, highest.version!) > 0) highest = x;
    }
    if (highest && compareParsedVersions(highest.version!, y.version!) > 0) {
      out.push({
        kind: 'version-order',
        key,
        opId: y.op.id,
        writeId: highest.op.id,
        message: `${describeOp(y.op)} started at ${at(y.op.start)}, after ${describeOp(highest.op)} was versioned (by ${at(highest.issuedBy)}), yet got the lower version ${y.versionText} < ${highest.versionText}`,
      });
    }
  }
  return out;
}

function groupByKey(history: History): Map<string, { ops: HistoryOp[]; finals: FinalRead[] }> {
  const byKey = new Map<string, { ops: HistoryOp[]; finals: FinalRead[] }>();
  const entry = (key: string) => {
    let e = byKey.get(key);
    if (!e) byKey.set(key, (e = { ops: [], finals: [] }));
    return e;
  };
  for (const op of history.ops) entry(op.key).ops.push(op);
  for (const f of history.final) entry(f.key).finals.push(f);
  return byKey;
}

function validate(history: History): void {
  const ids = new Set<number>();
  const values = new Set<string>();
  for (const op of history.ops) {
    if (ids.has(op.id)) throw new HistoryInputError(`operation id ${op.id} appears twice`);
    ids.add(op.id);
    if (!Number.isFinite(op.start) || !Number.isFinite(op.end) || op.end < op.start) {
      throw new HistoryInputError(`operation ${op.id} has bad times: start ${op.start}, end ${op.end}`);
    }
    if (op.op !== 'get' && op.outcome === 'ok' && op.version === undefined) {
      throw new HistoryInputError(`acknowledged ${op.op} #${op.id} has no version`);
    }
    if (op.op === 'get' && op.outcome === 'ok' && op.value === undefined) {
      throw new HistoryInputError(`successful get #${op.id} has no value (null for absent)`);
    }
    if (op.op === 'put') {
      // A value must name one write, or a read could not say which write it saw.
      const tag = `${op.key}\u0000${op.value}`;
      if (values.has(tag)) {
        throw new HistoryInputError(`value ${JSON.stringify(op.value)} is written to ${op.key} twice`);
      }
      values.add(tag);
    }
  }
}

export function describeOp(op: HistoryOp): string {
  const what = op.op === 'put' ? `put ${JSON.stringify(op.value)}` : op.op;
  return `${what} #${op.id} by ${op.client}`;
}

/** Counts by kind, every kind present (zeros included), in a stable order. */
export function countViolations(violations: readonly Violation[]): Record<ViolationKind, number> {
  const counts = Object.fromEntries(VIOLATION_KINDS.map((k) => [k, 0])) as Record<ViolationKind, number>;
  for (const v of violations) counts[v.kind]++;
  return counts;
}
