import { execFile } from 'node:child_process';
import type { Endpoint, Workload } from './load';
import type { ResultRow } from './report';

/**
 * Redis driven by `redis-benchmark` (redis-tools), non-pipelined, as the issue
 * asks: a tool we did not write, beside our own generator's Redis rows, as wrk
 * is beside them for the HTTP systems. It has no mixed workload, and its keys
 * are its own (`key:000000012345`, `-r` keys), so a GET run first SETs them.
 */

export class RedisBenchmarkError extends Error {
  override readonly name = 'RedisBenchmarkError';
}

export interface RedisBenchmarkRow {
  readonly test: string;
  readonly rps: number;
  readonly latencyMs: { avg: number; min: number; p50: number; p95: number; p99: number; max: number };
}

/** Parses `redis-benchmark --csv` (Redis 7: test, rps, avg, min, p50, p95, p99, max latency in ms). */
export function parseRedisBenchmarkCsv(text: string): RedisBenchmarkRow[] {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const unquote = (cell: string): string => cell.replace(/^"|"$/g, '');
  const header = lines.shift()?.split(',').map(unquote);
  const want = [
    'test',
    'rps',
    'avg_latency_ms',
    'min_latency_ms',
    'p50_latency_ms',
    'p95_latency_ms',
    'p99_latency_ms',
    'max_latency_ms',
  ];
  if (!header || want.some((h, i) => header[i] !== h)) {
    throw new RedisBenchmarkError(`unexpected redis-benchmark CSV header: ${JSON.stringify(header)}`);
  }
  return lines.map((line) => {
    const cells = line.split(',').map(unquote);
    const n = cells.slice(1).map(Number);
    if (cells.length !== want.length || n.some((x) => !Number.isFinite(x))) {
      throw new RedisBenchmarkError(`unparseable redis-benchmark CSV line: ${line}`);
    }
    const [rps, avg, min, p50, p95, p99, max] = n;
    return { test: cells[0], rps, latencyMs: { avg, min, p50, p95, p99, max } };
  });
}

function redisBenchmark(args: readonly string[], timeoutMs: number): Promise<RedisBenchmarkRow[]> {
  return new Promise((resolve, reject) => {
    execFile('redis-benchmark', args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        reject(new RedisBenchmarkError(`redis-benchmark ${args.join(' ')} failed: ${err.message} ${stderr}`));
        return;
      }
      try {
        resolve(parseRedisBenchmarkCsv(stdout));
      } catch (e) {
        reject(e instanceof Error ? e : new RedisBenchmarkError(String(e)));
      }
    });
  });
}

export interface RedisBenchmarkOptions {
  readonly concurrency: number;
  readonly keys: number;
  readonly valueSize: number;
  /** requests per run: redis-benchmark runs a count, not a duration */
  readonly requests: number;
}

/** One row for `get` (after a SET pass over the same keys) or `put`; undefined for `mixed`. */
export async function runRedisBenchmark(
  system: string,
  ep: Endpoint,
  workload: Workload,
  o: RedisBenchmarkOptions,
): Promise<ResultRow | undefined> {
  if (workload === 'mixed') return undefined;
  const base = [
    '-h',
    ep.host,
    '-p',
    String(ep.port),
    '-c',
    String(o.concurrency),
    '-n',
    String(o.requests),
    '-d',
    String(o.valueSize),
    '-r',
    String(o.keys),
    '-P',
    '1',
    '--csv',
  ];
  const timeoutMs = 10 * 60_000;
  if (workload === 'get') await redisBenchmark([...base, '-t', 'set'], timeoutMs);
  const [row] = await redisBenchmark([...base, '-t', workload === 'get' ? 'get' : 'set'], timeoutMs);
  if (!row) throw new RedisBenchmarkError('redis-benchmark printed no result');
  const us = (msValue: number): number => Math.round(msValue * 1000);
  return {
    system,
    tool: 'redis-benchmark',
    workload,
    distribution: 'uniform',
    concurrency: o.concurrency,
    durationS: Math.round((o.requests / row.rps) * 100) / 100,
    ops: o.requests,
    opsPerSec: Math.round(row.rps),
    errors: 0,
    misses: 0,
    // redis-benchmark reports p50, p95, p99 and max: no p90 or p99.9 (NaN, printed as "–").
    latencyUs: {
      mean: us(row.latencyMs.avg),
      p50: us(row.latencyMs.p50),
      p90: NaN,
      p99: us(row.latencyMs.p99),
      p999: NaN,
      max: us(row.latencyMs.max),
    },
  };
}
