import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { intOption, runMain, UsageError } from '../common/cli-options';
import { errorMessage, KvError } from '../common/errors';
import { FileMetadataStore } from '../common/file-metadata-store';
import { partitionOf } from '../common/hash';
import { HybridLogicalClock } from '../common/hlc';
import type { Logger } from '../common/logger';
import type { NodeInfo, PartitionMap } from '../common/partition-map';
import { encodeRecord } from '../common/record';
import { Rebalancer } from '../common/rebalancer';
import { LocalCluster } from '../local/cluster';
import { Storage, type StoredWrite } from '../node/storage';
import { LatencyHistogram, type LatencySummary } from './histogram';
import { keyName } from './keys';
import { MIXED_WRITE_SHARE } from './load';
import { ProtocolError, makeValue } from './protocols';
import { freePorts, REPO_ROOT } from './peers';
import { machine } from './report';
import { cpuSeconds } from './process-stats';

/**
 * `npm run bench:rebalance`: how long moving a node's whole data set to another
 * node takes, and what a client sees meanwhile.
 *
 * Per rate limit asked for, on a fresh data directory:
 * 1. A 1-node RF 1 LocalCluster is started once (it creates the partition map
 *    and n1's data directory) and stopped; n1's LMDB is then filled directly
 *    with `Storage.apply` (bypassing the gateway: 1 M PUTs through it take
 *    minutes) and the cluster started again.
 * 2. A closed-loop client (default 8 connections, 90% GET / 10% PUT of
 *    existing keys) runs through the gateway: a baseline, the move, and a
 *    stretch after it, each in its own HDR histogram.
 * 3. Node n2 is started by hand next to the cluster (as e2e/partition-move.test.ts
 *    does) and an in-process Rebalancer scales the map to [n2]: every partition
 *    moves n1 -> n2. The move lasts from `scale` to `idle()`.
 * 4. Checks: every GET during the run returned its own key's value and never
 *    one older than the last acknowledged PUT; afterwards every key PUT during
 *    the run plus a random sample read back exactly; the map lists n2 alone
 *    for every partition; n2 stores every key.
 */
const USAGE = `usage: npm run bench:rebalance -- [--gib G] [--value-size B] [--concurrency C]
       [--max-bytes-per-second N|NMiB|default ...] [--baseline S] [--after S] [--warmup S]
       [--verify-keys N] [--partitions P] [--move-timeout S] [--out FILE.json] [--work-dir DIR] [--keep]
  --max-bytes-per-second may be repeated (or comma-separated): one full run per value, each on fresh data;
  "default" leaves n2's --move-max-bytes-per-second flag unset (the node default, 32 MiB/s).`;

export class RebalanceBenchError extends KvError {}

const HOST = '127.0.0.1';
const MiB = 1024 * 1024;
/** Records per Storage.apply during the preload: one transaction and one flush each. */
const PRELOAD_BATCH = 16_384;
/** The value's tag (`key-0001234:17:`) must fit with room to spare. */
const MIN_VALUE_SIZE = 32;
const NODE_MAIN = path.join(REPO_ROOT, 'dist', 'node', 'main.js');

export interface RebalanceBenchOptions {
  readonly gib: number;
  readonly valueSize: number;
  readonly concurrency: number;
  /** one run per entry; undefined = the node's default limit (flag not passed) */
  readonly limits: readonly (number | undefined)[];
  readonly baselineS: number;
  readonly afterS: number;
  readonly warmupS: number;
  readonly verifyKeys: number;
  readonly partitions: number;
  readonly moveTimeoutS: number;
  readonly out: string;
  readonly workDir: string;
  readonly keep: boolean;
}

// ---------------------------------------------------------------- pure helpers

/** `33554432`, `32MiB`, `512MiB`, `1GiB`, `64KiB`, or `default` (undefined). */
export function parseByteRate(raw: string): number | undefined {
  const s = raw.trim();
  if (s === 'default') return undefined;
  const m = /^(\d+)(KiB|MiB|GiB)?$/.exec(s);
  if (!m) {
    throw new UsageError(
      `--max-bytes-per-second takes bytes per second (e.g. 33554432, 32MiB, 1GiB) or "default", got ${JSON.stringify(raw)}`,
    );
  }
  const unit = m[2] === 'KiB' ? 1024 : m[2] === 'MiB' ? MiB : m[2] === 'GiB' ? 1024 * MiB : 1;
  const n = Number(m[1]) * unit;
  // The node's own bounds for --move-max-bytes-per-second.
  if (n < 1024 || n > 2 ** 40) throw new UsageError(`--max-bytes-per-second must be 1 KiB..1 TiB, got ${n}`);
  return n;
}

export function formatRate(limit: number | undefined): string {
  if (limit === undefined) return 'default (32 MiB/s)';
  return limit % MiB === 0 ? `${limit / MiB} MiB/s` : `${limit} B/s`;
}

/** How many values of `valueSize` bytes make `gib` GiB of values. */
export function keysFor(gib: number, valueSize: number): number {
  return Math.max(1, Math.round((gib * 1024 * MiB) / valueSize));
}

const fillers = new Map<number, Buffer>();

/**
 * The value of key `key` after its `gen`-th PUT (0: the preload): it starts with
 * `key-XXXXXXX:gen:` so a reader can tell whose value, and how recent, it got,
 * and is padded to `size` with the generator's usual printable filler.
 */
export function valueFor(key: number, gen: number, size: number): Buffer {
  let filler = fillers.get(size);
  if (!filler) fillers.set(size, (filler = makeValue(size)));
  const out = Buffer.allocUnsafe(size);
  const n = out.write(`${keyName(key)}:${gen}:`, 0, 'latin1');
  filler.copy(out, n, 0, size - n);
  return out;
}

/** The key number and generation a value says it holds, or undefined for bytes valueFor did not make. */
export function parseValueTag(body: Buffer): { key: number; gen: number } | undefined {
  const head = body.toString('latin1', 0, Math.min(body.length, MIN_VALUE_SIZE));
  const m = /^key-(\d+):(\d+):/.exec(head);
  return m ? { key: Number(m[1]), gen: Number(m[2]) } : undefined;
}

export interface HttpReply {
  readonly status: number;
  readonly body: Buffer;
}

/**
 * One HTTP/1.1 reply with its body (bench/protocols.ts's parser only classifies
 * the status; here GET bodies are checked). The gateway always sends
 * Content-Length, so chunked bodies are refused rather than half supported.
 */
export class BodyReplyParser {
  private buf: Buffer | undefined;

  push(chunk: Buffer): HttpReply | undefined {
    const buf = this.buf && this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : chunk;
    this.buf = buf;
    const headEnd = buf.indexOf('\r\n\r\n', 0, 'latin1');
    if (headEnd < 0) return undefined;
    const head = buf.toString('latin1', 0, headEnd).toLowerCase();
    if (!head.startsWith('http/1.')) throw new ProtocolError(`not an HTTP reply: ${head.slice(0, 40)}`);
    const status = Number(head.slice(9, 12));
    const bodyStart = headEnd + 4;
    const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
    let end: number;
    if (cl) end = bodyStart + Number(cl[1]);
    else if (status === 204 || status === 304) end = bodyStart;
    else throw new ProtocolError('reply without Content-Length');
    if (buf.length < end) return undefined;
    if (buf.length > end) throw new ProtocolError('bytes after the reply with no request outstanding');
    this.buf = undefined;
    return { status, body: buf.subarray(bodyStart, end) };
  }
}

/** Key `c + concurrency * j`: connection c is the only writer of its keys, so it knows their last acked value. */
export function ownedKey(conn: number, concurrency: number, keyCount: number, u: number): number {
  const owned = Math.floor((keyCount - 1 - conn) / concurrency) + 1;
  return conn + concurrency * Math.min(owned - 1, Math.floor(u * owned));
}

// ---------------------------------------------------------------- load

type Phase = 'warmup' | 'baseline' | 'during' | 'after' | 'done';
const RECORDED: readonly Phase[] = ['baseline', 'during', 'after'];

interface PhaseStats {
  readonly hist: LatencyHistogram;
  /** by operation: a PUT during a move also waits for the pending replica (W + 1 acks) */
  readonly getHist: LatencyHistogram;
  readonly putHist: LatencyHistogram;
  gets: number;
  puts: number;
  errors: number;
  misses: number;
  /** a GET that returned a value older than one acknowledged before it started, or another key's */
  wrong: number;
  startedAt: number;
  endedAt: number;
}

export interface PhaseResult {
  readonly phase: Phase;
  readonly seconds: number;
  readonly ops: number;
  readonly opsPerSec: number;
  readonly gets: number;
  readonly puts: number;
  readonly errors: number;
  readonly misses: number;
  readonly wrong: number;
  readonly latencyUs: LatencySummary;
  readonly getLatencyUs: LatencySummary;
  readonly putLatencyUs: LatencySummary;
}

const EMPTY_SUMMARY: LatencySummary = { mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };

interface SecondStats {
  readonly hist: LatencyHistogram;
  errors: number;
}

class Conn {
  private socket: net.Socket | undefined;
  private parser = new BodyReplyParser();
  private waiting: { resolve(r: HttpReply): void; reject(e: Error): void } | undefined;

  constructor(private readonly port: number) {}

  async open(): Promise<void> {
    this.parser = new BodyReplyParser();
    const socket = net.connect({ host: HOST, port: this.port, noDelay: true });
    socket.on('data', (chunk: Buffer) => {
      let reply: HttpReply | undefined;
      try {
        reply = this.parser.push(chunk);
      } catch (err) {
        this.fail(err as Error);
        socket.destroy();
        return;
      }
      if (!reply) return;
      const w = this.waiting;
      this.waiting = undefined;
      w?.resolve(reply);
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () =>
      this.fail(new RebalanceBenchError('conn_closed', 'gateway closed the connection')),
    );
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    this.socket = socket;
  }

  request(bytes: Buffer): Promise<HttpReply> {
    const socket = this.socket;
    if (!socket || socket.destroyed) {
      return Promise.reject(new RebalanceBenchError('conn_closed', 'not connected'));
    }
    return new Promise<HttpReply>((resolve, reject) => {
      this.waiting = { resolve, reject };
      socket.write(bytes);
    });
  }

  close(): void {
    this.socket?.destroy();
  }

  private fail(err: Error): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(err);
  }
}

/**
 * The client of the benchmark: `concurrency` keep-alive connections, one request
 * outstanding each (closed loop, so p99.9 is a floor: coordinated omission),
 * 90% GET of a uniform key / 10% PUT of one of the connection's own keys.
 * Latencies go to the histogram of the phase in which the request started.
 */
class MixedLoad {
  private phase: Phase = 'warmup';
  private readonly stats = new Map<Phase, PhaseStats>();
  private readonly seconds: SecondStats[] = [];
  /** last acknowledged generation of every key (0: the preloaded value) */
  readonly acked: Uint32Array;
  private readonly conns: Conn[];
  private loops: Promise<void>[] = [];
  private stopped = false;
  private readonly t0 = performance.now();
  firstProblem: string | undefined;

  constructor(
    private readonly port: number,
    private readonly concurrency: number,
    private readonly keyCount: number,
    private readonly valueSize: number,
  ) {
    this.acked = new Uint32Array(keyCount);
    this.conns = Array.from({ length: concurrency }, () => new Conn(port));
  }

  async start(): Promise<void> {
    await Promise.all(this.conns.map((c) => c.open()));
    this.loops = this.conns.map((c, i) => this.loop(c, i));
  }

  setPhase(p: Phase): void {
    const now = performance.now();
    const prev = this.stats.get(this.phase);
    if (prev) prev.endedAt = now;
    this.phase = p;
    if (RECORDED.includes(p)) {
      this.stats.set(p, {
        hist: new LatencyHistogram(),
        getHist: new LatencyHistogram(),
        putHist: new LatencyHistogram(),
        gets: 0,
        puts: 0,
        errors: 0,
        misses: 0,
        wrong: 0,
        startedAt: now,
        endedAt: now,
      });
    }
  }

  /** Seconds since the load started, for lining the per-second series up with other samples. */
  elapsedS(): number {
    return (performance.now() - this.t0) / 1000;
  }

  async stop(): Promise<void> {
    this.setPhase('done');
    this.stopped = true;
    await Promise.all(this.loops);
    for (const c of this.conns) c.close();
  }

  results(): PhaseResult[] {
    return RECORDED.flatMap((p) => {
      const s = this.stats.get(p);
      if (!s) return [];
      const seconds = (s.endedAt - s.startedAt) / 1000;
      const ops = s.hist.count;
      return [
        {
          phase: p,
          seconds: Math.round(seconds * 100) / 100,
          ops,
          opsPerSec: seconds > 0 ? Math.round(ops / seconds) : 0,
          gets: s.gets,
          puts: s.puts,
          errors: s.errors,
          misses: s.misses,
          wrong: s.wrong,
          latencyUs: ops > 0 ? s.hist.summary() : EMPTY_SUMMARY,
          getLatencyUs: s.getHist.count > 0 ? s.getHist.summary() : EMPTY_SUMMARY,
          putLatencyUs: s.putHist.count > 0 ? s.putHist.summary() : EMPTY_SUMMARY,
        },
      ];
    });
  }

  /** Per second of the run: completed requests and their p99, from `fromS` to `toS` (load clock). */
  perSecond(fromS: number, toS: number): { s: number; ops: number; p99Ms: number; errors: number }[] {
    const out = [];
    for (let s = Math.floor(fromS); s < Math.ceil(toS) && s < this.seconds.length; s++) {
      const b = this.seconds[s];
      if (!b) continue;
      out.push({ s, ops: b.hist.count, p99Ms: b.hist.summary().p99 / 1000, errors: b.errors });
    }
    return out;
  }

  private second(now: number): SecondStats {
    const i = Math.floor((now - this.t0) / 1000);
    let b = this.seconds[i];
    if (!b) this.seconds[i] = b = { hist: new LatencyHistogram(), errors: 0 };
    return b;
  }

  private problem(what: string): void {
    this.firstProblem ??= what;
  }

  private async loop(conn: Conn, index: number): Promise<void> {
    const host = `${HOST}:${this.port}`;
    const getTail = Buffer.from(` HTTP/1.1\r\nHost: ${host}\r\n\r\n`, 'latin1');
    const putTail = Buffer.from(
      ` HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${this.valueSize}\r\n\r\n`,
      'latin1',
    );
    while (!this.stopped) {
      const isPut = Math.random() < MIXED_WRITE_SHARE;
      const key = isPut
        ? ownedKey(index, this.concurrency, this.keyCount, Math.random())
        : Math.floor(Math.random() * this.keyCount);
      const ackedBefore = this.acked[key];
      const gen = ackedBefore + 1;
      const line = Buffer.from(`${isPut ? 'PUT' : 'GET'} /v1/kv/${keyName(key)}`, 'latin1');
      const bytes = isPut
        ? Buffer.concat([line, putTail, valueFor(key, gen, this.valueSize)])
        : Buffer.concat([line, getTail]);
      const phase = this.phase;
      const start = performance.now();
      let reply: HttpReply | undefined;
      let failure: string | undefined;
      try {
        reply = await conn.request(bytes);
      } catch (err) {
        failure = errorMessage(err);
      }
      const end = performance.now();
      const st = this.stats.get(phase);
      const sec = this.second(end);
      if (!reply) {
        // A broken connection is an error of the run; reconnect so the load goes on.
        this.problem(`${isPut ? 'PUT' : 'GET'} ${keyName(key)}: ${failure}`);
        if (st) st.errors++;
        sec.errors++;
        if (this.stopped) break;
        await new Promise((r) => setTimeout(r, 100));
        await conn.open().catch((err: unknown) => this.problem(`reconnect: ${errorMessage(err)}`));
        continue;
      }
      const micros = (end - start) * 1000;
      sec.hist.record(micros);
      if (st) {
        st.hist.record(micros);
        (isPut ? st.putHist : st.getHist).record(micros);
        if (isPut) st.puts++;
        else st.gets++;
      }
      if (isPut) {
        if (reply.status >= 200 && reply.status < 300) this.acked[key] = gen;
        else {
          this.problem(`PUT ${keyName(key)}: HTTP ${reply.status} ${reply.body.toString('utf8', 0, 200)}`);
          if (st) st.errors++;
          sec.errors++;
        }
        continue;
      }
      if (reply.status === 404) {
        this.problem(`GET ${keyName(key)}: 404 for a key that exists`);
        if (st) st.misses++;
        continue;
      }
      if (reply.status !== 200) {
        this.problem(`GET ${keyName(key)}: HTTP ${reply.status} ${reply.body.toString('utf8', 0, 200)}`);
        if (st) st.errors++;
        sec.errors++;
        continue;
      }
      // Its own key, never older than what was acknowledged before the GET, never newer than an issued PUT.
      const tag = parseValueTag(reply.body);
      if (
        !tag ||
        tag.key !== key ||
        tag.gen < ackedBefore ||
        tag.gen > this.acked[key] + 1 ||
        reply.body.length !== this.valueSize
      ) {
        this.problem(
          `GET ${keyName(key)}: got ${reply.body.toString('latin1', 0, 24)}… (${reply.body.length} B), acked gen ${ackedBefore}`,
        );
        if (st) st.wrong++;
      }
    }
  }
}

// ---------------------------------------------------------------- processes and probes

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number, child?: ChildProcess) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new RebalanceBenchError('process_exited', `${what}: the process exited (code ${child.exitCode})`);
    }
    if (await probe().catch(() => false)) return;
    await sleep(100);
  }
  throw new RebalanceBenchError('timeout', `timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Sum of a Prometheus metric's samples (all label sets) on an admin endpoint. */
async function metric(adminUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.split(' ').pop());
  }
  return sum;
}

type CpuSnapshot = Record<string, number | undefined>;

function spawnNode(args: string[], logFile: string): ChildProcess {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, [NODE_MAIN, ...args], { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  return child;
}

async function terminate(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** The last `msg` line of a node's JSON log, e.g. n1's "hash trees built". */
function lastLogLine(file: string, msg: string): Record<string, unknown> | undefined {
  let found: Record<string, unknown> | undefined;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    if (!line.includes(msg)) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.msg === msg) found = o;
    } catch {
      // not a JSON line (a stack trace): skip
    }
  }
  return found;
}

/** Errors of n2's failed stream/sync steps, by message with epoch numbers blanked, from its JSON log. */
function moveStepFailures(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.includes('incoming move step failed')) continue;
    try {
      const o = JSON.parse(line) as { msg?: unknown; err?: unknown };
      if (o.msg !== 'incoming move step failed') continue;
      const err = String(o.err).replace(/\d+/g, 'N');
      out[err] = (out[err] ?? 0) + 1;
    } catch {
      // not a JSON line: skip
    }
  }
  return out;
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? dirBytes(p) : fs.statSync(p).blocks * 512;
  }
  return total;
}

// ---------------------------------------------------------------- preload

/**
 * Writes keys 0..keyCount-1 straight into n1's LMDB (n1 not running), in the
 * node's own record format, so the node finds them at start as if written
 * through the gateway. Sorted by (partition, key), which is LMDB key order:
 * every batch appends, as a bulk load should.
 */
async function preloadNode(
  dir: string,
  map: PartitionMap,
  keyCount: number,
  valueSize: number,
  say: (s: string) => void,
): Promise<{ ms: number; keys: number; diskBytes: number }> {
  const t0 = performance.now();
  const keys = Array.from({ length: keyCount }, (_, i) => Buffer.from(keyName(i), 'latin1'));
  const parts = new Uint16Array(keyCount);
  for (let i = 0; i < keyCount; i++) parts[i] = partitionOf(keys[i], map.partitionCount);
  // Fixed-width names: index order is byte order within a partition.
  const order = Uint32Array.from({ length: keyCount }, (_, i) => i).sort(
    (a, b) => parts[a] - parts[b] || a - b,
  );
  const storage = Storage.open(dir, { nodeId: 'n1', cluster: map.cluster });
  const clock = new HybridLogicalClock('bench-preload');
  try {
    for (let from = 0; from < keyCount; from += PRELOAD_BATCH) {
      const batch: StoredWrite[] = [];
      for (let j = from; j < Math.min(keyCount, from + PRELOAD_BATCH); j++) {
        const i = order[j];
        batch.push({
          partition: parts[i],
          key: keys[i],
          record: encodeRecord({ version: clock.now(), value: valueFor(i, 0, valueSize), tombstone: false }),
        });
      }
      const applied = await storage.apply(batch);
      if (applied.some((a) => !a)) {
        throw new RebalanceBenchError('preload', `n1's data directory ${dir} was not empty`);
      }
      if ((from / PRELOAD_BATCH) % 16 === 15) say(`  preload: ${from + batch.length} of ${keyCount} keys`);
    }
    const stats = storage.stats();
    if (stats.keys !== keyCount) {
      throw new RebalanceBenchError(
        'preload',
        `n1 holds ${stats.keys} records after the preload, not ${keyCount}`,
      );
    }
  } finally {
    await storage.close();
  }
  return { ms: Math.round(performance.now() - t0), keys: keyCount, diskBytes: dirBytes(dir) };
}

// ---------------------------------------------------------------- one run

export interface MoveResult {
  readonly limit: string;
  readonly limitBytesPerSecond?: number;
  readonly keys: number;
  readonly valueSize: number;
  readonly valueBytes: number;
  /** 1/5/15-minute load average when the baseline began: other work on the machine */
  readonly loadAverage: readonly number[];
  readonly preloadMs: number;
  readonly n1DiskBytes: number;
  /** LocalCluster.start with the preloaded n1, until the gateway is ready */
  readonly restartMs: number;
  /** n1's own "hash trees built" log line: the anti-entropy scan of its disk at start */
  readonly n1TreeBuildMs?: number;
  readonly moves: number;
  /** scale() to idle() */
  readonly moveMs: number;
  /** scale() until no move is streaming or waiting any more (1 s samples) */
  readonly streamMs?: number;
  readonly firstSwitchMs?: number;
  readonly lastSwitchMs?: number;
  readonly bytesStreamed: number;
  readonly keysStreamed: number;
  readonly mibPerSecMove: number;
  readonly mibPerSecStream?: number;
  readonly phases: readonly PhaseResult[];
  /** CPU % of one core per process and phase */
  readonly cpu: Record<string, Record<string, number>>;
  readonly verify: {
    readonly keysChecked: number;
    readonly putKeys: number;
    readonly mismatches: number;
    readonly firstMismatch?: string;
    readonly n2StoredKeys: number;
    readonly mapNodes: readonly string[];
    readonly partitionsOnN2: number;
    readonly ok: boolean;
  };
  readonly firstLoadProblem?: string;
  /** n2's failed stream/sync steps (each retried after a backoff), by error */
  readonly n2MoveStepFailures: Record<string, number>;
  readonly timeline: readonly {
    readonly t: number;
    readonly bytesStreamed: number;
    readonly movesLeft: number;
    readonly streaming: number;
    readonly syncing: number;
    readonly ready: number;
    readonly ops: number;
    readonly p99Ms: number;
  }[];
}

/** Ctrl-C: stop the processes and delete gigabytes of temp data before exiting. */
const cleanups = new Set<() => void>();
let interrupted = false;

async function runOne(
  o: RebalanceBenchOptions,
  limit: number | undefined,
  say: (s: string) => void,
): Promise<MoveResult> {
  const keyCount = keysFor(o.gib, o.valueSize);
  const dataDir = fs.mkdtempSync(path.join(o.workDir, 'kvstore-rebalance-'));
  const port = await freePorts([0, 1, 2, 101, 102]);
  // LocalCluster's layout: node nK on port+K, its health/metrics on port+100+K.
  const n1Admin = `http://${HOST}:${port + 101}`;
  const n2: NodeInfo = { id: 'n2', address: `${HOST}:${port + 2}` };
  const n2Admin = `http://${HOST}:${port + 102}`;
  const logDir = path.join(dataDir, 'logs');
  const clusterOpts = {
    dataDir,
    port,
    nodes: 1,
    replicationFactor: 1,
    partitionCount: o.partitions,
    // This benchmark drives its own Rebalancer (to a different node set than n1..nN): one map owner.
    rebalancer: false,
    // n1 scans its whole disk into hash trees before it listens: allow for 1 M records on a slow disk.
    startTimeoutMs: 600_000,
  };
  let cluster: LocalCluster | undefined;
  let n2Proc: ChildProcess | undefined;
  let rebalancer: Rebalancer | undefined;
  let load: MixedLoad | undefined;
  const clusterPids: number[] = [];
  const emergency = (): void => {
    n2Proc?.kill('SIGKILL');
    for (const pid of clusterPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (!o.keep) fs.rmSync(dataDir, { recursive: true, force: true });
  };
  cleanups.add(emergency);
  try {
    say(
      `[${formatRate(limit)}] data dir ${dataDir}, gateway port ${port}, ${keyCount} keys of ${o.valueSize} B`,
    );
    // 1. The map and n1's directory, made by LocalCluster itself; then n1's disk filled while it is down.
    cluster = await LocalCluster.start(clusterOpts);
    await cluster.stop();
    cluster = undefined;
    const mapStore = new FileMetadataStore(path.join(dataDir, 'partition-map.json'), {
      log: pino({ level: 'silent' }),
    });
    const map = await mapStore.load();
    await mapStore.close();
    if (!map) throw new RebalanceBenchError('no_map', 'LocalCluster did not write a partition map');
    if (map.nodes.length !== 1 || map.nodes[0].id !== 'n1' || map.replicationFactor !== 1) {
      throw new RebalanceBenchError(
        'unexpected_map',
        `expected one node n1 at RF 1, got ${JSON.stringify(map.nodes)}`,
      );
    }
    const pre = await preloadNode(path.join(dataDir, 'nodes', 'n1'), map, keyCount, o.valueSize, say);
    say(
      `  preloaded ${keyCount} keys in ${(pre.ms / 1000).toFixed(1)} s (bypassing the gateway), n1 disk ${(pre.diskBytes / MiB).toFixed(0)} MiB`,
    );
    if (interrupted) throw new RebalanceBenchError('interrupted', 'interrupted');

    const tRestart = performance.now();
    cluster = await LocalCluster.start(clusterOpts);
    const restartMs = Math.round(performance.now() - tRestart);
    for (const name of ['gateway', 'n1']) {
      const pid = cluster.pid(name);
      if (pid !== undefined) clusterPids.push(pid);
    }
    const built = lastLogLine(path.join(logDir, 'n1.log'), 'hash trees built');
    const n1TreeBuildMs = typeof built?.ms === 'number' ? built.ms : undefined;
    const n1Keys = await metric(n1Admin, 'kvstore_node_stored_keys');
    if (n1Keys !== keyCount) {
      throw new RebalanceBenchError(
        'preload',
        `n1 reports ${n1Keys} stored keys after restart, not ${keyCount}`,
      );
    }
    say(
      `  cluster up again in ${(restartMs / 1000).toFixed(1)} s (n1 built its hash trees in ${n1TreeBuildMs} ms)`,
    );

    // 2. n2, started by hand as e2e/partition-move.test.ts does: LocalCluster knows nothing of it.
    n2Proc = spawnNode(
      [
        '--id',
        'n2',
        '--cluster',
        map.cluster,
        '--data-dir',
        path.join(dataDir, 'nodes', 'n2'),
        '--listen',
        n2.address,
        '--admin-listen',
        `${HOST}:${port + 102}`,
        '--metadata-file',
        cluster.metadataFile,
        '--internal-token-file',
        cluster.internalTokenFile,
        ...(limit === undefined ? [] : ['--move-max-bytes-per-second', String(limit)]),
      ],
      path.join(logDir, 'n2.log'),
    );
    await waitFor(
      'n2 ready',
      async () => (await fetch(`${n2Admin}/readyz`, { signal: AbortSignal.timeout(1000) })).ok,
      60_000,
      n2Proc,
    );
    const log: Logger = pino(
      { level: 'info', base: { component: 'bench-rebalancer' } },
      pino.destination({ dest: path.join(logDir, 'rebalancer.log'), sync: true }),
    );
    const store = new FileMetadataStore(cluster.metadataFile, { log });
    rebalancer = await Rebalancer.start({
      store,
      log,
      pollIntervalMs: 250,
      internalToken: cluster.internalToken,
    });

    // 3. The load: warm-up, baseline, move, after.
    load = new MixedLoad(port, o.concurrency, keyCount, o.valueSize);
    await load.start();
    // Taken once: a launcher that stops drained nodes forgets n1 after the move, and its CPU is then moot.
    const pids: Record<string, number | undefined> = {
      gateway: cluster.pid('gateway'),
      n1: cluster.pid('n1'),
      n2: n2Proc.pid,
    };
    const cpuNow = (): CpuSnapshot => {
      const out: CpuSnapshot = {};
      for (const [name, pid] of Object.entries(pids)) out[name] = cpuSeconds(pid);
      const self = process.cpuUsage();
      out['bench (client + rebalancer)'] = (self.user + self.system) / 1e6;
      return out;
    };
    await sleep(o.warmupS * 1000);
    const loadAverage = os.loadavg().map(round2);
    load.setPhase('baseline');
    const cpuMarks: { phase: string; at: number; cpu: CpuSnapshot }[] = [
      { phase: 'baseline', at: performance.now(), cpu: cpuNow() },
    ];
    say(
      `  baseline ${o.baselineS} s at concurrency ${o.concurrency} (load average ${loadAverage.join(' ')})`,
    );
    await sleep(o.baselineS * 1000);

    load.setPhase('during');
    cpuMarks.push({ phase: 'during', at: performance.now(), cpu: cpuNow() });
    const tMove = performance.now();
    const switches: { ms: number; movesLeft: number }[] = [];
    rebalancer.on('map', (m) => switches.push({ ms: performance.now() - tMove, movesLeft: m.moves.length }));
    const planned = await rebalancer.scale([n2]);
    say(`  move: epoch ${planned.epoch}, ${planned.moves.length} partition moves n1 -> n2`);
    const timeline: MoveResult['timeline'][number][] = [];
    let streamMs: number | undefined;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        await sleep(1000);
        if (!sampling || !rebalancer || !load) break;
        try {
          const p = await rebalancer.progress();
          const t = Math.round(performance.now() - tMove);
          const count = (s: string): number => p.moves.filter((m) => m.state === s).length;
          const nowS = load.elapsedS();
          const last = load.perSecond(nowS - 2, nowS - 1)[0];
          const row = {
            t,
            bytesStreamed: p.bytesStreamed,
            movesLeft: p.movesLeft,
            streaming: count('streaming') + count('waiting'),
            syncing: count('syncing'),
            ready: count('ready'),
            ops: last?.ops ?? 0,
            p99Ms: last?.p99Ms ?? 0,
          };
          timeline.push(row);
          if (streamMs === undefined && p.movesLeft > 0 && row.streaming === 0) streamMs = t;
          if (timeline.length % 10 === 0) {
            say(
              `    t=${(t / 1000).toFixed(0)} s: ${(p.bytesStreamed / MiB).toFixed(0)} MiB streamed, moves left ${p.movesLeft} (streaming ${row.streaming}, syncing ${row.syncing}, ready ${row.ready}), client ${row.ops} ops/s p99 ${row.p99Ms.toFixed(1)} ms`,
            );
          }
        } catch (err) {
          say(`    progress failed: ${errorMessage(err)}`);
        }
      }
    })();
    let moveTimer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        rebalancer.idle(),
        new Promise<never>((_, reject) => {
          moveTimer = setTimeout(
            () =>
              reject(
                new RebalanceBenchError('move_timeout', `the move did not finish in ${o.moveTimeoutS} s`),
              ),
            o.moveTimeoutS * 1000,
          );
        }),
      ]);
    } finally {
      clearTimeout(moveTimer);
      sampling = false;
    }
    const moveMs = Math.round(performance.now() - tMove);
    load.setPhase('after');
    cpuMarks.push({ phase: 'after', at: performance.now(), cpu: cpuNow() });
    await sampler;
    // If the last move ended before a sample saw "none streaming", streaming lasted at most the move.
    streamMs ??= moveMs;
    const bytesStreamed = await metric(n2Admin, 'kvstore_node_move_bytes_streamed_total');
    const keysStreamed = await metric(n2Admin, 'kvstore_node_move_keys_streamed_total');
    say(
      `  moved in ${(moveMs / 1000).toFixed(1)} s: ${(bytesStreamed / MiB).toFixed(0)} MiB, ${keysStreamed} records streamed`,
    );
    await sleep(o.afterS * 1000);
    cpuMarks.push({ phase: 'end', at: performance.now(), cpu: cpuNow() });
    await load.stop();
    const phases = load.results();

    // 4. Checks: the map, n2's record count, and values read back through the gateway.
    const finalMap = rebalancer.current();
    const mapNodes = finalMap?.nodes.map((n) => n.id) ?? [];
    const partitionsOnN2 = finalMap?.partitions.filter((r) => r.length === 1 && r[0] === 'n2').length ?? 0;
    const n2StoredKeys = await metric(n2Admin, 'kvstore_node_stored_keys');
    const verify = await verifyValues(cluster.url, load.acked, o.verifyKeys, o.valueSize);
    const ok =
      verify.mismatches === 0 &&
      mapNodes.length === 1 &&
      mapNodes[0] === 'n2' &&
      partitionsOnN2 === map.partitionCount &&
      (finalMap?.moves.length ?? 1) === 0 &&
      n2StoredKeys === keyCount &&
      phases.every((p) => p.errors === 0 && p.misses === 0 && p.wrong === 0);
    say(
      `  verify: ${verify.keysChecked} keys read back (${verify.putKeys} written during the run), ${verify.mismatches} wrong; map nodes [${mapNodes.join(',')}], ${partitionsOnN2}/${map.partitionCount} partitions on n2, n2 stores ${n2StoredKeys} keys: ${ok ? 'OK' : 'FAILED'}`,
    );

    const cpu: Record<string, Record<string, number>> = {};
    for (let i = 0; i + 1 < cpuMarks.length; i++) {
      const a = cpuMarks[i];
      const b = cpuMarks[i + 1];
      const wall = (b.at - a.at) / 1000;
      const row: Record<string, number> = {};
      for (const name of Object.keys(a.cpu)) {
        const x = a.cpu[name];
        const y = b.cpu[name];
        if (x !== undefined && y !== undefined) row[name] = Math.round(((y - x) / wall) * 100);
      }
      cpu[a.phase] = row;
    }
    // The first 'map' event is the plan itself; switches are the epochs that took moves off it.
    const switchTimes = switches.filter((s) => s.movesLeft < planned.moves.length).map((s) => s.ms);
    const valueBytes = keyCount * o.valueSize;
    return {
      limit: formatRate(limit),
      ...(limit === undefined ? {} : { limitBytesPerSecond: limit }),
      keys: keyCount,
      valueSize: o.valueSize,
      valueBytes,
      loadAverage,
      preloadMs: pre.ms,
      n1DiskBytes: pre.diskBytes,
      restartMs,
      ...(n1TreeBuildMs === undefined ? {} : { n1TreeBuildMs }),
      moves: planned.moves.length,
      moveMs,
      streamMs,
      ...(switchTimes.length > 0
        ? {
            firstSwitchMs: Math.round(switchTimes[0]),
            lastSwitchMs: Math.round(switchTimes[switchTimes.length - 1]),
          }
        : {}),
      bytesStreamed,
      keysStreamed,
      mibPerSecMove: round2(bytesStreamed / MiB / (moveMs / 1000)),
      mibPerSecStream: round2(bytesStreamed / MiB / (streamMs / 1000)),
      phases,
      cpu,
      verify: { ...verify, n2StoredKeys, mapNodes, partitionsOnN2, ok },
      ...(load.firstProblem ? { firstLoadProblem: load.firstProblem } : {}),
      n2MoveStepFailures: moveStepFailures(path.join(logDir, 'n2.log')),
      timeline,
    };
  } finally {
    await load?.stop().catch(() => undefined);
    await rebalancer?.stop().catch(() => undefined);
    await terminate(n2Proc);
    await cluster?.stop().catch((err: unknown) => say(`  cluster stop failed: ${errorMessage(err)}`));
    cleanups.delete(emergency);
    if (o.keep) say(`  kept ${dataDir}`);
    else fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/**
 * Reads back through the gateway every key PUT during the run (its last acked
 * value) and `sample` random keys, a few requests at a time. The load has
 * stopped, so the expected value of each key is exact.
 */
async function verifyValues(
  url: string,
  acked: Uint32Array,
  sample: number,
  valueSize: number,
): Promise<{ keysChecked: number; putKeys: number; mismatches: number; firstMismatch?: string }> {
  const keys = new Set<number>();
  for (let k = 0; k < acked.length; k++) if (acked[k] > 0) keys.add(k);
  const putKeys = keys.size;
  for (let i = 0; i < Math.min(sample, acked.length);) {
    const k = Math.floor(Math.random() * acked.length);
    if (!keys.has(k)) {
      keys.add(k);
      i++;
    }
  }
  const todo = [...keys];
  let mismatches = 0;
  let firstMismatch: string | undefined;
  const worker = async (): Promise<void> => {
    for (let k = todo.pop(); k !== undefined; k = todo.pop()) {
      const want = valueFor(k, acked[k], valueSize);
      let got: string;
      try {
        const res = await fetch(`${url}/v1/kv/${keyName(k)}`, { signal: AbortSignal.timeout(10_000) });
        const body = Buffer.from(await res.arrayBuffer());
        if (res.status === 200 && body.equals(want)) continue;
        got = `HTTP ${res.status}, ${body.toString('latin1', 0, 24)}`;
      } catch (err) {
        got = errorMessage(err);
      }
      mismatches++;
      firstMismatch ??= `${keyName(k)}: want gen ${acked[k]}, got ${got}`;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return { keysChecked: keys.size, putKeys, mismatches, ...(firstMismatch ? { firstMismatch } : {}) };
}

// ---------------------------------------------------------------- report

const ms = (us: number): string => (us / 1000).toFixed(2);
const s1 = (msv: number | undefined): string => (msv === undefined ? '–' : (msv / 1000).toFixed(1));

export function markdown(results: readonly MoveResult[]): string {
  const lines: string[] = [];
  lines.push(
    '| limit | data | streamed | move s | streaming s | MiB/s (move) | MiB/s (streaming) | n1 restart s (tree build) | n2 step retries | load avg | verified |',
    '| ----- | ---- | -------: | -----: | ----------: | -----------: | ----------------: | ------------------------: | --------------: | -------: | -------- |',
  );
  for (const r of results) {
    lines.push(
      `| ${r.limit} | ${r.keys.toLocaleString('en-US')} × ${r.valueSize} B = ${(r.valueBytes / MiB / 1024).toFixed(2)} GiB | ${(r.bytesStreamed / MiB).toFixed(0)} MiB | ${s1(r.moveMs)} | ${s1(r.streamMs)} | ${r.mibPerSecMove.toFixed(1)} | ${(r.mibPerSecStream ?? 0).toFixed(1)} | ${s1(r.restartMs)} (${s1(r.n1TreeBuildMs)}) | ${Object.values(r.n2MoveStepFailures).reduce((a, b) => a + b, 0)} | ${r.loadAverage[0]} | ${r.verify.ok ? 'yes' : '**NO**'} |`,
    );
  }
  lines.push(
    '',
    '| limit | phase | s | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | GET p99 ms | PUT p50 ms | PUT p99 ms | errors | misses | wrong |',
    '| ----- | ----- | -: | ----: | -----: | -----: | -------: | -----: | ---------: | ---------: | ---------: | -----: | -----: | ----: |',
  );
  for (const r of results) {
    for (const p of r.phases) {
      lines.push(
        `| ${r.limit} | ${p.phase} | ${p.seconds.toFixed(1)} | ${p.opsPerSec.toLocaleString('en-US')} | ${ms(p.latencyUs.p50)} | ${ms(p.latencyUs.p99)} | ${ms(p.latencyUs.p999)} | ${ms(p.latencyUs.max)} | ${ms(p.getLatencyUs.p99)} | ${ms(p.putLatencyUs.p50)} | ${ms(p.putLatencyUs.p99)} | ${p.errors} | ${p.misses} | ${p.wrong} |`,
      );
    }
  }
  const procs = [...new Set(results.flatMap((r) => Object.values(r.cpu).flatMap((c) => Object.keys(c))))];
  lines.push(
    '',
    `| limit | phase | ${procs.map((p) => `${p} CPU %`).join(' | ')} |`,
    `| ----- | ----- | ${procs.map(() => '--:').join(' | ')} |`,
  );
  for (const r of results) {
    for (const [phase, row] of Object.entries(r.cpu)) {
      lines.push(`| ${r.limit} | ${phase} | ${procs.map((p) => row[p] ?? '–').join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

export function parseRebalanceArgs(argv: readonly string[]): RebalanceBenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      gib: { type: 'string' },
      'value-size': { type: 'string' },
      concurrency: { type: 'string' },
      'max-bytes-per-second': { type: 'string', multiple: true },
      baseline: { type: 'string' },
      after: { type: 'string' },
      warmup: { type: 'string' },
      'verify-keys': { type: 'string' },
      partitions: { type: 'string' },
      'move-timeout': { type: 'string' },
      out: { type: 'string', default: path.join('bench', 'results', 'rebalance-latest.json') },
      'work-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return undefined;
  }
  const gib = values.gib === undefined ? 1 : Number(values.gib);
  if (!Number.isFinite(gib) || gib <= 0 || gib > 64) {
    throw new UsageError(`--gib must be a number in (0, 64], got ${JSON.stringify(values.gib)}`);
  }
  const valueSize = intOption('value-size', values['value-size'], 1024, MIN_VALUE_SIZE, 1024 * 1024);
  if (keysFor(gib, valueSize) > 9_999_999) {
    throw new UsageError('more than 9,999,999 keys: key names have 7 digits (bench/keys.ts)');
  }
  const limits = (values['max-bytes-per-second'] ?? ['default'])
    .flatMap((v) => v.split(','))
    .filter((v) => v.trim() !== '')
    .map(parseByteRate);
  return {
    gib,
    valueSize,
    concurrency: intOption('concurrency', values.concurrency, 8, 1, 1000),
    limits,
    baselineS: intOption('baseline', values.baseline, 20, 1, 3600),
    afterS: intOption('after', values.after, 10, 1, 3600),
    warmupS: intOption('warmup', values.warmup, 2, 0, 600),
    verifyKeys: intOption('verify-keys', values['verify-keys'], 2000, 0, 10_000_000),
    partitions: intOption('partitions', values.partitions, 256, 1, 65535),
    moveTimeoutS: intOption('move-timeout', values['move-timeout'], 900, 1, 24 * 3600),
    out: values.out,
    workDir: values['work-dir'] ?? os.tmpdir(),
    keep: values.keep,
  };
}

async function main(): Promise<void> {
  const o = parseRebalanceArgs(process.argv.slice(2));
  if (!o) return;
  if (!fs.existsSync(NODE_MAIN)) throw new UsageError(`${NODE_MAIN} is missing: run npm run build first`);
  const say = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };
  process.once('SIGINT', () => {
    interrupted = true;
    say('interrupted: stopping processes and deleting the data directories');
    for (const c of cleanups) c();
    process.exit(130);
  });
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const results: MoveResult[] = [];
  for (const limit of o.limits) results.push(await runOne(o, limit, say));
  const report = {
    command: `npm run bench:rebalance -- ${process.argv.slice(2).join(' ')}`.trim(),
    startedAt,
    totalSeconds: Math.round((performance.now() - t0) / 1000),
    machine: { ...machine(), loadAverage: os.loadavg() },
    options: { ...o, workDir: undefined, out: undefined },
    results,
  };
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`${markdown(results)}\n`);
  say(`total ${report.totalSeconds} s; JSON in ${o.out}`);
  if (!results.every((r) => r.verify.ok)) {
    throw new RebalanceBenchError('verify_failed', 'a run failed its checks (see "verify" in the JSON)');
  }
}

if (require.main === module) runMain('bench:rebalance', main);
