import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errorMessage } from './errors';
import { createLogger, type Logger } from './logger';
import { checkCompareAndSetArgs, MapWatchHub, MetadataError, type MetadataStore } from './metadata-store';
import {
  InvalidMapError,
  parsePartitionMap,
  serializePartitionMap,
  type PartitionMap,
} from './partition-map';

export interface FileMetadataStoreOptions {
  readonly log?: Logger;
  /** safety-net poll behind fs.watch (default 1000 ms) */
  readonly pollIntervalMs?: number;
  /** how long compareAndSet waits for the lock before failing with lock_timeout (default 5000 ms) */
  readonly lockTimeoutMs?: number;
  /**
   * A lock older than this is broken even when its pid looks alive (pid reuse,
   * another host on a shared disk). The critical section is one read and one
   * small fsync'd write, so this is generous (default 30000 ms).
   */
  readonly lockStaleMs?: number;
  /** when set, maps of another cluster are refused on write and reported as corrupt on read */
  readonly cluster?: string;
}

interface LockOwner {
  readonly pid: number;
  readonly host: string;
  readonly token: string;
  readonly createdAt: number;
}

interface LockSnapshot {
  readonly raw: string;
  readonly ino: number;
  readonly mtimeMs: number;
  readonly owner: LockOwner | undefined;
}

/** A lock file whose creator died before writing its owner is stale after this. */
const UNWRITTEN_LOCK_GRACE_MS = 2000;

/**
 * The partition map as JSON in one file (one machine, no Kubernetes; docs/design.md, "Metadata: ConfigMap and Redis").
 *
 * - Writes are atomic: temp file in the same directory, fsync, rename, fsync
 *   the directory; a reader sees the old map or the new one, never a mix, and
 *   an acknowledged write survives a crash.
 * - compareAndSet is safe across processes: the compare and the write happen
 *   under a lock file created with O_EXCL; a lock left by a dead process (pid
 *   gone) or older than lockStaleMs is broken.
 * - watch() uses fs.watch on the directory (a rename replaces the inode, so
 *   watching the file itself would go deaf after the first write) plus polling.
 */
export class FileMetadataStore implements MetadataStore {
  readonly filePath: string;
  private readonly dir: string;
  private readonly base: string;
  private readonly lockPath: string;
  private readonly breakPath: string;
  private readonly log: Logger;
  private readonly lockTimeoutMs: number;
  private readonly lockStaleMs: number;
  private readonly cluster: string | undefined;
  private readonly hub: MapWatchHub;
  private watcher: fs.FSWatcher | undefined;
  private closed = false;

  constructor(filePath: string, opts: FileMetadataStoreOptions = {}) {
    this.filePath = path.resolve(filePath);
    this.dir = path.dirname(this.filePath);
    this.base = path.basename(this.filePath);
    this.lockPath = `${this.filePath}.lock`;
    this.breakPath = `${this.filePath}.lock.break`;
    this.log = opts.log ?? createLogger('metadata-store');
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 5000;
    this.lockStaleMs = opts.lockStaleMs ?? 30_000;
    this.cluster = opts.cluster;
    this.hub = new MapWatchHub({
      load: () => this.load(),
      pollIntervalMs: opts.pollIntervalMs ?? 1000,
      source: this.filePath,
      log: this.log,
      onStart: () => this.openWatcher(),
      onStop: () => this.closeWatcher(),
      onPoll: () => {
        if (!this.watcher) this.openWatcher();
      },
    });
  }

  async load(): Promise<PartitionMap | undefined> {
    this.ensureOpen();
    let text: string;
    try {
      text = await fsp.readFile(this.filePath, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw new MetadataError(
        'io',
        `cannot read partition map file ${this.filePath}: ${errorMessage(err)}`,
        {
          path: this.filePath,
        },
        { cause: err },
      );
    }
    return this.decode(text);
  }

  async compareAndSet(map: PartitionMap, expectedEpoch: number | undefined): Promise<boolean> {
    this.ensureOpen();
    const clean = checkCompareAndSetArgs(map, expectedEpoch, this.cluster);
    // A mismatch seen without the lock is already a valid answer (the CAS fails at that read),
    // so losers of a race do not queue for the lock only to learn it.
    if (((await this.load())?.epoch ?? 0) !== (expectedEpoch ?? 0)) return false;
    await this.ensureDir();
    const token = await this.acquireLock();
    try {
      const stored = await this.load();
      if ((stored?.epoch ?? 0) !== (expectedEpoch ?? 0)) return false;
      await this.writeAtomically(serializePartitionMap(clean));
    } finally {
      await this.releaseLock(token);
    }
    // Other processes hear of it through fs.watch; our own watchers need not wait for it.
    this.hub.trigger(clean.epoch);
    return true;
  }

  watch(listener: (map: PartitionMap) => void): () => void {
    this.ensureOpen();
    return this.hub.add(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hub.close();
    this.closeWatcher();
  }

  private decode(text: string): PartitionMap {
    let map: PartitionMap;
    try {
      map = parsePartitionMap(text);
    } catch (err) {
      if (!(err instanceof InvalidMapError)) throw err;
      throw new MetadataError(
        'corrupt',
        `partition map file ${this.filePath} is invalid: ${err.message}`,
        { path: this.filePath, ...err.context },
        { cause: err },
      );
    }
    if (this.cluster !== undefined && map.cluster !== this.cluster) {
      throw new MetadataError(
        'corrupt',
        `partition map file ${this.filePath} belongs to cluster ${map.cluster}`,
        {
          path: this.filePath,
          cluster: this.cluster,
          mapCluster: map.cluster,
        },
      );
    }
    return map;
  }

  private async ensureDir(): Promise<void> {
    try {
      await fsp.mkdir(this.dir, { recursive: true });
    } catch (err) {
      throw this.ioError(`cannot create directory ${this.dir}`, err);
    }
  }

  /** temp file, fsync, rename, fsync directory: the rename is the commit point */
  private async writeAtomically(text: string): Promise<void> {
    const tmp = path.join(this.dir, `.${this.base}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      const fh = await fsp.open(tmp, 'wx', 0o644);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, this.filePath);
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch((rmErr: unknown) => {
        this.log.warn({ err: rmErr, path: tmp }, 'cannot remove temporary partition map file');
      });
      throw this.ioError(`cannot write partition map file ${this.filePath}`, err);
    }
    // Without this the rename itself may be lost in a crash, and an acknowledged epoch with it.
    try {
      const dh = await fsp.open(this.dir, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (err) {
      throw this.ioError(`cannot fsync directory ${this.dir}`, err);
    }
  }

  private async acquireLock(): Promise<string> {
    const owner: LockOwner = {
      pid: process.pid,
      host: os.hostname(),
      token: randomUUID(),
      createdAt: Date.now(),
    };
    const deadline = Date.now() + this.lockTimeoutMs;
    let backoffMs = 2;
    for (;;) {
      let fh: fsp.FileHandle | undefined;
      try {
        fh = await fsp.open(this.lockPath, 'wx', 0o644);
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw this.ioError(`cannot create lock file ${this.lockPath}`, err);
      }
      if (fh) {
        try {
          await fh.writeFile(JSON.stringify(owner), 'utf8');
          await fh.close();
          return owner.token;
        } catch (err) {
          // A lock without an owner would block everyone for UNWRITTEN_LOCK_GRACE_MS: take it back.
          await fh.close().catch(() => undefined);
          await fsp.rm(this.lockPath, { force: true }).catch((rmErr: unknown) => {
            this.log.error({ err: rmErr, path: this.lockPath }, 'cannot remove a half-written lock file');
          });
          throw this.ioError(`cannot write lock file ${this.lockPath}`, err);
        }
      }
      if (await this.breakLockIfStale()) continue;
      if (Date.now() >= deadline) {
        let holder: unknown;
        try {
          holder = (await this.readLock())?.owner;
        } catch (err) {
          holder = { unreadable: errorMessage(err) };
        }
        throw new MetadataError(
          'lock_timeout',
          `partition map lock ${this.lockPath} still held after ${this.lockTimeoutMs} ms`,
          { path: this.lockPath, holder },
        );
      }
      // Jitter so racing writers do not retry in lockstep.
      await sleep(backoffMs + Math.random() * backoffMs);
      backoffMs = Math.min(backoffMs * 2, 20);
    }
  }

  private async releaseLock(token: string): Promise<void> {
    try {
      const lock = await this.readLock();
      if (lock?.owner?.token !== token) {
        // Someone judged our lock stale and broke it; deleting theirs would let a third writer in.
        this.log.warn(
          { path: this.lockPath, holder: lock?.owner },
          'partition map lock was taken over; not removing it',
        );
        return;
      }
      await fsp.rm(this.lockPath, { force: true });
    } catch (err) {
      // Releasing runs in a finally: report it without hiding the outcome of the write.
      this.log.error(
        { err, path: this.lockPath },
        'cannot release partition map lock; it will be broken when stale',
      );
    }
  }

  private async readLock(): Promise<LockSnapshot | undefined> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.lockPath, 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    }
    try {
      const [stat, raw] = await Promise.all([fh.stat(), fh.readFile('utf8')]);
      return { raw, ino: stat.ino, mtimeMs: stat.mtimeMs, owner: parseLockOwner(raw) };
    } finally {
      await fh.close();
    }
  }

  private isStale(lock: LockSnapshot): boolean {
    const age = Date.now() - lock.mtimeMs;
    if (!lock.owner) return age > UNWRITTEN_LOCK_GRACE_MS;
    if (age > this.lockStaleMs) return true;
    if (lock.owner.host !== os.hostname() || lock.owner.pid === process.pid) return false;
    return !pidAlive(lock.owner.pid);
  }

  /**
   * Returns true when the lock is gone (broken or released) so the caller
   * retries at once. Breaking happens under a second O_EXCL file and re-checks
   * that the lock is still the same stale one, so two breakers cannot delete a
   * fresh lock taken in between.
   */
  private async breakLockIfStale(): Promise<boolean> {
    let lock: LockSnapshot | undefined;
    try {
      lock = await this.readLock();
    } catch (err) {
      throw this.ioError(`cannot read lock file ${this.lockPath}`, err);
    }
    if (!lock) return true;
    if (!this.isStale(lock)) return false;
    let breaker: fsp.FileHandle;
    try {
      breaker = await fsp.open(this.breakPath, 'wx', 0o644);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw this.ioError(`cannot create ${this.breakPath}`, err);
      await this.removeStaleBreaker();
      return false;
    }
    try {
      await breaker.close();
      const again = await this.readLock();
      if (!again) return true;
      if (again.ino !== lock.ino || again.raw !== lock.raw || !this.isStale(again)) return false;
      await fsp.rm(this.lockPath, { force: true });
      this.log.warn(
        { path: this.lockPath, holder: again.owner, ageMs: Date.now() - again.mtimeMs },
        'broke a stale partition map lock',
      );
      return true;
    } catch (err) {
      throw this.ioError(`cannot break stale lock ${this.lockPath}`, err);
    } finally {
      await fsp.rm(this.breakPath, { force: true }).catch((err: unknown) => {
        this.log.error({ err, path: this.breakPath }, 'cannot remove lock breaker file');
      });
    }
  }

  /** A breaker holds for microseconds; one that old was left by a crash. */
  private async removeStaleBreaker(): Promise<void> {
    try {
      const stat = await fsp.stat(this.breakPath);
      if (Date.now() - stat.mtimeMs > this.lockStaleMs) {
        await fsp.rm(this.breakPath, { force: true });
        this.log.warn({ path: this.breakPath }, 'removed a stale lock breaker file');
      }
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw this.ioError(`cannot inspect ${this.breakPath}`, err);
    }
  }

  private openWatcher(): void {
    if (this.watcher || this.closed) return;
    try {
      // persistent: false so watching never keeps the process alive.
      const watcher = fs.watch(this.dir, { persistent: false }, (_event, filename) => {
        // filename may be missing on some platforms: then any change is worth a look.
        if (!filename || filename === this.base) this.hub.trigger();
      });
      watcher.on('error', (err) => {
        this.log.warn({ err, dir: this.dir }, 'fs.watch failed; polling until it can be re-opened');
        this.closeWatcher();
      });
      this.watcher = watcher;
    } catch (err) {
      // The directory may not exist yet; polling covers it and re-opens the watcher later.
      this.log.debug({ err, dir: this.dir }, 'cannot fs.watch the metadata directory yet; polling');
    }
  }

  private closeWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  private ensureOpen(): void {
    if (this.closed) throw new MetadataError('closed', `file metadata store ${this.filePath} is closed`);
  }

  private ioError(what: string, err: unknown): MetadataError {
    if (err instanceof MetadataError) return err;
    return new MetadataError('io', `${what}: ${errorMessage(err)}`, { path: this.filePath }, { cause: err });
  }
}

function parseLockOwner(raw: string): LockOwner | undefined {
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v !== 'object' || v === null) return undefined;
    const o = v as Record<string, unknown>;
    if (typeof o.pid !== 'number' || typeof o.host !== 'string' || typeof o.token !== 'string')
      return undefined;
    return {
      pid: o.pid,
      host: o.host,
      token: o.token,
      createdAt: typeof o.createdAt === 'number' ? o.createdAt : 0,
    };
  } catch {
    // An empty or half-written lock: its age decides (UNWRITTEN_LOCK_GRACE_MS).
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return !isErrno(err, 'ESRCH');
  }
}

/** Structural, not instanceof: errors from Node's core may come from another realm (jest's vm). */
function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
