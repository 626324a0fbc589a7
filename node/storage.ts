import { Heap } from 'heap-js';
import { open, type Database, type RootDatabase } from 'lmdb';
import type { KeyRange } from '../common/key-range';
import { errorMessage, KvError } from '../common/errors';
import { compareVersions } from '../common/hlc';
import {
  decodeRecord,
  decodeRecordLayout,
  encodeRecord,
  supersedes,
  type KvRecord,
  type RecordHeader,
} from '../common/record';
import {
  decodeStoredHeader,
  decodeStoredRecord,
  encodeStoredRecord,
  storedDigest,
  contentTypeName,
  storedToWire,
} from './stored-record';
import type { WriteAdmission } from './disk-guard';
import { TransactionBudget } from './transaction-budget';
import { WriterIds } from './writer-ids';

/** Content types a node numbers for compact storage; records of others spell theirs out. */
export const MAX_NUMBERED_CONTENT_TYPES = 4096;

/**
 * The node's embedded database: LMDB on the node's volume. Keys are
 * [u16 partition][key bytes] so one partition is one contiguous range (streaming
 * and repair scan ranges); values are records in their on-disk form
 * (node/stored-record.ts: the wire header made compact, writer ids numbered by
 * node/writer-ids.ts). What goes in and comes out is the wire form (common/record.ts).
 *
 * Durability: LMDB commits are crash-safe; with overlapping sync a commit is
 * visible before it is on disk, so a write is acknowledged only after
 * `flushed` resolves. Writes issued in the same turn share one transaction and
 * one flush (group commit), so durability does not cost a flush per request.
 * A transaction holds at most `maxRecordsPerTransaction` records (TransactionBudget), so a
 * bulk load does not leave a large part of the file on LMDB's free list.
 */
export const MAX_PARTITIONS = 0x10000;
/** LMDB's key limit (1978 bytes in lmdb-js) minus the partition prefix. */
export const MAX_STORED_KEY_BYTES = 1976;

export class StorageError extends KvError {}

export interface StoredWrite {
  readonly partition: number;
  readonly key: Buffer;
  readonly record: Buffer;
}

function checkPartition(partition: number): void {
  if (!Number.isInteger(partition) || partition < 0 || partition >= MAX_PARTITIONS) {
    throw new StorageError('bad_partition', `partition ${partition} out of range`, { partition });
  }
}

export function storageKey(partition: number, key: Uint8Array): Buffer {
  checkPartition(partition);
  if (key.length === 0 || key.length > MAX_STORED_KEY_BYTES) {
    throw new StorageError('bad_key', `key of ${key.length} bytes cannot be stored`, { bytes: key.length });
  }
  const out = Buffer.allocUnsafe(2 + key.length);
  out.writeUInt16BE(partition, 0);
  out.set(key, 2);
  return out;
}

function partitionStart(partition: number): Buffer {
  const b = Buffer.alloc(2);
  if (partition < MAX_PARTITIONS) b.writeUInt16BE(partition, 0);
  else return Buffer.from([0xff, 0xff, 0xff]);
  return b;
}

export interface NodeIdentity {
  readonly nodeId: string;
  readonly cluster: string;
  /** bumped each time this data directory is initialised; an empty disk shows as a new generation */
  readonly generation: number;
  readonly createdAt: string;
}

/** A record that replaced another (or none) under the merge rule. */
export interface AppliedChange {
  readonly partition: number;
  readonly key: Buffer;
  /** version, tombstone and expiry: what the merge rule and the hash trees need, without the value */
  readonly previous: RecordHeader | undefined;
  readonly next: RecordHeader;
}

export type ApplyListener = (changes: readonly AppliedChange[]) => void;

/** Records deleted by `drop` (a partition that moved away): the hash trees forget them. */
export type RemoveListener = (
  partition: number,
  removed: readonly { key: Buffer; record: KvRecord }[],
) => void;

/** One record of a listing: its partition, key and wire-form record (or digest). */
export interface RangeItem {
  readonly p: number;
  readonly k: Buffer;
  readonly r: Buffer;
}

interface RangeCursor {
  readonly p: number;
  readonly it: Iterator<{ key: Buffer; value: Buffer }>;
  /** `after`, while the cursor may still be on it */
  skip: Buffer | undefined;
  key: Buffer;
  raw: Buffer;
}

const EMPTY = Buffer.alloc(0);

export interface ScannedRecord {
  readonly key: Buffer;
  /** encoded record */
  readonly raw: Buffer;
}

/**
 * See Storage.snapshot. `records()` gives every record's header in key order (partition by
 * partition); its `key` is LMDB's own bytes, valid until the next step of the iteration: copy it to keep it.
 */
export interface StorageSnapshot {
  records(): Iterable<{ partition: number; key: Buffer; header: RecordHeader }>;
  get(partition: number, key: Uint8Array): RecordHeader | undefined;
  done(): void;
}

/** A write with its header read and its storage key built, before its transaction. */
interface DecodedWrite {
  readonly partition: number;
  readonly key: Buffer;
  readonly userKey: Buffer;
  readonly rec: RecordHeader;
  readonly w: StoredWrite;
  readonly valueOffset: number;
}

interface PageStats {
  readonly treeBranchPageCount: number;
  readonly treeLeafPageCount: number;
  readonly overflowPages: number;
}

/** Records per LMDB write transaction, at most (TransactionBudget). */
const DEFAULT_MAX_RECORDS_PER_TRANSACTION = 1000;

export class Storage {
  private readonly listeners: ApplyListener[] = [];
  private readonly removeListeners: RemoveListener[] = [];
  /** every database opened in the environment, for the pages in use (diskUsage) */
  private readonly databases: Database[] = [];
  private admission: WriteAdmission | undefined;

  private constructor(
    private readonly root: RootDatabase,
    private readonly data: Database<Buffer, Buffer>,
    private readonly writers: WriterIds,
    private readonly budget: TransactionBudget,
    readonly identity: NodeIdentity,
    /** true when this open created the identity: a new or wiped data directory */
    readonly freshDisk: boolean,
  ) {}

  /**
   * Opens (or initialises) the database in `dir`. Refuses a directory that belongs
   * to another node or cluster: pointing a node at the wrong volume must not
   * silently serve someone else's data.
   */
  static open(
    dir: string,
    expect: { nodeId: string; cluster: string },
    opts: { maxRecordsPerTransaction?: number } = {},
  ): Storage {
    const root = open({ path: dir, compression: false, maxDbs: 16 });
    const data = root.openDB<Buffer, Buffer>({ name: 'data', keyEncoding: 'binary', encoding: 'binary' });
    const meta = root.openDB<unknown, string>({ name: 'meta' });
    let identity = meta.get('identity') as NodeIdentity | undefined;
    const freshDisk = identity === undefined;
    if (identity && (identity.nodeId !== expect.nodeId || identity.cluster !== expect.cluster)) {
      void root.close();
      throw new StorageError(
        'identity_mismatch',
        `data directory ${dir} belongs to node ${identity.nodeId} of cluster ${identity.cluster}, not ${expect.nodeId} of ${expect.cluster}`,
        { dir, found: identity, expected: expect },
      );
    }
    if (!identity) {
      identity = {
        nodeId: expect.nodeId,
        cluster: expect.cluster,
        generation: Date.now(),
        createdAt: new Date().toISOString(),
      };
      meta.putSync('identity', identity);
    }
    const writerDb = root.openDB<Buffer, Buffer>({
      name: 'writers',
      keyEncoding: 'binary',
      encoding: 'binary',
    });
    const writers = new WriterIds(writerDb);
    const budget = new TransactionBudget(
      opts.maxRecordsPerTransaction ?? DEFAULT_MAX_RECORDS_PER_TRANSACTION,
    );
    const storage = new Storage(root, data, writers, budget, identity, freshDisk);
    storage.databases.push(data, meta, writerDb);
    return storage;
  }

  /** From now on every write transaction asks `admission` first (node/disk-guard.ts). */
  admitWritesBy(admission: WriteAdmission): void {
    this.admission = admission;
  }

  /** Asks the admission for a write of `bytes`; throws its refusal. Hints ask it too. */
  admitWrite(bytes: number, shrinking: boolean): void {
    this.admission?.admit(bytes, shrinking);
  }

  /**
   * The LMDB file's size in pages and the bytes of its pages some database uses (the main and
   * free-list databases and the two meta pages included): the rest of the file is reusable.
   */
  diskUsage(): { fileBytes: number; usedBytes: number } {
    const pages = (s: {
      treeBranchPageCount: number;
      treeLeafPageCount: number;
      overflowPages: number;
    }): number => s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
    const env = this.root.getStats() as PageStats & {
      pageSize: number;
      lastPageNumber: number;
      root: PageStats;
      free: PageStats;
    };
    let used = 2 + pages(env.root) + pages(env.free);
    for (const db of this.databases) used += pages(db.getStats() as PageStats);
    return { fileBytes: (env.lastPageNumber + 1) * env.pageSize, usedBytes: used * env.pageSize };
  }

  /*
   * Reads go through getBinaryFast: its buffer is lmdb-js's own, valid until the next get, so
   * what is kept is copied once, and what is only decoded is not copied at all (getBinary copies
   * every value, which a 64 KiB record pays on each read and each overwrite). Naming a writer
   * whose number memory does not hold yet reads LMDB and so reuses that buffer: `fast` copies the
   * record first in that window (a transaction that numbered a new writer, until it is remembered).
   */

  private fast(key: Buffer): Buffer | undefined {
    const raw = this.data.getBinaryFast(key);
    return raw && !this.writers.settled ? Buffer.from(raw.subarray(0, raw.length)) : raw;
  }

  get(partition: number, key: Uint8Array): KvRecord | undefined {
    const raw = this.fast(storageKey(partition, key));
    return raw ? decodeStoredRecord(raw, this.writers) : undefined;
  }

  /** The record in its wire form, in a buffer of its own. */
  getEncoded(partition: number, key: Uint8Array): Buffer | undefined {
    const raw = this.fast(storageKey(partition, key));
    return raw ? storedToWire(raw, this.writers) : undefined;
  }

  /** The stored record's wire digest (common/record.ts recordDigest), without its value. */
  getDigest(partition: number, key: Uint8Array): Buffer | undefined {
    const raw = this.fast(storageKey(partition, key));
    return raw ? storedDigest(raw, this.writers) : undefined;
  }

  /**
   * Applies writes under the merge rule (a record replaces the stored one only if
   * its version is higher) and resolves once they are durable. Result per item:
   * true when stored, false when an equal or newer version was already there.
   */
  async apply(writes: readonly StoredWrite[]): Promise<boolean[]> {
    // Headers only (no copy of the value): the merge rule and the listeners need versions, not values.
    let bytes = 0;
    let shrinking = true;
    const decoded = writes.map((w): DecodedWrite => {
      bytes += w.key.length + w.record.length;
      const { header, valueOffset } = decodeRecordLayout(w.record);
      return {
        partition: w.partition,
        key: storageKey(w.partition, w.key),
        userKey: w.key,
        rec: header,
        w,
        valueOffset,
      };
    });
    for (const d of decoded) if (!d.rec.tombstone) shrinking = false;
    // Before any transaction: a full disk refuses here, not with ENOSPC inside LMDB's commit.
    if (decoded.length > 0) this.admission?.admit(bytes, shrinking);
    const applied: boolean[] = [];
    // Bounded transactions (TransactionBudget): a bulk batch commits in slices, each on its own.
    for (let i = 0; i < decoded.length; i += this.budget.max) {
      applied.push(...(await this.commit(decoded.slice(i, i + this.budget.max))));
    }
    await this.root.flushed;
    return applied;
  }

  private async commit(batch: readonly DecodedWrite[]): Promise<boolean[]> {
    if (!this.budget.tryAcquire(batch.length)) await this.budget.acquire(batch.length);
    const changes: AppliedChange[] = [];
    // Writer and content type numbers given or looked up on disk inside the transaction: memory learns
    // them after commit.
    const numbered = new Map<string, number>();
    let applied: boolean[];
    try {
      applied = await this.data.transaction(() =>
        batch.map(({ partition, key, userKey, rec, w, valueOffset }) => {
          const currentRaw = this.fast(key);
          const current = currentRaw ? decodeStoredHeader(currentRaw, this.writers) : undefined;
          if (!supersedes(rec, current)) return false;
          const numberOf = (name: string): number => {
            let id = this.writers.known(name) ?? numbered.get(name);
            if (id === undefined) {
              id = this.writers.idInTransaction(name);
              numbered.set(name, id);
            }
            return id;
          };
          const type = rec.contentType === undefined ? undefined : contentTypeName(rec.contentType);
          // Past MAX_NUMBERED_CONTENT_TYPES a new type is not numbered (clients choose types, and every
          // number stays in memory): such a record is stored in its wire form, which spells it out.
          const numberable =
            type === undefined ||
            this.writers.known(type) !== undefined ||
            numbered.has(type) ||
            this.writers.contentTypes < MAX_NUMBERED_CONTENT_TYPES;
          const stored = numberable
            ? encodeStoredRecord(
                rec,
                numberOf(rec.version.writer),
                w.record.subarray(valueOffset),
                type === undefined ? undefined : numberOf(type),
              )
            : undefined;
          this.data.putSync(key, stored ?? w.record);
          changes.push({ partition, key: userKey, previous: current, next: rec });
          return true;
        }),
      );
    } catch (err) {
      this.writers.forget(numbered.values());
      throw await this.commitFailure(err);
    } finally {
      this.budget.release(batch.length);
    }
    for (const [writer, id] of numbered) this.writers.remember(writer, id);
    // Listeners (hash trees) learn of a change once it is committed, before it is acknowledged.
    if (changes.length > 0) for (const l of this.listeners) l(changes);
    return applied;
  }

  /**
   * A transaction LMDB could not commit (lmdb-js rejects it with `commitError`, a promise of the
   * cause: ENOSPC, EIO): told to the admission, which refuses writes for a while, and turned into
   * a StorageError the writer answers with. Anything else is not a commit failure and goes on up.
   */
  private async commitFailure(err: unknown): Promise<unknown> {
    const pending = (err as { commitError?: unknown } | undefined)?.commitError;
    if (!(pending instanceof Promise)) return err;
    const cause: unknown = await pending.then(
      () => err,
      (e: unknown) => e,
    );
    this.admission?.onCommitFailure(cause);
    return new StorageError(
      'write_failed',
      `the database could not commit a write (${errorMessage(cause)})`,
      {},
      {
        cause,
      },
    );
  }

  /** Called with every batch of records that replaced older ones, right after commit. */
  onApplied(listener: ApplyListener): void {
    this.listeners.push(listener);
  }

  /**
   * A consistent read view of the whole database, held until `done()`: every
   * record in key order, and point reads as of the same instant, while writes
   * go on. Holding it keeps LMDB from reusing pages freed meanwhile, so hold it
   * for seconds, not hours.
   */
  snapshot(): StorageSnapshot {
    const txn = this.data.useReadTransaction();
    const data = this.data;
    const writers = this.writers;
    let open = true;
    return {
      *records() {
        for (const { key, value } of data.getRange({ transaction: txn })) {
          yield {
            partition: key.readUInt16BE(0),
            key: key.subarray(2),
            header: decodeStoredHeader(value, writers),
          };
        }
      },
      get(partition, key) {
        const raw = data.get(storageKey(partition, key), { transaction: txn });
        return raw ? decodeStoredHeader(raw, writers) : undefined;
      },
      done() {
        if (open) txn.done();
        open = false;
      },
    };
  }

  /**
   * Records of one partition in key order, starting after `afterKey` (exclusive),
   * at most `limit`: a partition is one contiguous range, so this is a range scan.
   */
  scan(partition: number, opts: { afterKey?: Buffer; limit?: number } = {}): ScannedRecord[] {
    const start = opts.afterKey
      ? Buffer.concat([storageKey(partition, opts.afterKey), Buffer.from([0])])
      : partitionStart(partition);
    const out: ScannedRecord[] = [];
    for (const { key, value } of this.data.getRange({
      start,
      end: partitionStart(partition + 1),
      limit: opts.limit,
    })) {
      out.push({ key: Buffer.from(key.subarray(2)), raw: storedToWire(value, this.writers) });
    }
    return out;
  }

  /**
   * The records of `partitions` whose keys lie in `range` and come after `after`, in one key order
   * (each partition is a contiguous LMDB range already in key order: a k-way merge of them), at most
   * `limit` records and about `maxBytes` bytes (at least one). `more`: it stopped at a limit.
   * Tombstones and expired records are included. `digest`: records without their values.
   */
  range(
    partitions: readonly number[],
    range: KeyRange,
    opts: { after?: Buffer; limit: number; maxBytes: number; digest?: boolean },
  ): { items: RangeItem[]; more: boolean } {
    // From `after` itself, skipped when found (after + 0x00 could pass LMDB's key length limit).
    const skip =
      opts.after !== undefined && Buffer.compare(opts.after, range.start) >= 0 ? opts.after : undefined;
    const from = skip ?? range.start;
    const convert = opts.digest ? storedDigest : storedToWire;
    const heap = new Heap<RangeCursor>((a, b) => Buffer.compare(a.key, b.key));
    const cursors: RangeCursor[] = [];
    try {
      for (const p of new Set(partitions)) {
        checkPartition(p);
        const start = Buffer.concat([partitionStart(p), from]);
        const end =
          range.end === undefined ? partitionStart(p + 1) : Buffer.concat([partitionStart(p), range.end]);
        if (Buffer.compare(start, end) >= 0) continue;
        const it = this.data.getRange({ start, end })[Symbol.iterator]();
        const cursor: RangeCursor = { p, it, skip, key: EMPTY, raw: EMPTY };
        cursors.push(cursor);
        if (this.advance(cursor, convert)) heap.push(cursor);
      }
      const items: RangeItem[] = [];
      let bytes = 0;
      while (heap.length > 0) {
        if (items.length >= opts.limit) return { items, more: true };
        const top = heap.peek() as RangeCursor;
        if (items.length > 0 && bytes + top.key.length + top.raw.length > opts.maxBytes) {
          return { items, more: true };
        }
        items.push({ p: top.p, k: top.key, r: top.raw });
        bytes += top.key.length + top.raw.length;
        if (this.advance(top, convert)) heap.replace(top);
        else heap.pop();
      }
      return { items, more: false };
    } finally {
      // Each open iterator holds an LMDB cursor and its read transaction.
      for (const c of cursors) c.it.return?.();
    }
  }

  /** Moves a cursor to its partition's next record, copied out of LMDB's buffers; false at its end. */
  private advance(c: RangeCursor, convert: (buf: Buffer, names: WriterIds) => Buffer): boolean {
    let next = c.it.next();
    if (!next.done && c.skip !== undefined) {
      if (c.skip.equals(next.value.key.subarray(2))) next = c.it.next();
      c.skip = undefined;
    }
    if (next.done) return false;
    c.key = Buffer.from(next.value.key.subarray(2));
    c.raw = convert(next.value.value, this.writers);
    return true;
  }

  /**
   * Deletes a record only if it still has exactly `version` (purging tombstones and
   * expired records): a newer write that raced the purge is never lost.
   */
  async purge(partition: number, key: Buffer, expected: KvRecord): Promise<boolean> {
    const k = storageKey(partition, key);
    return this.data.transaction(() => {
      const raw = this.fast(k);
      if (!raw) return false;
      const current = decodeStoredHeader(raw, this.writers);
      if (compareVersions(current.version, expected.version) !== 0) return false;
      this.data.removeSync(k);
      return true;
    });
  }

  /**
   * Deletes records of a partition this node no longer holds (moved away and
   * past the clean-up grace), each only if it is still exactly the scanned
   * bytes: a write that raced the clean-up is kept. Returns how many went.
   */
  async drop(partition: number, records: readonly ScannedRecord[]): Promise<number> {
    const removed: { key: Buffer; record: KvRecord }[] = [];
    await this.data.transaction(() => {
      for (const { key, raw } of records) {
        const k = storageKey(partition, key);
        const current = this.fast(k);
        if (!current || !raw.equals(storedToWire(current, this.writers))) continue;
        this.data.removeSync(k);
        removed.push({ key, record: decodeRecord(raw) });
      }
    });
    if (removed.length > 0) for (const l of this.removeListeners) l(partition, removed);
    await this.root.flushed;
    return removed.length;
  }

  /** Called with the records `drop` deleted, right after commit. */
  onRemoved(listener: RemoveListener): void {
    this.removeListeners.push(listener);
  }

  /** A named binary sub-database in the same environment (hints, repair state), crash-safe like the data. */
  subDatabase(name: string): Database<Buffer, Buffer> {
    const db = this.root.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary' });
    this.databases.push(db);
    return db;
  }

  /** Resolves once everything committed so far is on disk. */
  async flushed(): Promise<void> {
    await this.root.flushed;
  }

  /** Writes a record built here (used by tests and tools); same merge rule as apply. */
  async applyRecord(partition: number, key: Buffer, rec: KvRecord): Promise<boolean> {
    const [r] = await this.apply([{ partition, key, record: encodeRecord(rec) }]);
    return r;
  }

  stats(): { keys: number; bytes: number } {
    const s = this.data.getStats() as {
      entryCount: number;
      pageSize: number;
      treeBranchPageCount: number;
      treeLeafPageCount: number;
      overflowPages: number;
    };
    return {
      keys: s.entryCount,
      bytes: s.pageSize * (s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages),
    };
  }

  async close(): Promise<void> {
    await this.root.flushed;
    await this.root.close();
  }
}
