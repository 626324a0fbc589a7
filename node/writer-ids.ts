import type { Database } from 'lmdb';
import { CorruptDataError } from '../common/errors';
import type { WriterNames } from './stored-record';

/*
 * This node's numbering of writer ids (gateway names, node names) and content types (interned as
 * the type after a space, node/stored-record.ts contentTypeName), so that a stored record names its
 * writer and its content type in one or two bytes each (node/stored-record.ts). Kept in its own sub-database of the
 * node's LMDB environment:
 *   [0x00]             -> u32 last number given
 *   [0x01][u32 number] -> writer id
 *   [0x02][writer id]  -> u32 number
 * A number is given inside the write transaction of the first record that needs it, so it is on
 * disk exactly when that record is. Writers are few (one per gateway process that ever wrote) and so are content types, so
 * every entry is held in memory; what memory holds is always committed.
 */
const LAST_KEY = Buffer.from([0x00]);
const BY_NUMBER = 0x01;
const BY_NAME = 0x02;

function numberKey(id: number): Buffer {
  const k = Buffer.allocUnsafe(5);
  k[0] = BY_NUMBER;
  k.writeUInt32BE(id, 1);
  return k;
}

function nameKey(name: string): Buffer {
  return Buffer.concat([Buffer.from([BY_NAME]), Buffer.from(name, 'utf8')]);
}

export class WriterIds implements WriterNames {
  private readonly ids = new Map<string, number>();
  private readonly names = new Map<number, { name: string; bytes: Buffer }>();
  /** Names held that start with a space: content types (node/stored-record.ts contentTypeName). */
  private spaced = 0;
  /** Numbers given by a transaction that memory has not learnt yet (`remember`, `forget`). */
  private readonly unsettled = new Set<number>();

  constructor(private readonly db: Database<Buffer, Buffer>) {
    for (const { key, value } of db.getRange({
      start: Buffer.from([BY_NUMBER]),
      end: Buffer.from([BY_NAME]),
    })) {
      const id = key.readUInt32BE(1);
      const name = value.toString('utf8');
      this.ids.set(name, id);
      this.names.set(id, { name, bytes: Buffer.from(name, 'utf8') });
      if (name.startsWith(' ')) this.spaced++;
    }
  }

  /** How many content types are numbered (committed): the node bounds them (node/storage.ts). */
  get contentTypes(): number {
    return this.spaced;
  }

  /** The writer's number if it is committed; undefined when `idInTransaction` must be asked. */
  known(writer: string): number | undefined {
    return this.ids.get(writer);
  }

  /**
   * The writer's number, given now if it has none: call inside the write transaction that stores
   * a record with it. Memory learns the number once that transaction commits (`remember`).
   */
  idInTransaction(writer: string): number {
    const known = this.ids.get(writer);
    if (known !== undefined) return known;
    const stored = this.db.get(nameKey(writer));
    if (stored) return stored.readUInt32BE(0);
    const last = this.db.get(LAST_KEY);
    const id = (last ? last.readUInt32BE(0) : 0) + 1;
    if (id > 0xffffffff) throw new CorruptDataError('writer numbers are exhausted');
    const idBytes = Buffer.allocUnsafe(4);
    idBytes.writeUInt32BE(id, 0);
    this.db.putSync(LAST_KEY, idBytes);
    this.db.putSync(numberKey(id), Buffer.from(writer, 'utf8'));
    this.db.putSync(nameKey(writer), idBytes);
    this.unsettled.add(id);
    return id;
  }

  /** After commit: the numbers a transaction used are kept in memory. */
  remember(writer: string, id: number): void {
    if (!this.ids.has(writer) && writer.startsWith(' ')) this.spaced++;
    this.ids.set(writer, id);
    this.names.set(id, { name: writer, bytes: Buffer.from(writer, 'utf8') });
    this.unsettled.delete(id);
  }

  /**
   * After a transaction that failed: the numbers it gave are not on disk. One it found on disk
   * (given by another transaction whose caller has not resumed) stays unsettled.
   */
  forget(ids: Iterable<number>): void {
    for (const id of ids) if (!this.bytesOnDisk(id)) this.unsettled.delete(id);
  }

  /**
   * True when memory holds every number, so naming a writer never reads LMDB. A read of LMDB reuses
   * lmdb-js's read buffer, which a record from `getBinaryFast` still sits in: while this is false,
   * such a record must be copied before its writer is named.
   */
  get settled(): boolean {
    return this.unsettled.size === 0;
  }

  nameOf(id: number): string | undefined {
    return this.names.get(id)?.name ?? this.bytesOnDisk(id)?.toString('utf8');
  }

  bytesOf(id: number): Buffer | undefined {
    return this.names.get(id)?.bytes ?? this.bytesOnDisk(id);
  }

  /** Committed by a transaction whose caller has not resumed yet, or read inside the one giving it. */
  private bytesOnDisk(id: number): Buffer | undefined {
    return this.db.get(numberKey(id));
  }
}
