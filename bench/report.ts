import os from 'node:os';
import type { LoadResult, Workload } from './load';

/** One row of the results: a system under one workload. */
export interface ResultRow extends LoadResult {
  readonly system: string;
  /** 'ours' (bench/load.ts), 'wrk' or 'redis-benchmark' */
  readonly tool: string;
  /**
   * CPU time per operation while the run was recorded, in µs, by server process role (summed over
   * the processes of a role) and `generator` (the load generator itself); from /proc
   */
  readonly cpuUsPerOp?: Readonly<Record<string, number>>;
}

export interface Machine {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly os: string;
  readonly node: string;
}

export function machine(): Machine {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
  };
}

/** A tool that does not report a percentile (redis-benchmark has no p99.9) shows a dash. */
const ms = (us: number): string => (Number.isFinite(us) ? (us / 1000).toFixed(2) : '–');

export function table(rows: readonly ResultRow[]): string {
  const head = '| system | tool | workload | keys | ops/s | p50 ms | p99 ms | p99.9 ms | errors | misses |';
  const sep = '|---|---|---|---|--:|--:|--:|--:|--:|--:|';
  const lines = rows.map(
    (r) =>
      `| ${r.system} | ${r.tool} | ${r.workload} | ${r.distribution} | ${r.opsPerSec.toLocaleString('en-US')} | ${ms(r.latencyUs.p50)} | ${ms(r.latencyUs.p99)} | ${ms(r.latencyUs.p999)} | ${r.errors} | ${r.misses} |`,
  );
  return [head, sep, ...lines].join('\n');
}

/**
 * CPU per operation, by process role: what the machine pays for one request, the measure that
 * decides throughput once every core is busy (all systems share the 2 cores with the generator).
 */
export function cpuTable(rows: readonly ResultRow[]): string {
  const measured = rows.filter((r) => r.cpuUsPerOp !== undefined);
  if (measured.length === 0) return '';
  const lines = measured.map((r) => {
    const cpu = r.cpuUsPerOp ?? {};
    const servers = Object.entries(cpu).filter(([role]) => role !== 'generator');
    const serverTotal = servers.reduce((a, [, v]) => a + v, 0);
    const byRole = servers.map(([role, v]) => `${role} ${v.toFixed(0)}`).join(' + ');
    const cores = ((serverTotal + (cpu.generator ?? 0)) * r.opsPerSec) / 1e6;
    return `| ${r.system} | ${r.workload} | ${r.distribution} | ${r.opsPerSec.toLocaleString('en-US')} | ${byRole} | ${serverTotal.toFixed(0)} | ${(cpu.generator ?? NaN).toFixed(0)} | ${cores.toFixed(2)} |`;
  });
  return [
    '| system | workload | keys | ops/s | server CPU µs/op by process | server µs/op | generator µs/op | cores busy |',
    '|---|---|---|--:|---|--:|--:|--:|',
    ...lines,
  ].join('\n');
}

export interface Ratio {
  readonly workload: Workload;
  readonly distribution: string;
  readonly throughput: number;
  readonly p99: number;
}

/** a / b for every workload both ran with our generator */
export function ratios(rows: readonly ResultRow[], a: string, b: string): Ratio[] {
  const out: Ratio[] = [];
  for (const ra of rows) {
    if (ra.system !== a || ra.tool !== 'ours' || ra.workload === 'preload') continue;
    const rb = rows.find(
      (r) =>
        r.system === b &&
        r.tool === 'ours' &&
        r.workload === ra.workload &&
        r.distribution === ra.distribution,
    );
    if (!rb) continue;
    out.push({
      workload: ra.workload,
      distribution: ra.distribution,
      throughput: round2(ra.opsPerSec / rb.opsPerSec),
      p99: round2(ra.latencyUs.p99 / rb.latencyUs.p99),
    });
  }
  return out;
}

export function ratioTable(title: string, rs: readonly Ratio[]): string {
  if (rs.length === 0) return '';
  return [
    `| ${title} | keys | throughput ratio | p99 ratio |`,
    '|---|---|--:|--:|',
    ...rs.map(
      (r) => `| ${r.workload} | ${r.distribution} | ${r.throughput.toFixed(2)} | ${r.p99.toFixed(2)} |`,
    ),
  ].join('\n');
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
