import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort } from './free-port';

/**
 * A real Prometheus server (Debian's `prometheus` package) for the e2e suites:
 * a generated prometheus.yml in a temp dir, a short scrape and rule evaluation
 * interval, a free loopback port, and a typed client for the HTTP API.
 */

export class PrometheusError extends Error {
  override readonly name = 'PrometheusError';
  constructor(
    message: string,
    /** Prometheus' errorType (bad_data for a query that does not parse), when it answered one */
    readonly errorType?: string,
  ) {
    super(message);
  }
}

export interface ScrapeJob {
  readonly job: string;
  /** host:port of each target */
  readonly targets: readonly string[];
  /** target labels added to every series of these targets (and to `up`) */
  readonly labels?: Readonly<Record<string, string>>;
}

export interface PrometheusOptions {
  readonly dir: string;
  readonly jobs: readonly ScrapeJob[];
  readonly scrapeIntervalSeconds?: number;
  /** rules files copied into the config dir and evaluated every scrape interval */
  readonly ruleFiles?: readonly string[];
  readonly binary?: string;
}

export type Sample = { readonly metric: Record<string, string>; readonly value: [number, string] };
export type Series = { readonly metric: Record<string, string>; readonly values: [number, string][] };

export interface QueryResult {
  readonly resultType: 'vector' | 'matrix' | 'scalar' | 'string';
  /** for vector: samples; for scalar/string: [time, value] */
  readonly result: Sample[] | [number, string];
}

export interface Alert {
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
  readonly state: 'inactive' | 'pending' | 'firing';
  readonly value: string;
}

interface ApiAnswer<T> {
  status: 'success' | 'error';
  data?: T;
  errorType?: string;
  error?: string;
}

/** True when the prometheus binary is on PATH (or at the given path). */
export function prometheusAvailable(binary = 'prometheus'): boolean {
  if (binary.includes('/')) return fs.existsSync(binary);
  return (process.env.PATH ?? '')
    .split(path.delimiter)
    .some((d) => d !== '' && fs.existsSync(path.join(d, binary)));
}

/**
 * `promtool test rules FILE` (promtool ships with the prometheus package): rule unit tests on
 * synthetic series, evaluated minute by minute without waiting. Resolves with promtool's output;
 * rejects with it when a test fails or the file does not load.
 */
export function promtoolTestRules(testFile: string, binary = 'promtool'): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, ['test', 'rules', testFile], { timeout: 60_000 }, (err, stdout, stderr) => {
      const out = `${stdout}${stderr}`;
      if (err) reject(new PrometheusError(`promtool test rules ${testFile} failed:\n${out}`));
      else resolve(out);
    });
  });
}

export class PrometheusServer {
  private constructor(
    readonly url: string,
    readonly dir: string,
    private readonly child: ChildProcess,
    private readonly exited: Promise<void>,
    readonly logFile: string,
  ) {}

  static async start(opts: PrometheusOptions): Promise<PrometheusServer> {
    const interval = `${opts.scrapeIntervalSeconds ?? 1}s`;
    const rules = (opts.ruleFiles ?? []).map((f, i) => {
      const dest = path.join(opts.dir, `rules-${i}-${path.basename(f)}`);
      fs.copyFileSync(f, dest);
      return dest;
    });
    // JSON is valid YAML: no YAML library needed to write the config.
    const config = {
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      rule_files: rules,
      scrape_configs: opts.jobs.map((j) => ({
        job_name: j.job,
        static_configs: [{ targets: [...j.targets], labels: { ...(j.labels ?? {}) } }],
      })),
    };
    const configFile = path.join(opts.dir, 'prometheus.yml');
    fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
    const logFile = path.join(opts.dir, 'prometheus.log');
    // The port is free when picked but may be taken before Prometheus binds it: retry a few times.
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const out = fs.openSync(logFile, 'a');
      const child = spawn(
        opts.binary ?? 'prometheus',
        [
          `--config.file=${configFile}`,
          `--storage.tsdb.path=${path.join(opts.dir, 'data')}`,
          `--web.listen-address=127.0.0.1:${port}`,
          // Default lookback is 5 minutes: a killed target's gauges would keep answering instant queries.
          '--query.lookback-delta=30s',
          '--log.level=warn',
        ],
        { stdio: ['ignore', out, out] },
      );
      fs.closeSync(out);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const url = `http://127.0.0.1:${port}`;
      try {
        await waitReady(url, child, logFile);
        return new PrometheusServer(url, opts.dir, child, exited, logFile);
      } catch (err) {
        lastError = err;
        child.kill('SIGKILL');
        await exited;
      }
    }
    throw lastError instanceof Error ? lastError : new PrometheusError(String(lastError));
  }

  /** An instant query; throws PrometheusError (errorType bad_data when it does not parse). */
  async query(expr: string, time?: number): Promise<QueryResult> {
    const params = new URLSearchParams({ query: expr });
    if (time !== undefined) params.set('time', String(time));
    return this.api<QueryResult>(`/api/v1/query?${params.toString()}`);
  }

  async queryRange(expr: string, start: number, end: number, stepSeconds: number): Promise<Series[]> {
    const params = new URLSearchParams({
      query: expr,
      start: String(start),
      end: String(end),
      step: String(stepSeconds),
    });
    const r = await this.api<{ resultType: string; result: Series[] }>(
      `/api/v1/query_range?${params.toString()}`,
    );
    return r.result;
  }

  async alerts(): Promise<Alert[]> {
    return (await this.api<{ alerts: Alert[] }>('/api/v1/alerts')).alerts;
  }

  /** Names of the alerting rules Prometheus loaded from the rule files. */
  async alertRuleNames(): Promise<string[]> {
    const r = await this.api<{ groups: { rules: { type: string; name: string }[] }[] }>(
      '/api/v1/rules?type=alert',
    );
    return r.groups.flatMap((g) => g.rules.map((rule) => rule.name));
  }

  /** Metric names Prometheus has stored, from every target. */
  async metricNames(): Promise<string[]> {
    return this.api<string[]>('/api/v1/label/__name__/values');
  }

  async targets(): Promise<{ labels: Record<string, string>; health: string; lastError: string }[]> {
    const r = await this.api<{
      activeTargets: { labels: Record<string, string>; health: string; lastError: string }[];
    }>('/api/v1/targets');
    return r.activeTargets;
  }

  /** Polls until `check` holds or the time is up; returns whether it held. */
  async waitFor(check: () => Promise<boolean>, timeoutMs: number, everyMs = 500): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await check()) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }

  private async api<T>(pathAndQuery: string): Promise<T> {
    const res = await fetch(`${this.url}${pathAndQuery}`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as ApiAnswer<T>;
    if (body.status !== 'success' || body.data === undefined) {
      throw new PrometheusError(body.error ?? `HTTP ${res.status}`, body.errorType);
    }
    return body.data;
  }
}

async function waitReady(url: string, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new PrometheusError(`prometheus exited during start:\n${readTail(logFile)}`);
    }
    try {
      const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new PrometheusError(`prometheus was not ready in 20 s:\n${readTail(logFile)}`);
}

function readTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}
