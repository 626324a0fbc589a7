import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import { childEnvironment } from './child-env';
import { LocalClusterError } from './errors';
import {
  identityOf,
  processAlive,
  readProcessesFile,
  sameProcess,
  writeProcessesFile,
  type ProcessRecord,
} from './process-records';
import type { ProbeFetch } from './tls-probe';

/**
 * The launcher's processes, as a kubelet keeps a pod's containers: spawns them with their logs in
 * files, restarts one that exits on its own (with backoff), stops them, and records them in
 * `<dataDir>/processes.json`, so when the launcher dies they keep serving and the next launcher
 * adopts them instead of starting them again. It knows nothing of partition maps: the cluster
 * says which processes there are.
 */

/** What a process is: how to start it and how to tell it is ready. */
export interface ProcessSpec {
  readonly name: string;
  readonly args: readonly string[];
  readonly readyUrl: string;
  readonly logFile: string;
  /** ports it listens on, for the busy-port check */
  readonly ports: readonly number[];
}

/** One run of a process: spawned by this launcher, or adopted from a launcher that died. */
interface Run {
  readonly pid: number;
  readonly adopted: boolean;
  /** resolves once it is gone: the exit code, or null (a signal, or an adopted process, whose code nobody can know) */
  readonly exited: Promise<number | null>;
  alive(): boolean;
  kill(signal: NodeJS.Signals): void;
  /** how it ended, for logs */
  ending(): Record<string, unknown>;
}

interface Proc extends ProcessSpec {
  run?: Run;
  startedAt?: number;
  restartDelayMs?: number;
  restartTimer?: NodeJS.Timeout;
  /** leaving for good (a drained node being stopped): no restart */
  retiring?: boolean;
}

export interface SupervisorOptions {
  /** `<dataDir>/processes.json` */
  readonly processesFile: string;
  /** the data directory, for messages */
  readonly dataDir: string;
  readonly log: Logger;
  /** the launcher's requests to its processes (https to a TLS gateway) */
  readonly probe: ProbeFetch;
  /** restart a process that exits on its own */
  readonly restart?: boolean;
  /** start children in a session of their own (LocalClusterOptions.detach) */
  readonly detach?: boolean;
  readonly startTimeoutMs?: number;
  /** environment for every process, on top of the few variables passed on (child-env.ts) */
  readonly env?: Readonly<Record<string, string>>;
}

/** How long a process gets to stop on SIGTERM before SIGKILL. */
const TERMINATE_GRACE_MS = 10_000;
/** How often an adopted process (not our child: no exit event) is checked for life. */
const ADOPTED_POLL_MS = 200;

export class Supervisor {
  private readonly procs = new Map<string, Proc>();
  private stoppingAll = false;
  /** taking over a dead launcher's processes: its record is not rewritten until that is done */
  private adopting = false;

  constructor(private readonly opts: SupervisorOptions) {}

  /** True once stopAll has begun: nothing starts or restarts any more. */
  get stopping(): boolean {
    return this.stoppingAll;
  }

  /** Adds a process (not started); one of that name already known stays as it is. */
  add(spec: ProcessSpec): void {
    if (!this.procs.has(spec.name)) this.procs.set(spec.name, { ...spec });
  }

  /** A process retired earlier is wanted again: it may be restarted. */
  rejoin(name: string): void {
    this.proc(name).retiring = false;
  }

  has(name: string): boolean {
    return this.procs.has(name);
  }

  names(): string[] {
    return [...this.procs.keys()];
  }

  running(name: string): boolean {
    return this.procs.get(name)?.run?.alive() === true;
  }

  /** The ready URLs of the running processes among these names. */
  readyUrls(names: readonly string[]): string[] {
    return names
      .map((name) => this.procs.get(name))
      .filter((p): p is Proc => p?.run?.alive() === true)
      .map((p) => p.readyUrl);
  }

  /** Processes this launcher found running and took over instead of starting them. */
  adopted(): string[] {
    return [...this.procs.values()].filter((p) => p.run?.adopted).map((p) => p.name);
  }

  /** The pid of the process's current (or last) run, spawned or adopted. */
  pid(name: string): number | undefined {
    return this.proc(name).run?.pid;
  }

  /**
   * Takes over what a dead launcher recorded: adopts what still runs as recorded, stops recorded
   * strays (processes not added here: a node no longer in the map). Refuses while another
   * launcher runs. The old record stays on disk until every entry is dealt with: dying halfway
   * loses none.
   */
  async takeOver(): Promise<void> {
    const recorded = readProcessesFile(this.opts.processesFile, this.opts.log);
    const owner = recorded?.owner;
    if (owner && owner.pid !== process.pid && sameProcess(owner)) {
      throw new LocalClusterError(
        'already_running',
        `another launcher (pid ${owner.pid}) runs ${this.opts.dataDir}; stop it first`,
      );
    }
    this.adopting = true;
    for (const [name, rec] of Object.entries(recorded?.processes ?? {})) {
      const proc = this.procs.get(name);
      if (proc) await this.adopt(proc, rec);
      else if (sameProcess(rec)) {
        this.opts.log.info(
          { process: name, pid: rec.pid },
          `${name} is not in the map any more: stopping it`,
        );
        await terminatePid(rec.pid);
      }
    }
    this.adopting = false;
    this.persist();
  }

  /** The ports of the processes that do not run yet. */
  portsToStart(): number[] {
    return [...this.procs.values()].filter((p) => !p.run).flatMap((p) => p.ports);
  }

  /** Waits until the process is ready: the adopted run, or a new one started now. */
  async ensureReady(name: string): Promise<void> {
    const proc = this.proc(name);
    await (proc.run ? this.waitReady(proc, proc.run) : this.start(name));
  }

  /** Starts a stopped process and waits until it is ready. */
  async start(name: string): Promise<void> {
    const proc = this.proc(name);
    if (proc.run?.alive()) throw new LocalClusterError('already_running', `${name} is already running`);
    if (this.stoppingAll) throw new LocalClusterError('stopping', 'the launcher is stopping');
    clearTimeout(proc.restartTimer);
    const run = this.spawn(proc);
    await this.waitReady(proc, run);
  }

  /** Sends a signal to a process; for SIGKILL and SIGTERM waits until it is gone. */
  async signal(name: string, signal: NodeJS.Signals): Promise<void> {
    const run = this.proc(name).run;
    if (!run || !run.alive()) return;
    run.kill(signal);
    if (signal === 'SIGKILL' || signal === 'SIGTERM') await run.exited;
  }

  /** Marks a process as leaving for good: it is not restarted any more. */
  retire(name: string): void {
    const proc = this.procs.get(name);
    if (!proc) return;
    proc.retiring = true;
    clearTimeout(proc.restartTimer);
  }

  /** Stops a retired process (if it runs) and forgets it. */
  async remove(name: string): Promise<void> {
    const proc = this.procs.get(name);
    if (!proc) return;
    proc.retiring = true;
    if (proc.run?.alive()) await terminate(proc.run);
    this.procs.delete(name);
    this.persist();
  }

  /** Says that everything is stopping: nothing is started, restarted or recorded from now on. */
  beginStop(): void {
    this.stoppingAll = true;
  }

  /**
   * 'all': a clean stop. 'spawned': a start that failed: what this launcher started goes,
   * what it adopted keeps serving and stays recorded for the next launcher. `first` is stopped
   * before the others.
   */
  async stopAll(which: 'all' | 'spawned', first: string): Promise<void> {
    this.stoppingAll = true;
    for (const p of this.procs.values()) clearTimeout(p.restartTimer);
    const running = [...this.procs.values()].filter(
      (p) => p.run?.alive() && (which === 'all' || !p.run.adopted),
    );
    const head = running.find((p) => p.name === first);
    if (head?.run) await terminate(head.run);
    await Promise.all(running.filter((p) => p !== head).map((p) => (p.run ? terminate(p.run) : undefined)));
    if (which === 'all') fs.rmSync(this.opts.processesFile, { force: true });
    // Failed while adopting: the old record still names what it did not get to.
    else if (!this.adopting) this.writeProcesses();
  }

  private proc(name: string): Proc {
    const p = this.procs.get(name);
    if (!p) throw new LocalClusterError('unknown_process', `no process named ${name}`);
    return p;
  }

  /**
   * Takes over a process a dead launcher recorded, if it is that very process (pid and start
   * time), runs with the flags this launcher would give it, and answers on its ready URL.
   * One started with other flags (another --port), or that does not answer, is stopped
   * instead, to be started afresh.
   */
  private async adopt(proc: Proc, rec: ProcessRecord): Promise<void> {
    if (!sameProcess(rec)) return;
    const sameArgs = rec.args.length === proc.args.length && rec.args.every((a, i) => a === proc.args[i]);
    if (!sameArgs) {
      this.opts.log.info(
        { process: proc.name, pid: rec.pid },
        `${proc.name} runs with other flags: restarting it`,
      );
      await terminatePid(rec.pid);
      return;
    }
    if (!(await answers(proc.readyUrl, 5000, this.opts.probe))) {
      this.opts.log.warn({ process: proc.name, pid: rec.pid }, `${proc.name} does not answer: restarting it`);
      await terminatePid(rec.pid);
      return;
    }
    this.track(proc, adoptedRun(rec.pid));
    this.opts.log.info({ process: proc.name, pid: rec.pid }, `adopted ${proc.name}`);
  }

  private spawn(proc: Proc): Run {
    const out = fs.openSync(proc.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...proc.args], {
        stdio: ['ignore', out, out],
        env: childEnvironment(process.env, this.opts.env),
        detached: this.opts.detach === true,
      });
    } finally {
      fs.closeSync(out);
    }
    child.on('error', (err) =>
      this.opts.log.error({ process: proc.name, err: errorMessage(err) }, 'spawn failed'),
    );
    if (child.pid === undefined) {
      throw new LocalClusterError('spawn_failed', `could not start ${proc.name} (${process.execPath})`);
    }
    const run = spawnedRun(child, child.pid);
    this.track(proc, run);
    return run;
  }

  private track(proc: Proc, run: Run): void {
    proc.run = run;
    proc.startedAt = Date.now();
    void run.exited.then((code) => this.onExit(proc, run, code));
    this.persist();
  }

  private onExit(proc: Proc, run: Run, code: number | null): void {
    if (this.stoppingAll || proc.run !== run) return;
    this.persist();
    if (proc.retiring) return;
    const { log } = this.opts;
    log.warn({ process: proc.name, code, ...run.ending(), log: proc.logFile }, `${proc.name} exited`);
    if (!this.opts.restart) return;
    // Crash loops back off (1 s doubling to 30 s), as a kubelet does; a run of 60 s resets it.
    const now = Date.now();
    proc.restartDelayMs =
      now - (proc.startedAt ?? 0) > 60_000 ? 1000 : Math.min(30_000, (proc.restartDelayMs ?? 500) * 2);
    log.info({ process: proc.name, inMs: proc.restartDelayMs }, `restarting ${proc.name}`);
    proc.restartTimer = setTimeout(() => {
      if (this.stoppingAll || proc.run !== run || proc.retiring) return;
      this.start(proc.name).catch((err: unknown) =>
        log.error({ err: errorMessage(err), process: proc.name }, 'restart failed'),
      );
    }, proc.restartDelayMs);
  }

  private async waitReady(proc: Proc, run: Run): Promise<void> {
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (!run.alive()) {
        const how = Object.entries(run.ending())
          .map(([k, v]) => `${k} ${String(v)}`)
          .join(', ');
        throw new LocalClusterError(
          'process_exited',
          `${proc.name} exited during start (${how}):\n${tail(proc.logFile)}`,
        );
      }
      try {
        const res = await this.opts.probe(proc.readyUrl, { signal: AbortSignal.timeout(1000) });
        if (res.ok) return;
      } catch {
        // not listening yet: poll again
      }
      await sleep(50);
    }
    run.kill('SIGKILL');
    throw new LocalClusterError(
      'start_timeout',
      `${proc.name} was not ready in time:\n${tail(proc.logFile)}`,
    );
  }

  /** Records the running processes, unless a clean stop is under way (it removes the file). */
  private persist(): void {
    if (!this.stoppingAll && !this.adopting) this.writeProcesses();
  }

  private writeProcesses(): void {
    const processes: Record<string, ProcessRecord> = {};
    for (const p of this.procs.values()) {
      if (p.run?.alive()) processes[p.name] = { ...identityOf(p.run.pid), args: p.args };
    }
    writeProcessesFile(this.opts.processesFile, processes);
  }
}

function spawnedRun(child: ChildProcess, pid: number): Run {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    pid,
    adopted: false,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    kill: (signal) => child.kill(signal),
    ending: () => ({ code: child.exitCode, signal: child.signalCode }),
  };
}

/** A process that is not our child: no exit event, so its life is polled, and it is signalled by pid. */
function adoptedRun(pid: number): Run {
  let gone = false;
  const exited = new Promise<number | null>((resolve) => {
    const check = (): void => {
      if (processAlive(pid)) {
        setTimeout(check, ADOPTED_POLL_MS);
        return;
      }
      gone = true;
      resolve(null);
    };
    check();
  });
  return {
    pid,
    adopted: true,
    exited,
    alive: () => !gone && processAlive(pid),
    kill: (signal) => {
      if (gone) return;
      try {
        process.kill(pid, signal);
      } catch {
        // already gone: the poll will notice
      }
    },
    ending: () => ({ code: 'unknown (adopted)' }),
  };
}

async function terminate(run: Run): Promise<void> {
  run.kill('SIGTERM');
  const timer = setTimeout(() => run.kill('SIGKILL'), TERMINATE_GRACE_MS);
  await run.exited;
  clearTimeout(timer);
}

async function terminatePid(pid: number): Promise<void> {
  await terminate(adoptedRun(pid));
}

/** True once `url` gives any HTTP answer (a refilling node answers 503: it is alive). */
async function answers(url: string, timeoutMs: number, probe: ProbeFetch): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      await probe(url, { signal: AbortSignal.timeout(1000) });
      return true;
    } catch {
      await sleep(100);
    }
  }
  return false;
}

/** The ports among these that something on 127.0.0.1 already listens on. */
export function busyPorts(ports: readonly number[]): Promise<number[]> {
  return Promise.all(
    ports.map(
      (port) =>
        new Promise<number | undefined>((resolve) => {
          const s = net.createServer();
          s.once('error', () => resolve(port));
          s.listen(port, '127.0.0.1', () => s.close(() => resolve(undefined)));
        }),
    ),
  ).then((r) => r.filter((p): p is number => p !== undefined));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}
