import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { intOption, runMain, UsageError } from '../common/cli-options';
import { batchTable, runBatchLoads, type BatchRow } from './batch-load';
import { listTable, runListLoad, type ListRow } from './list-load';
import { DISTRIBUTIONS, type Distribution } from './keys';
import { preload, runLoad, WORKLOADS, type Workload } from './load';
import {
  DIST_BENCH,
  REPO_ROOT,
  startEtcd,
  startKvstore,
  startMinimal,
  startRedis,
  type StartOptions,
  type System,
} from './peers';
import { profileMarkdown, summariseProfile } from './profile-summary';
import { cpuTable, machine, ratios, ratioTable, table, type ResultRow } from './report';
import { cpuSeconds } from './process-stats';
import { runRedisBenchmark } from './redis-benchmark';

/**
 * `npm run bench`: starts each system on loopback, preloads the keys, runs each
 * workload for a fixed time with the same concurrency, key count and value
 * size, and writes JSON and a markdown table. Systems run one after the other,
 * never side by side, so each gets the whole machine (minus the generator).
 */
const USAGE = `usage: npm run bench -- [--duration S] [--warmup S] [--keys N] [--value-size B] [--concurrency C]
       [--systems minimal,redis,etcd,kvstore-rf1,kvstore-rf3] [--workloads get,put,mixed]
       [--distributions uniform,zipfian] [--batch-sizes 16,100] [--list-page 1000] [--wrk] [--profile] [--out FILE.json] [--work-dir DIR]
  --batch-sizes: batches of these sizes, get and put: kvstore's POST /v1/batch, etcd's Txn, Redis pipelines
    ('' for none)
  --list-page: walk every key in pages of this size: kvstore's GET /v1/kv, etcd's range, Redis SCAN + MGET
    (0 for none)
  --wrk: also drive each system with a tool we did not write: wrk (HTTP systems), redis-benchmark (Redis)`;

const SYSTEMS = ['minimal', 'redis', 'etcd', 'kvstore-rf1', 'kvstore-rf3'] as const;
type SystemName = (typeof SYSTEMS)[number];

export interface BenchOptions {
  readonly durationS: number;
  readonly warmupS: number;
  readonly keys: number;
  readonly valueSize: number;
  readonly concurrency: number;
  readonly systems: readonly SystemName[];
  readonly workloads: readonly Workload[];
  readonly distributions: readonly Distribution[];
  readonly batchSizes: readonly number[];
  /** page size of the listing run; 0: none */
  readonly listPage: number;
  readonly wrk: boolean;
  readonly profile: boolean;
  readonly out: string;
  readonly workDir: string;
}

export interface BenchReport {
  readonly command: string;
  readonly startedAt: string;
  readonly machine: ReturnType<typeof machine>;
  readonly options: Omit<BenchOptions, 'workDir' | 'out'>;
  readonly systems: Record<string, string>;
  readonly results: ResultRow[];
  readonly batches: BatchRow[];
  readonly lists: ListRow[];
  readonly ratios: Record<string, ReturnType<typeof ratios>>;
  readonly profiles?: string;
}

function list<T extends string>(flag: string, raw: string, allowed: readonly T[]): T[] {
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const i of items) {
    if (!(allowed as readonly string[]).includes(i))
      throw new UsageError(`--${flag}: ${i} is not one of ${allowed.join(', ')}`);
  }
  return items as T[];
}

function batchSizes(raw: string): number[] {
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => intOption('batch-sizes', s, 0, 1, 1000));
}

export function parseBenchArgs(argv: readonly string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      keys: { type: 'string' },
      'value-size': { type: 'string' },
      concurrency: { type: 'string' },
      systems: { type: 'string', default: SYSTEMS.join(',') },
      workloads: { type: 'string', default: WORKLOADS.join(',') },
      distributions: { type: 'string', default: 'uniform' },
      'batch-sizes': { type: 'string', default: '16,100' },
      'list-page': { type: 'string' },
      wrk: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      out: { type: 'string', default: path.join('bench', 'results', 'latest.json') },
      'work-dir': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return undefined;
  }
  return {
    durationS: intOption('duration', values.duration, 10, 1, 3600),
    warmupS: intOption('warmup', values.warmup, 1, 0, 600),
    keys: intOption('keys', values.keys, 100_000, 1, 10_000_000),
    valueSize: intOption('value-size', values['value-size'], 100, 1, 64 * 1024),
    concurrency: intOption('concurrency', values.concurrency, 50, 1, 10_000),
    systems: list('systems', values.systems, SYSTEMS),
    workloads: list('workloads', values.workloads, WORKLOADS),
    distributions: list('distributions', values.distributions, DISTRIBUTIONS),
    batchSizes: batchSizes(values['batch-sizes']),
    listPage: intOption('list-page', values['list-page'], 1000, 0, 10_000),
    wrk: values.wrk,
    profile: values.profile,
    out: values.out,
    workDir: values['work-dir'] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-bench-')),
  };
}

function start(name: SystemName, opts: StartOptions): Promise<System> {
  switch (name) {
    case 'minimal':
      return startMinimal(opts);
    case 'redis':
      return startRedis(opts);
    case 'etcd':
      return startEtcd(opts);
    case 'kvstore-rf1':
      return startKvstore({ ...opts, nodes: 1, replicationFactor: 1 });
    case 'kvstore-rf3':
      return startKvstore({ ...opts, nodes: 3, replicationFactor: 3 });
  }
}

type Say = (line: string) => void;

export class WrkError extends Error {
  override readonly name = 'WrkError';
}

/** wrk against the first endpoint, parsed from the JSON line our Lua script prints. */
function runWrk(sys: System, workload: Workload, o: BenchOptions): Promise<ResultRow | undefined> {
  const api = sys.protocol.name === 'etcd-http' ? 'etcd' : sys.protocol.name === 'kv-http' ? 'kv' : undefined;
  if (!api) return Promise.resolve(undefined);
  const ep = sys.endpoints[0];
  const script = path.join(REPO_ROOT, 'bench', 'wrk', 'kv.lua');
  const args = [
    '-t1',
    `-c${o.concurrency}`,
    `-d${o.durationS}s`,
    '-s',
    script,
    `http://${ep.host}:${ep.port}`,
    '--',
    api,
    workload,
    String(o.keys),
    String(o.valueSize),
  ];
  return new Promise((resolve, reject) => {
    execFile('wrk', args, { timeout: (o.durationS + 30) * 1000 }, (err, stdout, stderr) => {
      if (err) {
        reject(new WrkError(`wrk ${args.join(' ')} failed: ${err.message} ${stderr}`));
        return;
      }
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        const j = JSON.parse(line) as Record<string, number>;
        resolve({
          system: sys.name,
          tool: 'wrk',
          workload,
          distribution: 'uniform',
          concurrency: o.concurrency,
          durationS: j.durationUs / 1e6,
          ops: j.ops,
          opsPerSec: Math.round(j.opsPerSec),
          errors: j.errors,
          misses: 0,
          latencyUs: { mean: j.mean, p50: j.p50, p90: j.p90, p99: j.p99, p999: j.p999, max: j.max },
        });
      } catch (e) {
        reject(new WrkError(`wrk printed no result line our script writes (${String(e)}): ${line}`));
      }
    });
  });
}

interface CpuSample {
  /** CPU seconds by role, summed over its processes */
  readonly byRole: Map<string, number>;
  readonly generator: NodeJS.CpuUsage;
}

function sampleCpu(sys: System): CpuSample {
  const byRole = new Map<string, number>();
  for (const p of sys.processes()) {
    const s = cpuSeconds(p.pid);
    if (s !== undefined) byRole.set(p.role, (byRole.get(p.role) ?? 0) + s);
  }
  return { byRole, generator: process.cpuUsage() };
}

/** µs of CPU per operation by role, or undefined when /proc could not be read (not Linux). */
function cpuPerOp(a: CpuSample, b: CpuSample, ops: number): Record<string, number> | undefined {
  if (b.byRole.size === 0 || ops === 0) return undefined;
  const out: Record<string, number> = {};
  for (const [role, end] of b.byRole) out[role] = round1(((end - (a.byRole.get(role) ?? end)) * 1e6) / ops);
  const genUs = b.generator.user - a.generator.user + (b.generator.system - a.generator.system);
  out.generator = round1(genUs / ops);
  return out;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

export async function runBench(
  o: BenchOptions,
  say: Say = (l) => process.stdout.write(`${l}\n`),
): Promise<BenchReport> {
  const results: ResultRow[] = [];
  const batches: BatchRow[] = [];
  const lists: ListRow[] = [];
  const described: Record<string, string> = {};
  const profileDir = path.join(o.workDir, 'profiles');
  for (const name of o.systems) {
    // The profile run loads the sampling profiler into kvstore's processes; other systems run as usual.
    const env: Record<string, string> | undefined =
      o.profile && name.startsWith('kvstore')
        ? {
            NODE_OPTIONS: `--require ${path.join(DIST_BENCH, 'profile-hook.js')}`,
            KVSTORE_CPU_PROF_DIR: path.join(profileDir, name),
          }
        : undefined;
    say(`starting ${name}`);
    const sys = await start(name, { workDir: o.workDir, valueSize: o.valueSize, env });
    described[sys.name] = sys.description;
    try {
      const common = {
        endpoints: sys.endpoints,
        protocol: sys.protocol,
        concurrency: o.concurrency,
        keyCount: o.keys,
      };
      const pre = await preload(common);
      say(`  preload ${o.keys} keys: ${pre.opsPerSec} ops/s (${pre.durationS} s)`);
      results.push({ ...pre, system: sys.name, tool: 'ours' });
      for (const workload of o.workloads) {
        for (const distribution of o.distributions) {
          // CPU counted from the end of the warm-up, as the latencies are.
          let before: CpuSample | undefined;
          const warm = setTimeout(() => (before = sampleCpu(sys)), o.warmupS * 1000);
          const r = await runLoad({
            ...common,
            workload,
            distribution,
            durationMs: o.durationS * 1000,
            warmupMs: o.warmupS * 1000,
          });
          clearTimeout(warm);
          const cpuUsPerOp = before && cpuPerOp(before, sampleCpu(sys), r.ops);
          results.push({ ...r, system: sys.name, tool: 'ours', ...(cpuUsPerOp ? { cpuUsPerOp } : {}) });
          say(
            `  ${workload} ${distribution}: ${r.opsPerSec} ops/s p50 ${r.latencyUs.p50} µs p99 ${r.latencyUs.p99} µs p99.9 ${r.latencyUs.p999} µs errors ${r.errors} misses ${r.misses}`,
          );
        }
        if (o.wrk) {
          // Tools we did not write, on the same server: wrk for the HTTP systems, redis-benchmark for Redis.
          const ours = results.at(-o.distributions.length) as ResultRow;
          const w =
            sys.protocol.name === 'resp'
              ? await runRedisBenchmark(sys.name, sys.endpoints[0], workload, {
                  concurrency: o.concurrency,
                  keys: o.keys,
                  valueSize: o.valueSize,
                  requests: Math.max(10_000, Math.round(ours.opsPerSec * o.durationS)),
                })
              : await runWrk(sys, workload, o);
          if (w) {
            results.push(w);
            say(
              `  ${w.tool} ${workload}: ${w.opsPerSec} ops/s p50 ${w.latencyUs.p50} µs p99 ${w.latencyUs.p99} µs`,
            );
          }
        }
      }
      // Keys are preloaded: every get of a batch finds its key.
      batches.push(...(await runBatchLoads(sys, { ...o, sizes: o.batchSizes }, say)));
      if (o.listPage > 0) {
        const row = await runListLoad(
          sys,
          { keys: o.keys, pageSize: o.listPage, durationS: o.durationS },
          say,
        );
        if (row) lists.push(row);
      }
    } finally {
      await sys.stop();
    }
  }
  const rs: Record<string, ReturnType<typeof ratios>> = {
    'kvstore 3 nodes RF 3 / etcd 3 members': ratios(results, 'kvstore 3 nodes RF 3', 'etcd 3 members'),
    'kvstore 1 node RF 1 / minimal node:http': ratios(results, 'kvstore 1 node RF 1', 'minimal node:http'),
  };
  let profiles: string | undefined;
  if (o.profile && fs.existsSync(profileDir)) {
    const parts: string[] = [];
    for (const sysDir of fs.readdirSync(profileDir).sort()) {
      for (const f of fs.readdirSync(path.join(profileDir, sysDir)).sort()) {
        if (!f.endsWith('.cpuprofile')) continue;
        parts.push(
          `### ${sysDir}: ${f}\n\n${profileMarkdown(summariseProfile(path.join(profileDir, sysDir, f)))}`,
        );
      }
    }
    profiles = parts.join('\n\n');
  }
  const options: BenchReport['options'] = {
    durationS: o.durationS,
    warmupS: o.warmupS,
    keys: o.keys,
    valueSize: o.valueSize,
    concurrency: o.concurrency,
    systems: o.systems,
    workloads: o.workloads,
    distributions: o.distributions,
    batchSizes: o.batchSizes,
    listPage: o.listPage,
    wrk: o.wrk,
    profile: o.profile,
  };
  return {
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    startedAt: new Date().toISOString(),
    machine: machine(),
    options,
    systems: described,
    results,
    batches,
    lists,
    ratios: rs,
    ...(profiles ? { profiles } : {}),
  };
}

export function markdown(r: BenchReport): string {
  const m = r.machine;
  return [
    `Command: \`${r.command}\``,
    '',
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}; started ${r.startedAt}.`,
    `Options: ${r.options.keys} keys, ${r.options.valueSize} B values, ${r.options.concurrency} connections, ${r.options.durationS} s per run after ${r.options.warmupS} s warm-up.`,
    '',
    table(r.results),
    '',
    ...(r.batches.length
      ? [
          '### Batches',
          '',
          'Latency is of a whole batch: each of its operations waits that long.',
          '',
          batchTable(r.batches),
          '',
        ]
      : []),
    ...(r.lists.length
      ? [
          '### Listing every key',
          '',
          'One listing at a time, walked from the first key to the last again and again; values included.',
          '',
          listTable(r.lists),
          '',
        ]
      : []),
    '### CPU per operation',
    '',
    cpuTable(r.results),
    '',
    ...Object.entries(r.ratios).flatMap(([k, v]) => (v.length ? [ratioTable(k, v), ''] : [])),
    ...Object.entries(r.systems).map(([k, v]) => `- **${k}**: ${v}`),
    ...(r.profiles ? ['', '## CPU profiles', '', r.profiles] : []),
  ].join('\n');
}

async function main(): Promise<void> {
  const o = parseBenchArgs(process.argv.slice(2));
  if (!o) return;
  const report = await runBench(o);
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, `${JSON.stringify(report, null, 2)}\n`);
  const md = markdown(report);
  fs.writeFileSync(o.out.replace(/\.json$/, '') + '.md', `${md}\n`);
  process.stdout.write(`\n${md}\n\nwrote ${o.out}\n`);
  fs.rmSync(o.workDir, { recursive: true, force: true });
}

if (require.main === module) runMain('kvstore-bench', main);
