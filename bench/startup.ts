import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { intOption, runMain, UsageError } from '../common/cli-options';
import { KvError } from '../common/errors';
import { FileMetadataStore } from '../common/file-metadata-store';
import { partitionOf } from '../common/hash';
import { HybridLogicalClock } from '../common/hlc';
import type { PartitionMap } from '../common/partition-map';
import { decodeRecord, encodeRecord, isValidContentType } from '../common/record';
import { RpcClient } from '../common/rpc-client';
import type { RecordWrite } from '../common/rpc-protocol';
import { keyName } from './keys';
import { freePorts, REPO_ROOT } from './peers';
import { makeValue } from './protocols';
import { machine, type Machine } from './report';
import { seededRandom } from '../common/seeded-random';
import { cpuSeconds, rssMiB } from './process-stats';

/**
 * `npm run bench:startup`: how long a node holding N keys takes to be ready
 * after start, and how much disk those keys take (issue 9: "a node with
 * 1 million keys is ready to serve within 5 s of start; disk use at most 2×
 * the raw data").
 *
 * 1. Preload: one real node process (dist/node/main.js, RF 1, one partition
 *    map in a file naming only it) takes N records over its internal RPC
 *    (`write` op, batches, several in flight), encoded as the gateway encodes
 *    them (common/record.ts): the node's own write path (Storage.apply, group
 *    commit, hash-tree updates) lays out the disk. Keys arrive in random
 *    order by default (as from clients), or in key order (`--order sorted`).
 * 2. The node is stopped (SIGTERM). Then `--runs` times: spawn it on that data
 *    directory, poll its admin port every 20 ms for /healthz (listening) and
 *    /readyz (ready to serve), read its own "hash trees built" log line, check
 *    it reports N stored keys, SIGTERM it and wait for its exit.
 * 3. Disk: the data directory (du), data.mdb alone, and LMDB's data tree,
 *    against the raw data (key bytes + value bytes).
 */
const USAGE = `usage: npm run bench:startup -- [--keys N] [--value-bytes B] [--content-type T] [--runs R]
       [--order random|sorted] [--partitions P] [--batch N] [--in-flight N]
       [--ready-timeout S] [--out FILE.json] [--work-dir DIR] [--keep] [--data-dir DIR]
  --data-dir: a node data directory kept between runs: preloaded when missing, reused (and
  not deleted) when present, so two builds can be timed on the same bytes.`;

export class StartupBenchError extends KvError {}

const HOST = '127.0.0.1';
const MiB = 1024 * 1024;
const POLL_MS = 20;
const NODE_ID = 'n1';
const CLUSTER = 'bench-startup';
/** The gateway's id in `npm start` (local/cluster.ts): the writer of every record, as through the gateway. */
const WRITER = 'gw-local';
const NODE_MAIN = path.join(REPO_ROOT, 'dist', 'node', 'main.js');

export type KeyOrder = 'random' | 'sorted';

export interface StartupBenchOptions {
  readonly keys: number;
  readonly valueBytes: number;
  /** every record carries this content type, as a PUT with that Content-Type stores it */
  readonly contentType?: string;
  readonly runs: number;
  readonly order: KeyOrder;
  readonly partitions: number;
  /** records per `write` RPC during the preload */
  readonly batch: number;
  /** `write` RPCs in flight during the preload */
  readonly inFlight: number;
  readonly readyTimeoutS: number;
  readonly out: string;
  readonly workDir: string;
  readonly keep: boolean;
  /** a data directory kept across runs (preloaded when missing); undefined: a fresh one in workDir */
  readonly dataDir: string | undefined;
}

export interface StartRun {
  readonly run: number;
  /** spawn until /healthz answered 200 (the admin port listens) */
  readonly listeningMs: number;
  /** spawn until /readyz answered 200 (ready to serve) */
  readonly readyMs: number;
  /** spawn until a read of one preloaded key over the node's RPC came back with it (right after ready) */
  readonly firstReadMs: number;
  /** the node's own "hash trees built" `ms` field */
  readonly hashTreeBuildMs: number | undefined;
  /** spawn until the node logged "hash trees built" / "node started" (pino `time` minus spawn wall time) */
  readonly loggedTreesBuiltAtMs: number | undefined;
  readonly loggedStartedAtMs: number | undefined;
  /** CPU time (user + system) the node used until ready, from /proc (Linux): less moved by other load than wall time */
  readonly cpuMs: number | undefined;
  /** resident memory once ready, from /proc (Linux) */
  readonly rssMiB: number | undefined;
  /** kvstore_node_stored_keys once ready */
  readonly storedKeys: number;
  /** kvstore_node_stored_bytes once ready: LMDB's data tree (branch, leaf and overflow pages) */
  readonly storedBytes: number;
  /** SIGTERM until exit */
  readonly stopMs: number;
}

export interface DiskUse {
  /** key bytes + value bytes of every record */
  readonly rawBytes: number;
  /** allocated bytes of the whole data directory (du) */
  readonly dirBytes: number;
  /** data.mdb: apparent size and allocated bytes */
  readonly dataFileBytes: number;
  readonly dataFileAllocatedBytes: number;
  /** LMDB's data tree (kvstore_node_stored_bytes: branch, leaf and overflow pages) */
  readonly dataTreeBytes: number;
  /** dirBytes / rawBytes */
  readonly ratio: number;
}

export interface StartupReport {
  readonly command: string;
  readonly startedAt: string;
  readonly machine: Machine & { readonly loadAverage: number[] };
  /** what dist/ was built from: HEAD and the files that differed from it (figures move with the code) */
  readonly code: CodeState;
  readonly options: Omit<StartupBenchOptions, 'out' | 'workDir'>;
  /** undefined when --data-dir was reused */
  readonly preload: { readonly ms: number; readonly recordsPerSecond: number } | undefined;
  readonly disk: DiskUse;
  readonly runs: readonly StartRun[];
  readonly median: {
    readonly listeningMs: number;
    readonly readyMs: number;
    readonly firstReadMs: number;
    readonly hashTreeBuildMs?: number;
    readonly cpuMs?: number;
  };
}

export interface CodeState {
  readonly commit: string | undefined;
  readonly uncommitted: readonly string[];
}

/** HEAD and `git status --porcelain` of the repository, read only; empty outside a checkout. */
function codeState(): CodeState {
  const git = (args: string[]): string | undefined => {
    try {
      return execFileSync('git', args, {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
    } catch {
      return undefined;
    }
  };
  const status = git(['status', '--porcelain']) ?? '';
  return {
    commit: git(['rev-parse', '--short', 'HEAD'])?.trim(),
    uncommitted: status
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== ''),
  };
}

// ---------------------------------------------------------------- pure helpers

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The order the preload writes keys 0..n-1 in: shuffled (Fisher-Yates, seeded) or ascending. */
export function writeOrder(n: number, order: KeyOrder, seed = 9): Uint32Array {
  const out = Uint32Array.from({ length: n }, (_, i) => i);
  if (order === 'sorted') return out;
  const rand = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}

/** Every JSON log line with `msg` in pino output (other lines, e.g. stack traces, are skipped). */
export function logLines(text: string, msg: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes(msg)) continue;
    try {
      const o = JSON.parse(line) as unknown;
      if (typeof o === 'object' && o !== null && (o as { msg?: unknown }).msg === msg) {
        out.push(o as Record<string, unknown>);
      }
    } catch {
      // not a JSON line
    }
  }
  return out;
}

function numberField(o: Record<string, unknown> | undefined, field: string): number | undefined {
  const v = o?.[field];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

const fmt = (n: number | undefined, digits = 0): string =>
  n === undefined || Number.isNaN(n)
    ? 'n/a'
    : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

export function markdown(r: StartupReport): string {
  const mib = (b: number): string => fmt(b / MiB, 1);
  const lines = [
    `keys ${fmt(r.options.keys)}, values ${r.options.valueBytes} B${r.options.contentType === undefined ? '' : ` (${r.options.contentType})`}, ${r.options.partitions} partitions, preload order ${r.options.order}`,
    '',
    '| keys | value B | raw MiB | disk MiB (du dir) | data.mdb MiB | data tree MiB | disk / raw |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${fmt(r.options.keys)} | ${r.options.valueBytes} | ${mib(r.disk.rawBytes)} | ${mib(r.disk.dirBytes)} | ${mib(r.disk.dataFileAllocatedBytes)} | ${mib(r.disk.dataTreeBytes)} | ${r.disk.ratio.toFixed(2)} |`,
    '',
    '| run | listening ms | ready ms | first read ms | hash-tree build ms (node log) | trees built at ms | node started at ms | CPU ms to ready | RSS MiB | stop ms |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...r.runs.map(
      (x) =>
        `| ${x.run} | ${fmt(x.listeningMs)} | ${fmt(x.readyMs)} | ${fmt(x.firstReadMs)} | ${fmt(x.hashTreeBuildMs)} | ${fmt(x.loggedTreesBuiltAtMs)} | ${fmt(x.loggedStartedAtMs)} | ${fmt(x.cpuMs)} | ${fmt(x.rssMiB)} | ${fmt(x.stopMs)} |`,
    ),
    `| median | ${fmt(r.median.listeningMs)} | ${fmt(r.median.readyMs)} | ${fmt(r.median.firstReadMs)} | ${fmt(r.median.hashTreeBuildMs)} | | | ${fmt(r.median.cpuMs)} | | |`,
    '',
    r.preload
      ? `preload: ${fmt(r.preload.ms / 1000, 1)} s (${fmt(r.preload.recordsPerSecond)} records/s over the node RPC)`
      : 'preload: none (an existing --data-dir)',
    `code: ${r.code.commit ?? 'unknown'}${r.code.uncommitted.length > 0 ? ` + uncommitted ${r.code.uncommitted.join(', ')}` : ''}; load average ${r.machine.loadAverage.map((x) => x.toFixed(1)).join(' ')} on ${r.machine.cpus} CPUs`,
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------- processes and probes

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Status of GET url, or 0 when nothing answered (not listening yet, timeout). */
function httpStatus(url: string, timeoutMs = 1000): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** One sample of a gauge on an admin endpoint (the node's default labels included). */
async function metric(adminUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) return Number(line.split(' ').pop());
  }
  throw new StartupBenchError('metric_missing', `${name} not in ${adminUrl}/metrics`);
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, wait for the exit (SIGKILL after 30 s); the ms it took. */
async function terminate(child: ChildProcess): Promise<number> {
  if (exited(child)) return 0;
  const t0 = performance.now();
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await done;
  clearTimeout(timer);
  if (child.signalCode === 'SIGKILL') {
    throw new StartupBenchError('unclean_stop', 'the node did not stop within 30 s of SIGTERM');
  }
  return Math.round(performance.now() - t0);
}

function allocatedBytes(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.blocks * 512;
  let total = st.blocks * 512;
  for (const e of fs.readdirSync(p)) total += allocatedBytes(path.join(p, e));
  return total;
}

interface NodeSetup {
  readonly dataDir: string;
  readonly mapFile: string;
  readonly rpcPort: number;
  readonly adminPort: number;
  readonly logDir: string;
}

function spawnNode(s: NodeSetup, logName: string): { child: ChildProcess; logFile: string } {
  const logFile = path.join(s.logDir, `${logName}.log`);
  const out = fs.openSync(logFile, 'w');
  try {
    const child = spawn(
      process.execPath,
      [
        NODE_MAIN,
        '--id',
        NODE_ID,
        '--cluster',
        CLUSTER,
        '--data-dir',
        s.dataDir,
        '--listen',
        `${HOST}:${s.rpcPort}`,
        '--admin-listen',
        `${HOST}:${s.adminPort}`,
        '--metadata-file',
        s.mapFile,
      ],
      { stdio: ['ignore', out, out] },
    );
    return { child, logFile };
  } finally {
    fs.closeSync(out);
  }
}

// ---------------------------------------------------------------- preload

async function preload(
  s: NodeSetup,
  o: StartupBenchOptions,
  say: (line: string) => void,
): Promise<{ ms: number }> {
  const { child, logFile } = spawnNode(s, 'node-preload');
  try {
    const admin = `http://${HOST}:${s.adminPort}`;
    const deadline = Date.now() + 60_000;
    while ((await httpStatus(`${admin}/readyz`)) !== 200) {
      if (exited(child) || Date.now() > deadline) {
        throw new StartupBenchError(
          'preload',
          `the node did not get ready for the preload (log: ${logFile})`,
        );
      }
      await sleep(50);
    }
    const clock = new HybridLogicalClock(WRITER);
    const client = new RpcClient({
      nodeId: NODE_ID,
      address: `${HOST}:${s.rpcPort}`,
      clock,
      epoch: () => 1,
      timeoutMs: 120_000,
    });
    const value = makeValue(o.valueBytes);
    const order = writeOrder(o.keys, o.order);
    const t0 = performance.now();
    let next = 0;
    let written = 0;
    let lastSay = t0;
    const worker = async (): Promise<void> => {
      while (next < o.keys) {
        const from = next;
        next = Math.min(o.keys, next + o.batch);
        const items: RecordWrite[] = [];
        for (let j = from; j < next; j++) {
          const k = Buffer.from(keyName(order[j]), 'latin1');
          items.push({
            p: partitionOf(k, o.partitions),
            k,
            r: encodeRecord({
              version: clock.now(),
              value,
              tombstone: false,
              ...(o.contentType === undefined ? {} : { contentType: o.contentType }),
            }),
          });
        }
        const reply = await client.call({ op: 'write', items });
        if (reply.applied.length !== items.length || reply.applied.some((a) => !a)) {
          throw new StartupBenchError('preload', 'the node did not apply every record of a batch');
        }
        written += items.length;
        if (performance.now() - lastSay > 10_000) {
          lastSay = performance.now();
          say(`  preload: ${written.toLocaleString('en-US')} of ${o.keys.toLocaleString('en-US')} keys`);
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: o.inFlight }, () => worker()));
    } finally {
      client.close();
    }
    const ms = Math.round(performance.now() - t0);
    const stored = await metric(admin, 'kvstore_node_stored_keys');
    if (stored !== o.keys) {
      throw new StartupBenchError(
        'preload',
        `the node stores ${stored} keys after the preload, not ${o.keys}`,
      );
    }
    return { ms };
  } finally {
    await terminate(child);
  }
}

// ---------------------------------------------------------------- one start

/** Reads key 0 over the node's RPC; resolves to performance.now() once it came back with its record. */
async function readOneKey(s: NodeSetup, o: StartupBenchOptions): Promise<number> {
  const client = new RpcClient({
    nodeId: NODE_ID,
    address: `${HOST}:${s.rpcPort}`,
    clock: new HybridLogicalClock(WRITER),
    epoch: () => 1,
    timeoutMs: o.readyTimeoutS * 1000,
  });
  try {
    const k = Buffer.from(keyName(0), 'latin1');
    const reply = await client.call({ op: 'read', items: [{ p: partitionOf(k, o.partitions), k }] });
    const raw = reply.records?.[0];
    if (!raw) throw new StartupBenchError('preload', `the node does not have ${keyName(0)}`);
    const done = performance.now();
    // The disk figures are those of records that carry the content type asked for.
    const stored = decodeRecord(raw).contentType;
    if (stored !== o.contentType) {
      throw new StartupBenchError(
        'preload',
        `${keyName(0)} has content type ${stored}, not ${o.contentType}`,
      );
    }
    return done;
  } finally {
    client.close();
  }
}

async function measureStart(s: NodeSetup, o: StartupBenchOptions, run: number): Promise<StartRun> {
  const admin = `http://${HOST}:${s.adminPort}`;
  const spawnWall = Date.now();
  const t0 = performance.now();
  const { child, logFile } = spawnNode(s, `node-start-${run}`);
  let listeningMs: number | undefined;
  let readyMs: number | undefined;
  let firstReadMs = NaN;
  let rss: number | undefined;
  let cpu: number | undefined;
  let storedKeys = NaN;
  let storedBytes = NaN;
  let stopMs: number;
  try {
    const deadline = t0 + o.readyTimeoutS * 1000;
    for (let tick = 1; readyMs === undefined; tick++) {
      if (exited(child)) {
        throw new StartupBenchError(
          'node_exited',
          `the node exited during start (code ${child.exitCode}; log: ${logFile})`,
        );
      }
      if (performance.now() > deadline) {
        throw new StartupBenchError(
          'timeout',
          `the node was not ready within ${o.readyTimeoutS} s (log: ${logFile})`,
        );
      }
      if (listeningMs === undefined && (await httpStatus(`${admin}/healthz`)) === 200) {
        listeningMs = performance.now() - t0;
      }
      if (listeningMs !== undefined && (await httpStatus(`${admin}/readyz`)) === 200) {
        readyMs = performance.now() - t0;
        break;
      }
      // Ticks on a fixed 20 ms grid from the spawn, whatever a probe took.
      const wait = t0 + tick * POLL_MS - performance.now();
      if (wait > 0) await sleep(wait);
    }
    const seconds = cpuSeconds(child.pid);
    cpu = seconds === undefined ? undefined : Math.round(seconds * 1000);
    rss = rssMiB(child.pid);
    // Served while the hash trees are still being built (in the background, since they take seconds).
    firstReadMs = (await readOneKey(s, o)) - t0;
    storedKeys = await metric(admin, 'kvstore_node_stored_keys');
    storedBytes = await metric(admin, 'kvstore_node_stored_bytes');
    // Then wait for the trees (anti-entropy needs them), so their build time is measured too.
    while (logLines(fs.readFileSync(logFile, 'utf8'), 'hash trees built').length === 0) {
      if (exited(child) || performance.now() > deadline) {
        throw new StartupBenchError(
          'timeout',
          `the node did not build its hash trees in time (log: ${logFile})`,
        );
      }
      await sleep(POLL_MS);
    }
  } finally {
    stopMs = await terminate(child);
  }
  const text = fs.readFileSync(logFile, 'utf8');
  const trees = logLines(text, 'hash trees built').at(-1);
  const started = logLines(text, 'node started').at(-1);
  const at = (line: Record<string, unknown> | undefined): number | undefined => {
    // pino's time: epoch ms, or an ISO string (common/logger.ts)
    const raw = line?.time;
    const t = typeof raw === 'number' ? raw : typeof raw === 'string' ? Date.parse(raw) : NaN;
    return Number.isFinite(t) ? t - spawnWall : undefined;
  };
  return {
    run,
    listeningMs: Math.round(listeningMs ?? NaN),
    readyMs: Math.round(readyMs),
    firstReadMs: Math.round(firstReadMs),
    hashTreeBuildMs: numberField(trees, 'ms'),
    loggedTreesBuiltAtMs: at(trees),
    loggedStartedAtMs: at(started),
    cpuMs: cpu,
    rssMiB: rss,
    storedKeys,
    storedBytes,
    stopMs,
  };
}

// ---------------------------------------------------------------- the bench

export async function runStartupBench(
  o: StartupBenchOptions,
  say: (line: string) => void = () => undefined,
  command = 'npm run bench:startup',
): Promise<StartupReport> {
  if (!fs.existsSync(NODE_MAIN)) throw new UsageError(`${NODE_MAIN} is missing: run npm run build first`);
  const startedAt = new Date().toISOString();
  const root = fs.mkdtempSync(path.join(o.workDir, 'kvstore-bench-startup-'));
  let failed = true;
  try {
    const base = await freePorts([0, 1]);
    const s: NodeSetup = {
      dataDir: o.dataDir === undefined ? path.join(root, 'data') : path.resolve(o.dataDir),
      mapFile: path.join(root, 'map.json'),
      rpcPort: base,
      adminPort: base + 1,
      logDir: root,
    };
    const map: PartitionMap = {
      cluster: CLUSTER,
      epoch: 1,
      partitionCount: o.partitions,
      replicationFactor: 1,
      nodes: [{ id: NODE_ID, address: `${HOST}:${s.rpcPort}` }],
      partitions: Array.from({ length: o.partitions }, () => [NODE_ID]),
      moves: [],
    };
    const store = new FileMetadataStore(s.mapFile, { cluster: CLUSTER });
    try {
      if (!(await store.compareAndSet(map, undefined))) {
        throw new StartupBenchError('map', `${s.mapFile} already held a map`);
      }
    } finally {
      await store.close();
    }

    let pre: { ms: number } | undefined;
    if (fs.existsSync(path.join(s.dataDir, 'data.mdb'))) {
      say(`reusing ${s.dataDir} (no preload)`);
    } else {
      say(
        `preloading ${o.keys.toLocaleString('en-US')} keys (${o.order} order) into one node over its RPC ...`,
      );
      pre = await preload(s, o, say);
      say(`  preloaded in ${(pre.ms / 1000).toFixed(1)} s`);
    }

    const runs: StartRun[] = [];
    for (let i = 1; i <= o.runs; i++) {
      const r = await measureStart(s, o, i);
      if (r.storedKeys !== o.keys) {
        throw new StartupBenchError(
          'restart',
          `the node reports ${r.storedKeys} keys after start ${i}, not ${o.keys}`,
        );
      }
      runs.push(r);
      say(
        `  start ${i}: listening ${r.listeningMs} ms, ready ${r.readyMs} ms, first read ${r.firstReadMs} ms, hash trees ${r.hashTreeBuildMs ?? 'n/a'} ms`,
      );
    }
    const rawBytes = o.keys * o.valueBytes + sumKeyBytes(o.keys);
    const dataFile = path.join(s.dataDir, 'data.mdb');
    const dirBytes = allocatedBytes(s.dataDir);
    const disk: DiskUse = {
      rawBytes,
      dirBytes,
      dataFileBytes: fs.statSync(dataFile).size,
      dataFileAllocatedBytes: allocatedBytes(dataFile),
      dataTreeBytes: runs[runs.length - 1].storedBytes,
      ratio: Math.round((dirBytes / rawBytes) * 100) / 100,
    };
    const cpus = runs.map((r) => r.cpuMs).filter((x): x is number => x !== undefined);
    const builds = runs.map((r) => r.hashTreeBuildMs).filter((x): x is number => x !== undefined);
    failed = false;
    return {
      command,
      startedAt,
      machine: { ...machine(), loadAverage: os.loadavg() },
      code: codeState(),
      options: {
        keys: o.keys,
        valueBytes: o.valueBytes,
        ...(o.contentType === undefined ? {} : { contentType: o.contentType }),
        runs: o.runs,
        order: o.order,
        partitions: o.partitions,
        batch: o.batch,
        inFlight: o.inFlight,
        readyTimeoutS: o.readyTimeoutS,
        keep: o.keep,
        dataDir: o.dataDir,
      },
      preload: pre && { ms: pre.ms, recordsPerSecond: Math.round(o.keys / (pre.ms / 1000)) },
      disk,
      runs,
      median: {
        listeningMs: median(runs.map((r) => r.listeningMs)),
        readyMs: median(runs.map((r) => r.readyMs)),
        firstReadMs: median(runs.map((r) => r.firstReadMs)),
        ...(builds.length > 0 ? { hashTreeBuildMs: median(builds) } : {}),
        ...(cpus.length > 0 ? { cpuMs: median(cpus) } : {}),
      },
    };
  } finally {
    // A failed run keeps its node logs (the error names them).
    if (o.keep || failed) say(`kept ${root}`);
    else fs.rmSync(root, { recursive: true, force: true });
  }
}

/** Bytes of the key names 0..n-1 (keyName: `key-` and at least 7 digits). */
export function sumKeyBytes(n: number): number {
  let total = 0;
  for (let i = 0; i < n; i++) total += keyName(i).length;
  return total;
}

// ---------------------------------------------------------------- command line

export function parseStartupArgs(argv: readonly string[]): StartupBenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      keys: { type: 'string' },
      'value-bytes': { type: 'string' },
      'content-type': { type: 'string' },
      runs: { type: 'string' },
      order: { type: 'string', default: 'random' },
      partitions: { type: 'string' },
      batch: { type: 'string' },
      'in-flight': { type: 'string' },
      'ready-timeout': { type: 'string' },
      out: { type: 'string', default: path.join('bench', 'results', 'startup-latest.json') },
      'work-dir': { type: 'string' },
      'data-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return undefined;
  }
  if (values.order !== 'random' && values.order !== 'sorted') {
    throw new UsageError(`--order takes random or sorted, got ${JSON.stringify(values.order)}`);
  }
  const contentType = values['content-type'];
  if (contentType !== undefined && !isValidContentType(contentType)) {
    throw new UsageError(`--content-type takes a media type, got ${JSON.stringify(contentType)}`);
  }
  return {
    // key names have 7 digits (bench/keys.ts)
    keys: intOption('keys', values.keys, 1_000_000, 1, 9_999_999),
    valueBytes: intOption('value-bytes', values['value-bytes'], 100, 1, 1024 * 1024),
    ...(contentType === undefined ? {} : { contentType }),
    runs: intOption('runs', values.runs, 3, 1, 100),
    order: values.order,
    partitions: intOption('partitions', values.partitions, 256, 1, 65535),
    batch: intOption('batch', values.batch, 1000, 1, 10_000),
    inFlight: intOption('in-flight', values['in-flight'], 8, 1, 256),
    readyTimeoutS: intOption('ready-timeout', values['ready-timeout'], 300, 1, 3600),
    out: values.out,
    workDir: values['work-dir'] ?? os.tmpdir(),
    dataDir: values['data-dir'],
    keep: values.keep,
  };
}

async function main(): Promise<void> {
  const o = parseStartupArgs(process.argv.slice(2));
  if (!o) return;
  const say = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };
  const command = `npm run bench:startup -- ${process.argv.slice(2).join(' ')}`.trim();
  const report = await runStartupBench(o, say, command);
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`${markdown(report)}\n`);
  say(`JSON in ${o.out}`);
}

if (require.main === module) runMain('bench:startup', main);
