import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { LatencyHistogram, type LatencySummary } from './histogram';
import { picker, type Distribution } from './keys';
import type { Op, Outcome, Protocol, ReplyParser } from './protocols';

/**
 * The load generator: a closed loop of `concurrency` keep-alive connections,
 * each with one request outstanding, for a fixed duration. A request is timed
 * from just before its bytes are written to the last byte of its reply, into an
 * HDR histogram. Closed loop means a stalled server also slows the offered load
 * (coordinated omission): p99.9 here is a floor, not the latency an open-loop
 * client would see.
 *
 * The client speaks HTTP/RESP over raw sockets rather than node:http because on
 * a 2-core machine shared with the servers, every microsecond the generator
 * spends per request is taken from the system under test.
 */
export type Workload = 'get' | 'put' | 'mixed';

export const WORKLOADS: readonly Workload[] = ['get', 'put', 'mixed'];

/** share of PUTs in the mixed workload */
export const MIXED_WRITE_SHARE = 0.1;

export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

export interface LoadOptions {
  /** connections are spread round-robin over these */
  readonly endpoints: readonly Endpoint[];
  readonly protocol: Protocol;
  readonly workload: Workload;
  readonly concurrency: number;
  readonly durationMs: number;
  /** requests before this many ms are sent but not recorded */
  readonly warmupMs?: number;
  readonly keyCount: number;
  readonly distribution: Distribution;
}

export interface LoadResult {
  readonly workload: Workload | 'preload';
  readonly distribution: Distribution | 'sequential';
  readonly concurrency: number;
  readonly durationS: number;
  readonly ops: number;
  readonly opsPerSec: number;
  readonly errors: number;
  readonly misses: number;
  readonly latencyUs: LatencySummary;
}

export class LoadError extends Error {}

interface Conn {
  request(bytes: Buffer): Promise<Outcome>;
  close(): void;
}

function connect(ep: Endpoint, makeParser: () => ReplyParser): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: ep.host, port: ep.port, noDelay: true });
    const parser = makeParser();
    let waiting: { resolve(o: Outcome): void; reject(e: Error): void } | undefined;
    let failure: Error | undefined;
    const fail = (err: Error): void => {
      failure ??= err;
      const w = waiting;
      waiting = undefined;
      w?.reject(failure);
    };
    socket.on('data', (chunk: Buffer) => {
      let outcome: Outcome | undefined;
      try {
        outcome = parser.push(chunk);
      } catch (err) {
        fail(err as Error);
        socket.destroy();
        return;
      }
      if (outcome === undefined) return;
      const w = waiting;
      waiting = undefined;
      w?.resolve(outcome);
    });
    socket.once('connect', () =>
      resolve({
        request(bytes) {
          if (failure) return Promise.reject(failure);
          return new Promise<Outcome>((res, rej) => {
            waiting = { resolve: res, reject: rej };
            socket.write(bytes);
          });
        },
        close: () => socket.destroy(),
      }),
    );
    socket.on('error', (err) => {
      fail(err);
      reject(err);
    });
    socket.on('close', () => fail(new LoadError(`connection to ${ep.host}:${ep.port} closed`)));
  });
}

async function openConnections(
  endpoints: readonly Endpoint[],
  n: number,
  protocol: Protocol,
): Promise<Conn[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => connect(endpoints[i % endpoints.length], () => protocol.parser())),
  );
}

/** Runs one workload for a fixed time and summarises it. */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const pick = picker(opts.distribution, opts.keyCount);
  const nextOp: () => Op =
    opts.workload === 'get'
      ? () => 'get'
      : opts.workload === 'put'
        ? () => 'put'
        : () => (Math.random() < MIXED_WRITE_SHARE ? 'put' : 'get');
  return drive(opts, opts.workload, opts.distribution, () => ({ op: nextOp(), key: pick() }));
}

/** Writes keys 0..keyCount-1 once each, as fast as the server takes them. */
export async function preload(
  opts: Omit<LoadOptions, 'workload' | 'durationMs' | 'distribution' | 'warmupMs'>,
): Promise<LoadResult> {
  let next = 0;
  return drive({ ...opts, durationMs: Number.POSITIVE_INFINITY }, 'preload', 'sequential', () =>
    next < opts.keyCount ? { op: 'put', key: next++ } : undefined,
  );
}

async function drive(
  opts: Omit<LoadOptions, 'workload' | 'distribution'>,
  workload: LoadResult['workload'],
  distribution: LoadResult['distribution'],
  nextRequest: () => { op: Op; key: number } | undefined,
): Promise<LoadResult> {
  const conns = await openConnections(opts.endpoints, opts.concurrency, opts.protocol);
  const hist = new LatencyHistogram();
  const warmupMs = opts.warmupMs ?? 0;
  const t0 = performance.now();
  const recordFrom = t0 + warmupMs;
  const stopAt = recordFrom + opts.durationMs;
  let errors = 0;
  let misses = 0;
  let lastDone = recordFrom;
  let firstError: Error | undefined;
  const loop = async (c: Conn): Promise<void> => {
    for (;;) {
      const start = performance.now();
      if (start >= stopAt) return;
      const r = nextRequest();
      if (!r) return;
      let outcome: Outcome;
      try {
        outcome = await c.request(opts.protocol.request(r.op, r.key));
      } catch (err) {
        // A broken connection ends this connection's loop; the run reports it as an error.
        firstError ??= err as Error;
        errors++;
        return;
      }
      const end = performance.now();
      if (start < recordFrom) continue;
      lastDone = end;
      if (outcome === 'error') errors++;
      else if (outcome === 'miss') misses++;
      hist.record((end - start) * 1000);
    }
  };
  try {
    await Promise.all(conns.map(loop));
  } finally {
    for (const c of conns) c.close();
  }
  if (hist.count === 0) {
    throw new LoadError(`no request completed${firstError ? `: ${firstError.message}` : ''}`);
  }
  const elapsedS = (Math.max(lastDone, recordFrom) - recordFrom) / 1000;
  return {
    workload,
    distribution,
    concurrency: opts.concurrency,
    durationS: round(elapsedS, 2),
    ops: hist.count,
    opsPerSec: Math.round(hist.count / elapsedS),
    errors,
    misses,
    latencyUs: hist.summary(),
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
