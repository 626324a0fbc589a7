import { open, type Database, type RootDatabase } from 'lmdb';
import { KvError } from '../common/errors';
import { decodeRecord, encodeRecord, supersedes, type KvRecord } from '../common/record';

/**
 * The node's embedded database: LMDB on the node's volume. Keys are
 * [u16 partition][key bytes] so one partition is one contiguous range (streaming
 * and repair scan ranges); values are encoded KvRecords.
 *
 * Durability: LMDB commits are crash-safe; with overlapping sync a commit is
 * visible before it is on disk, so a write is acknowledged only after
 * `flushed` resolves. Writes issued in the same turn share one transaction and
 * one flush (group commit), so durability does not cost a flush per request.
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

export function storageKey(partition: number, key: Uint8Array): Buffer {
  if (!Number.isInteger(partition) || partition < 0 || partition >= MAX_PARTITIONS) {
    throw new StorageError('bad_partition', `partition ${partition} out of range`, { partition });
  }
  if (key.length === 0 || key.length > MAX_STORED_KEY_BYTES) {
    throw new StorageError('bad_key', `key of ${key.length} bytes cannot be stored`, { bytes: key.length });
  }
  const out = Buffer.allocUnsafe(2 + key.length);
  out.writeUInt16BE(partition, 0);
  out.set(key, 2);
  return out;
}

export interface NodeIdentity {
  readonly nodeId: string;
  readonly cluster: string;
  /** bumped each time this data directory is initialised; an empty disk shows as a new generation */
  readonly generation: number;
  readonly createdAt: string;
}

export class Storage {
  private constructor(
    private readonly root: RootDatabase,
    private readonly data: Database<Buffer, Buffer>,
    readonly identity: NodeIdentity,
  ) {}

  /**
   * Opens (or initialises) the database in `dir`. Refuses a directory that belongs
   * to another node or cluster: pointing a node at the wrong volume must not
   * silently serve someone else's data.
   */
  static open(dir: string, expect: { nodeId: string; cluster: string }): Storage {
    const root = open({ path: dir, compression: false, maxDbs: 4 });
    const data = root.openDB<Buffer, Buffer>({ name: 'data', keyEncoding: 'binary', encoding: 'binary' });
    const meta = root.openDB<unknown, string>({ name: 'meta' });
    let identity = meta.get('identity') as NodeIdentity | undefined;
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
    return new Storage(root, data, identity);
  }

  get(partition: number, key: Uint8Array): KvRecord | undefined {
    const raw = this.data.getBinary(storageKey(partition, key));
    return raw ? decodeRecord(raw) : undefined;
  }

  getEncoded(partition: number, key: Uint8Array): Buffer | undefined {
    const raw = this.data.getBinary(storageKey(partition, key));
    return raw ? Buffer.from(raw) : undefined;
  }

  /**
   * Applies writes under the merge rule (a record replaces the stored one only if
   * its version is higher) and resolves once they are durable. Result per item:
   * true when stored, false when an equal or newer version was already there.
   */
  async apply(writes: readonly StoredWrite[]): Promise<boolean[]> {
    const decoded = writes.map((w) => ({
      key: storageKey(w.partition, w.key),
      rec: decodeRecord(w.record),
      raw: w.record,
    }));
    const applied = await this.data.transaction(() =>
      decoded.map(({ key, rec, raw }) => {
        const current = this.data.getBinary(key);
        if (current && !supersedes(rec, decodeRecord(current))) return false;
        this.data.putSync(key, raw);
        return true;
      }),
    );
    await this.root.flushed;
    return applied;
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
