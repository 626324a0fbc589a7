import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { FileMetadataStore, type FileMetadataStoreOptions } from './file-metadata-store';
import { MetadataError, PartitionMapHolder } from './metadata-store';
import { testMap, captureLogger, until } from './metadata-store.fixtures';

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  if (r.pid === undefined) throw new Error('cannot spawn node');
  return r.pid;
}

/**
 * A child process that loads TypeScript through TypeScript's own transpiler
 * (no build step) and keeps bumping the epoch by compareAndSet until `target`,
 * printing the epochs it won.
 */
const RACER = `
const ts = require('typescript');
const fs = require('node:fs');
require.extensions['.ts'] = (m, filename) => {
  const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    fileName: filename,
  });
  m._compile(out.outputText, filename);
};
const [file, tag, target] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const { FileMetadataStore } = require(${JSON.stringify(path.join(__dirname, 'file-metadata-store.ts'))});
const pino = require('pino');
const map = (epoch) => ({
  cluster: 'c1', epoch, partitionCount: 1, replicationFactor: 1,
  nodes: [{ id: 'n1', address: '127.0.0.1:' + (9000 + tag) }], partitions: [['n1']], moves: [],
});
const go = new Promise((resolve) => process.stdin.once('data', resolve));
(async () => {
  const store = new FileMetadataStore(file, { log: pino({ level: 'silent' }), lockTimeoutMs: 20000 });
  process.stdout.write('ready\\n');
  await go; // all racers start together, not as each finishes loading
  const won = [];
  let lost = 0;
  for (;;) {
    const cur = (await store.load())?.epoch ?? 0;
    if (cur >= target) break;
    if (await store.compareAndSet(map(cur + 1), cur)) won.push(cur + 1);
    else lost++;
  }
  await store.close();
  process.stdout.write(JSON.stringify({ won, lost }) + '\\n');
  process.stdin.destroy();
})().catch((err) => { console.error(err); process.exit(1); });
`;

interface Racer {
  ready: Promise<void>;
  go(): void;
  result: Promise<{ won: number[]; lost: number }>;
}

function startRacer(file: string, tag: number, target: number): Racer {
  const child = spawn(process.execPath, ['-e', RACER, file, String(tag), String(target)], {
    cwd: path.join(__dirname, '..'),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    if (out.startsWith('ready\n')) markReady();
  });
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const result = new Promise<{ won: number[]; lost: number }>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      markReady(); // a racer that died before 'ready' must not leave the test waiting for it
      if (code !== 0) reject(new Error(`racer ${tag} exited with ${code}: ${err}`));
      else resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as { won: number[]; lost: number });
    });
  });
  return { ready, go: () => child.stdin.write('go\n'), result };
}

describe('FileMetadataStore (real files)', () => {
  let dir: string;
  let file: string;
  const stores: FileMetadataStore[] = [];
  const open = (opts: FileMetadataStoreOptions = {}, at = file): FileMetadataStore => {
    const s = new FileMetadataStore(at, { log: pino({ level: 'silent' }), ...opts });
    stores.push(s);
    return s;
  };

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-meta-'));
    file = path.join(dir, 'data', 'partition-map.json');
  });
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('loads undefined when nothing was ever written, even without the directory', async () => {
    expect(await open().load()).toBeUndefined();
  });

  it('compareAndSet writes when the epoch matches and refuses a lost race', async () => {
    const store = open();
    expect(await store.compareAndSet(testMap(1), undefined)).toBe(true);
    expect(await store.compareAndSet(testMap(1, { tag: 1 }), 0)).toBe(false);
    expect(await store.compareAndSet(testMap(3), 2)).toBe(false);
    expect(await store.compareAndSet(testMap(2), 1)).toBe(true);
    expect(await store.load()).toEqual(testMap(2));
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(testMap(2));
    // Neither temp files nor the lock stay behind.
    expect(fs.readdirSync(path.dirname(file))).toEqual(['partition-map.json']);
    await expect(store.compareAndSet(testMap(2), 2)).rejects.toMatchObject({ code: 'metadata_invalid' });
  });

  it('lets exactly one of many racing writers win each epoch, across store instances', async () => {
    const writers = [open(), open(), open(), open()];
    let expected: number | undefined;
    for (let epoch = 1; epoch <= 5; epoch++) {
      const attempts = writers.flatMap((w, wi) =>
        Array.from({ length: 8 }, (_, j) => {
          const tag = wi * 8 + j;
          return w.compareAndSet(testMap(epoch, { tag }), expected).then((won) => ({ won, tag }));
        }),
      );
      const results = await Promise.all(attempts);
      const winners = results.filter((r) => r.won);
      expect(winners).toHaveLength(1);
      const stored = await writers[0].load();
      expect(stored?.epoch).toBe(epoch);
      expect(stored?.nodes[2].address).toBe(`127.0.0.1:${8000 + winners[0].tag}`);
      expected = epoch;
    }
    expect(fs.existsSync(`${file}.lock`)).toBe(false);
  });

  it('lets exactly one process win each epoch when several processes race', async () => {
    const target = 40;
    const racers = [0, 1, 2, 3].map((tag) => startRacer(file, tag, target));
    await Promise.all(racers.map((r) => r.ready));
    racers.forEach((r) => r.go());
    const results = await Promise.all(racers.map((r) => r.result));
    const all = results.flatMap((r) => r.won).sort((a, b) => a - b);
    // Each epoch won once: a broken lock would let two racers both move cur -> cur + 1.
    expect(all).toEqual(Array.from({ length: target }, (_, i) => i + 1));
    // They really raced: some compare-and-sets lost to another process.
    expect(results.reduce((n, r) => n + r.lost, 0)).toBeGreaterThan(0);
    expect((await open().load())?.epoch).toBe(target);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['partition-map.json']);
  }, 30_000);

  it('watch sees a write made by another store instance (fs.watch, not the poll)', async () => {
    const writer = open();
    const reader = open({ pollIntervalMs: 60_000 });
    await writer.compareAndSet(testMap(1), undefined); // the directory exists, so fs.watch can start
    const seen: number[] = [];
    const off = reader.watch((m) => seen.push(m.epoch));
    await until(() => seen.length === 1);
    expect(await writer.compareAndSet(testMap(2), 1)).toBe(true);
    await until(() => seen.includes(2));
    expect(seen).toEqual([1, 2]);
    off();
  });

  it('watch starts before the directory exists and catches up by polling', async () => {
    const reader = open({ pollIntervalMs: 30 });
    const seen: number[] = [];
    reader.watch((m) => seen.push(m.epoch));
    await new Promise((r) => setTimeout(r, 50));
    await open().compareAndSet(testMap(1), undefined);
    await until(() => seen.length === 1);
    expect(seen).toEqual([1]);
  });

  it('reports a corrupt file as a typed error, logs it in the watcher, and recovers', async () => {
    const { log, lines } = captureLogger();
    const store = open({ log, pollIntervalMs: 30 });
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, '{"cluster": "c1", "epoch": ');
    const err = await store.load().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetadataError);
    expect(err).toMatchObject({ code: 'metadata_corrupt', failure: 'corrupt', context: { path: file } });

    fs.writeFileSync(file, JSON.stringify({ ...testMap(1), partitions: [] }));
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_corrupt' });

    const seen: number[] = [];
    store.watch((m) => seen.push(m.epoch));
    await until(() => lines.some((l) => /cannot load the stored map/.test(String(l.msg))));
    expect(seen).toEqual([]);

    // A CAS on a corrupt file fails typed and still releases the lock.
    await expect(store.compareAndSet(testMap(2), 1)).rejects.toMatchObject({ code: 'metadata_corrupt' });
    expect(fs.existsSync(`${file}.lock`)).toBe(false);

    fs.writeFileSync(file, JSON.stringify(testMap(3)));
    await until(() => seen.length === 1);
    expect(seen).toEqual([3]);
  });

  it('with a cluster set, refuses writing and reading maps of another cluster', async () => {
    const store = open({ cluster: 'c1' });
    await expect(store.compareAndSet(testMap(1, { cluster: 'c2' }), undefined)).rejects.toMatchObject({
      code: 'metadata_invalid',
    });
    await open().compareAndSet(testMap(1, { cluster: 'c2' }), undefined);
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_corrupt' });
  });

  it('a holder following the file never goes back to an older epoch', async () => {
    const { log, lines } = captureLogger();
    const writer = open();
    await writer.compareAndSet(testMap(1), undefined);
    const reader = open({ log, pollIntervalMs: 30 });
    const holder = await PartitionMapHolder.follow(reader);
    expect(holder.epoch()).toBe(1);
    await writer.compareAndSet(testMap(3), 1);
    await holder.waitForEpoch(3, 3000);

    // Someone puts an old copy back by hand (e.g. a restored backup).
    fs.writeFileSync(file, JSON.stringify(testMap(2)));
    await until(() => lines.some((l) => /went backwards/.test(String(l.msg))));
    expect(holder.epoch()).toBe(3);
    expect((await holder.refresh())?.epoch).toBe(3);
    expect(holder.accept(testMap(2))).toBe(false);
    holder.stop();
  });

  describe('lock file', () => {
    const lockPath = (): string => `${file}.lock`;
    const writeLock = (owner: object | string, ageMs = 0): void => {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(lockPath(), typeof owner === 'string' ? owner : JSON.stringify(owner));
      if (ageMs > 0) {
        const t = new Date(Date.now() - ageMs);
        fs.utimesSync(lockPath(), t, t);
      }
    };

    it('breaks a lock whose owner process is dead', async () => {
      const { log, lines } = captureLogger();
      writeLock({ pid: deadPid(), host: os.hostname(), token: 'dead', createdAt: Date.now() });
      const store = open({ log, lockTimeoutMs: 2000 });
      expect(await store.compareAndSet(testMap(1), undefined)).toBe(true);
      expect(lines.some((l) => /broke a stale partition map lock/.test(String(l.msg)))).toBe(true);
      expect(fs.existsSync(lockPath())).toBe(false);
    });

    it('waits for a live owner, then fails with lock_timeout naming the holder', async () => {
      const owner = { pid: process.ppid, host: os.hostname(), token: 'live', createdAt: Date.now() };
      writeLock(owner);
      const store = open({ lockTimeoutMs: 200 });
      const started = Date.now();
      const err = await store.compareAndSet(testMap(1), undefined).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'metadata_lock_timeout', context: { holder: owner } });
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
      expect(fs.existsSync(lockPath())).toBe(true); // not ours to remove
      expect(fs.existsSync(file)).toBe(false);
    });

    it('breaks a lock older than lockStaleMs even if its pid is alive', async () => {
      writeLock({ pid: process.ppid, host: os.hostname(), token: 'old', createdAt: 0 }, 10_000);
      const store = open({ lockStaleMs: 5000, lockTimeoutMs: 1000 });
      expect(await store.compareAndSet(testMap(1), undefined)).toBe(true);
    });

    it('breaks an ownerless (half-written) lock after a short grace', async () => {
      writeLock('', 5000);
      expect(await open({ lockTimeoutMs: 1000 }).compareAndSet(testMap(1), undefined)).toBe(true);
    });

    it('a release never deletes a lock someone else took over', async () => {
      const { log, lines } = captureLogger();
      const store = open({ log });
      const origWrite = fs.promises.rename;
      const spy = jest.spyOn(fs.promises, 'rename').mockImplementation(async (from, to) => {
        // While we hold the lock, someone judges it stale and takes it.
        fs.writeFileSync(
          lockPath(),
          JSON.stringify({ pid: process.ppid, host: os.hostname(), token: 'thief' }),
        );
        return origWrite(from, to);
      });
      try {
        expect(await store.compareAndSet(testMap(1), undefined)).toBe(true);
      } finally {
        spy.mockRestore();
      }
      expect(JSON.parse(fs.readFileSync(lockPath(), 'utf8'))).toMatchObject({ token: 'thief' });
      expect(lines.some((l) => /taken over/.test(String(l.msg)))).toBe(true);
    });
  });

  it('after close, calls fail with metadata_closed', async () => {
    const store = open();
    await store.close();
    await expect(store.load()).rejects.toMatchObject({ code: 'metadata_closed' });
    await expect(store.compareAndSet(testMap(1), undefined)).rejects.toMatchObject({
      code: 'metadata_closed',
    });
    expect(() => store.watch(() => undefined)).toThrow(MetadataError);
  });
});
