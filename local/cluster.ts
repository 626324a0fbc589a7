import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { UsageError } from '../common/cli-options';
import { errorMessage, KvError } from '../common/errors';
import { ensureInternalTokenFile } from '../common/internal-token';
import type { Logger } from '../common/logger';
import type { MetadataStore } from '../common/metadata-store';
import { openMetadataStore } from '../common/open-metadata-store';
import { initialPartitionMap, withNodeAddresses } from '../common/owner-maps';
import type { NodeInfo, PartitionMap } from '../common/partition-map';
import type { RebalanceProgress } from '../common/rebalance-progress';
import { Rebalancer } from '../common/rebalancer';
import { probeFetch, type LocalTlsFiles, type ProbeFetch } from './tls-probe';

/**
 * The whole system on one machine: N storage nodes and a gateway as separate
 * local processes on 127.0.0.1, as on Kubernetes, minus Kubernetes. This
 * launcher plays the operator's part: it owns the partition map (creates it,
 * updates node addresses when ports change) and scales the cluster through a
 * Rebalancer, starting nodes before they join and stopping them once they
 * have left the map.
 *
 * Like an operator, it is not part of the data plane: its children log to
 * files and are recorded in `<dataDir>/processes.json`, so when the launcher
 * dies they keep serving, and the next launcher adopts them instead of
 * starting them again.
 */
export interface LocalClusterOptions {
  readonly dataDir: string;
  /** gateway port; node nK listens on port+K (RPC) and port+100+K (health, metrics) */
  readonly port: number;
  /**
   * undefined: 3 for a new cluster, the stored count for an existing one. Differing from
   * the stored count: the cluster starts as stored, then scales to this many nodes.
   */
  readonly nodes?: number;
  readonly replicationFactor?: number;
  readonly partitionCount?: number;
  readonly cluster?: string;
  readonly redisUrl?: string;
  /** restart a process that exits on its own (npm start); tests kill nodes on purpose and keep this off */
  readonly restart?: boolean;
  /**
   * start children in a session of their own (npm start): a terminal's Ctrl-C or hang-up then
   * reaches only the launcher, which stops them gateway first, or, if it dies, leaves them
   * serving for the next launcher to adopt. Off in tests, so an interrupted test run does not
   * leave processes behind.
   */
  readonly detach?: boolean;
  /** own a Rebalancer, so `scale` works and a recorded rebalance resumes (default true) */
  readonly rebalancer?: boolean;
  /** between two rounds of the rebalancer's checks (its default when absent) */
  readonly rebalancePollIntervalMs?: number;
  /** extra flags for every gateway process */
  readonly gatewayArgs?: readonly string[];
  /**
   * the gateway serves HTTPS with this certificate and key (paths as given: absolute ones survive
   * a launcher started elsewhere); the launcher's own probes trust that very certificate
   */
  readonly tls?: LocalTlsFiles;
  /** the gateway's API keys (`--auth-file`); without it the gateway runs with `--no-auth` */
  readonly authFile?: string;
  /** extra flags for every node process */
  readonly nodeArgs?: readonly string[];
  readonly log?: Logger;
  readonly startTimeoutMs?: number;
  /** extra environment for every process (e.g. LOG_LEVEL) */
  readonly env?: Readonly<Record<string, string>>;
}

/** The most nodes the launcher runs: node ports sit between the gateway's port and port+100. */
export const MAX_NODES = 64;

export class LocalClusterError extends KvError {}

/** A scale request that can never succeed as asked (not an integer, out of range): HTTP 400. */
export class ScaleRequestError extends KvError {
  constructor(message: string, context: Record<string, unknown> = {}) {
    super('bad_request', message, context);
  }
}

/** What `scale` answers: where the rebalance stands right after it was planned, and the nodes started for it. */
export interface ScaleResult extends RebalanceProgress {
  readonly addedNodes: readonly string[];
}

// Compiled processes live in dist/, whether this module runs from dist/ (npm start) or from source (jest).
const PARENT = path.resolve(__dirname, '..');
const DIST = path.basename(PARENT) === 'dist' ? PARENT : path.join(PARENT, 'dist');
const NODE_MAIN = path.join(DIST, 'node', 'main.js');
const GATEWAY_MAIN = path.join(DIST, 'gateway', 'main.js');

/** How long a process gets to stop on SIGTERM before SIGKILL. */
const TERMINATE_GRACE_MS = 10_000;
/** How often an adopted process (not our child: no exit event) is checked for life. */
const ADOPTED_POLL_MS = 200;

/** Base port of node nK's health listener is port+100+K; the launcher's own admin listener is port+100. */
export function adminPort(base: number, ordinal: number): number {
  return base + 100 + ordinal;
}

/** `n3` → 3; undefined for a name the launcher does not give its nodes. */
export function nodeOrdinal(id: string): number | undefined {
  const m = /^n([1-9]\d{0,2})$/.exec(id);
  const k = m ? Number(m[1]) : NaN;
  return k >= 1 && k <= MAX_NODES ? k : undefined;
}

/** Nodes n1..nN with the addresses the launcher gives them. */
export function localNodes(base: number, count: number): NodeInfo[] {
  return Array.from({ length: count }, (_, i) => ({ id: `n${i + 1}`, address: `127.0.0.1:${base + 1 + i}` }));
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

interface Proc {
  readonly name: string;
  readonly args: readonly string[];
  readonly readyUrl: string;
  readonly logFile: string;
  /** ports it listens on, for the busy-port check */
  readonly ports: readonly number[];
  run?: Run;
  startedAt?: number;
  restartDelayMs?: number;
  restartTimer?: NodeJS.Timeout;
  /** leaving for good (a drained node being stopped): no restart */
  retiring?: boolean;
}

/** `<dataDir>/processes.json`: who runs the cluster's processes, so a new launcher can adopt them. */
interface ProcessesFile {
  readonly owner?: ProcessIdentity;
  readonly processes: Readonly<Record<string, ProcessIdentity & { readonly args: readonly string[] }>>;
}

/** A pid and, where /proc exists, the process's start time: a reused pid has another one. */
interface ProcessIdentity {
  readonly pid: number;
  readonly startTime?: string;
}

export class LocalCluster {
  private readonly procs = new Map<string, Proc>();
  private stopping = false;
  private stopped: Promise<void> | undefined;
  /** taking over a dead launcher's processes: its record is not rewritten until that is done */
  private adopting = false;
  private latest: PartitionMap;
  private rebalancer: Rebalancer | undefined;
  /** nodes started for a scale whose plan is not in the map yet: not to be stopped as strays */
  private readonly joining = new Set<string>();
  /** scale and the stopping of drained nodes, one at a time */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly log: Logger;
  /** the launcher's requests to its processes (https to a TLS gateway) */
  private readonly probe: ProbeFetch;

  private constructor(
    readonly opts: LocalClusterOptions,
    map: PartitionMap,
    private readonly store: MetadataStore,
    /** the cluster's internal token, from internalTokenFile: every node requires it, every caller presents it */
    readonly internalToken: string,
  ) {
    this.latest = map;
    this.log = opts.log ?? pino({ level: 'silent' });
    this.probe = probeFetch(opts.tls);
  }

  get url(): string {
    return `${this.opts.tls ? 'https' : 'http'}://127.0.0.1:${this.opts.port}`;
  }

  get cluster(): string {
    return this.opts.cluster ?? 'local';
  }

  get logDir(): string {
    return path.join(this.opts.dataDir, 'logs');
  }

  get metadataFile(): string {
    return path.join(this.opts.dataDir, 'partition-map.json');
  }

  /** Made once per data directory and kept, so the flags (and adoption after a launcher crash) stay the same. */
  get internalTokenFile(): string {
    return path.join(this.opts.dataDir, 'internal-token');
  }

  get processesFile(): string {
    return path.join(this.opts.dataDir, 'processes.json');
  }

  /** The newest partition map the launcher has seen (it follows the store while the rebalancer runs). */
  get map(): PartitionMap {
    return this.latest;
  }

  /** Flags that point a process at this cluster's partition map. */
  get metadataArgs(): string[] {
    return this.opts.redisUrl ? ['--redis', this.opts.redisUrl] : ['--metadata-file', this.metadataFile];
  }

  nodeIds(): string[] {
    return this.latest.nodes.map((n) => n.id);
  }

  /** Processes this launcher found running and took over instead of starting them. */
  adoptedProcesses(): string[] {
    return [...this.procs.values()].filter((p) => p.run?.adopted).map((p) => p.name);
  }

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    for (const f of [NODE_MAIN, GATEWAY_MAIN]) {
      if (!fs.existsSync(f))
        throw new LocalClusterError('not_built', `${f} is missing: run npm run build first`);
    }
    fs.mkdirSync(path.join(opts.dataDir, 'logs'), { recursive: true });
    const internalToken = ensureInternalTokenFile(path.join(opts.dataDir, 'internal-token'));
    const cluster = opts.cluster ?? 'local';
    const store = openMetadataStore(
      { cluster, file: path.join(opts.dataDir, 'partition-map.json'), redisUrl: opts.redisUrl },
      opts.log,
    );
    let map: PartitionMap;
    try {
      map = await ensureMap(store, { ...opts, cluster });
    } catch (err) {
      await store.close();
      throw err;
    }
    const asked = opts.nodes;
    const stored = map.rebalance?.targetNodes.length ?? map.nodes.length;
    if (asked !== undefined && asked !== stored && opts.rebalancer === false) {
      await store.close();
      throw new UsageError(
        `${opts.dataDir} holds a cluster of ${stored} nodes; scaling it to ${asked} needs the rebalancer`,
      );
    }
    const lc = new LocalCluster(opts, map, store, internalToken);
    try {
      await lc.boot();
    } catch (err) {
      await lc.shutdown('spawned');
      throw err;
    }
    if (asked !== undefined && asked !== stored) {
      lc.log.info({ from: stored, to: asked }, `${opts.dataDir} holds ${stored} nodes: scaling to ${asked}`);
      try {
        await lc.scale(asked);
      } catch (err) {
        await lc.shutdown('spawned');
        throw err;
      }
    }
    return lc;
  }

  /** Adopts what a dead launcher left running, starts the rest, then the rebalancer. */
  private async boot(): Promise<void> {
    const recorded = readProcessesFile(this.processesFile, this.log);
    const owner = recorded?.owner;
    if (owner && owner.pid !== process.pid && sameProcess(owner)) {
      throw new LocalClusterError(
        'already_running',
        `another launcher (pid ${owner.pid}) runs ${this.opts.dataDir}; stop it first`,
      );
    }
    for (const node of this.latest.nodes) this.addNodeProc(node.id);
    this.addGatewayProc();

    // Adopt what is still running as recorded; stop recorded strays (a node no longer in the map).
    // The old record stays on disk until every entry is dealt with: dying halfway loses none.
    this.adopting = true;
    for (const [name, rec] of Object.entries(recorded?.processes ?? {})) {
      const proc = this.procs.get(name);
      if (proc) await this.adopt(proc, rec);
      else if (sameProcess(rec)) {
        this.log.info({ process: name, pid: rec.pid }, `${name} is not in the map any more: stopping it`);
        await terminatePid(rec.pid);
      }
    }
    this.adopting = false;
    this.persist();
    const toStart = [...this.procs.values()].filter((p) => !p.run);
    const busy = await busyPorts(toStart.flatMap((p) => p.ports));
    if (busy.length > 0) {
      throw new UsageError(
        `port${busy.length > 1 ? 's' : ''} ${busy.join(', ')} already in use on 127.0.0.1 (is another kvstore running?); pick another --port`,
      );
    }
    await Promise.all(
      [...this.procs.values()]
        .filter((p) => p.name !== 'gateway')
        .map((p) => (p.run ? this.waitReady(p, p.run) : this.startProcess(p.name))),
    );
    const gw = this.proc('gateway');
    await (gw.run ? this.waitReady(gw, gw.run) : this.startProcess('gateway'));
    this.persist();

    if (this.opts.rebalancer === false) return;
    // After the processes: a rebalance recorded in the map resumes with every node it names running.
    const rebalancer = await Rebalancer.start({
      store: this.store,
      log: this.log,
      internalToken: this.internalToken,
      ...(this.opts.rebalancePollIntervalMs ? { pollIntervalMs: this.opts.rebalancePollIntervalMs } : {}),
    });
    this.rebalancer = rebalancer;
    rebalancer.on('map', (m) => this.onMap(m));
    const current = rebalancer.current();
    if (current) this.onMap(current);
  }

  /**
   * Grows or shrinks the cluster to nodes n1..n`count`: starts the nodes that are new and
   * waits until they are ready, then records the rebalance plan in the map. Nodes that
   * leave are stopped once a later map no longer lists them. A scale while a rebalance is
   * under way re-plans from where it stands.
   */
  async scale(count: number): Promise<ScaleResult> {
    const rf = this.latest.replicationFactor;
    if (!Number.isSafeInteger(count) || count < rf || count > MAX_NODES) {
      throw new ScaleRequestError(
        `nodes must be a whole number from ${rf} (the replication factor) to ${MAX_NODES}, got ${String(count)}`,
        { nodes: count, replicationFactor: rf },
      );
    }
    const rebalancer = this.rebalancer;
    if (!rebalancer) {
      throw new LocalClusterError('no_rebalancer', 'this cluster was started without a rebalancer');
    }
    return this.serially(async () => {
      if (this.stopping) throw new LocalClusterError('stopping', 'the launcher is stopping');
      const target = localNodes(this.opts.port, count);
      const listed = new Set(this.latest.nodes.map((n) => n.id));
      // Nodes the map does not list and nothing runs: started now, before the plan names them.
      const fresh = target.filter((t) => !listed.has(t.id) && !this.procs.get(t.id)?.run?.alive());
      const ports = fresh.flatMap((t) => {
        const k = nodeOrdinal(t.id) ?? 0;
        return [this.opts.port + k, adminPort(this.opts.port, k)];
      });
      const busy = await busyPorts(ports);
      if (busy.length > 0) {
        throw new LocalClusterError(
          'ports_busy',
          `cannot start ${fresh.map((t) => t.id).join(', ')}: port${busy.length > 1 ? 's' : ''} ${busy.join(', ')} already in use on 127.0.0.1`,
          { busy },
        );
      }
      for (const t of fresh) {
        // Files left by an earlier run of this node could bring back keys deleted since: it joins empty.
        fs.rmSync(this.nodeDataDir(t.id), { recursive: true, force: true });
        this.addNodeProc(t.id).retiring = false;
        this.joining.add(t.id);
      }
      try {
        await Promise.all(fresh.map((t) => this.startProcess(t.id)));
        const planned = await rebalancer.scale(target);
        if (planned.epoch > this.latest.epoch) this.latest = planned;
      } catch (err) {
        for (const t of fresh) this.joining.delete(t.id);
        await Promise.all(fresh.map((t) => this.dropUnlisted(t.id)));
        throw err;
      }
      for (const t of fresh) this.joining.delete(t.id);
      const progress = await rebalancer.progress();
      this.log.info(
        {
          nodes: count,
          epoch: progress.epoch,
          moves: progress.movesTotal,
          added: fresh.map((t) => t.id),
          draining: progress.drainingNodes,
        },
        `scaling to ${count} nodes`,
      );
      return { ...progress, addedNodes: fresh.map((t) => t.id) };
    });
  }

  /** Where the rebalance stands: the map's plan and what each receiving node reports. */
  async progress(): Promise<RebalanceProgress> {
    if (!this.rebalancer) {
      throw new LocalClusterError('no_rebalancer', 'this cluster was started without a rebalancer');
    }
    return this.rebalancer.progress();
  }

  /** Resolves when no rebalance is under way and every node that left the map has been stopped. */
  async idle(): Promise<void> {
    await this.rebalancer?.idle();
    await this.serially(async () => undefined);
  }

  /** Starts a stopped node (or the gateway) again and waits until it is ready. */
  async startProcess(name: string): Promise<void> {
    const proc = this.proc(name);
    if (proc.run?.alive()) throw new LocalClusterError('already_running', `${name} is already running`);
    if (this.stopping) throw new LocalClusterError('stopping', 'the launcher is stopping');
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

  /** Base URL of a node's health and metrics listener. */
  adminUrl(nodeId: string): string {
    const k = nodeOrdinal(nodeId);
    if (k === undefined || (!this.procs.has(nodeId) && !this.latest.nodes.some((n) => n.id === nodeId))) {
      throw new LocalClusterError('unknown_process', `no node named ${nodeId}`);
    }
    return `http://127.0.0.1:${adminPort(this.opts.port, k)}`;
  }

  /** The pid of the process's current (or last) run, spawned or adopted. */
  pid(name: string): number | undefined {
    return this.proc(name).run?.pid;
  }

  /** Stops every process, gateway first, and forgets them: the next launcher starts them afresh. */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown('all');
    return this.stopped;
  }

  /**
   * 'all': a clean stop. 'spawned': a start that failed: what this launcher started goes,
   * what it adopted keeps serving and stays recorded for the next launcher.
   */
  private async shutdown(which: 'all' | 'spawned'): Promise<void> {
    this.stopping = true;
    try {
      await this.rebalancer?.stop();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'rebalancer did not stop cleanly');
    }
    for (const p of this.procs.values()) clearTimeout(p.restartTimer);
    const running = [...this.procs.values()].filter(
      (p) => p.run?.alive() && (which === 'all' || !p.run.adopted),
    );
    // Gateway first, so no request is mid-flight to a node that is going away.
    const gw = running.find((p) => p.name === 'gateway');
    if (gw?.run) await terminate(gw.run);
    await Promise.all(running.filter((p) => p !== gw).map((p) => (p.run ? terminate(p.run) : undefined)));
    if (which === 'all') fs.rmSync(this.processesFile, { force: true });
    // Failed while adopting: the old record still names what it did not get to.
    else if (!this.adopting) this.writeProcesses();
    await this.store.close();
  }

  private addNodeProc(id: string): Proc {
    const existing = this.procs.get(id);
    if (existing) return existing;
    const k = nodeOrdinal(id);
    if (k === undefined)
      throw new LocalClusterError('foreign_map', `node ${id} was not named by the local launcher`);
    const address = `127.0.0.1:${this.opts.port + k}`;
    const admin = adminPort(this.opts.port, k);
    const proc: Proc = {
      name: id,
      args: [
        NODE_MAIN,
        '--id',
        id,
        '--cluster',
        this.cluster,
        '--data-dir',
        this.nodeDataDir(id),
        '--listen',
        address,
        '--admin-listen',
        `127.0.0.1:${admin}`,
        ...this.metadataArgs,
        '--internal-token-file',
        this.internalTokenFile,
        ...(this.opts.nodeArgs ?? []),
      ],
      readyUrl: `http://127.0.0.1:${admin}/readyz`,
      logFile: path.join(this.logDir, `${id}.log`),
      ports: [this.opts.port + k, admin],
    };
    this.procs.set(id, proc);
    return proc;
  }

  private addGatewayProc(): void {
    this.procs.set('gateway', {
      name: 'gateway',
      args: [
        GATEWAY_MAIN,
        '--id',
        'gw-local',
        '--cluster',
        this.cluster,
        '--port',
        String(this.opts.port),
        ...this.metadataArgs,
        '--internal-token-file',
        this.internalTokenFile,
        ...(this.opts.authFile !== undefined ? ['--auth-file', this.opts.authFile] : ['--no-auth']),
        ...(this.opts.tls ? ['--tls-cert', this.opts.tls.certFile, '--tls-key', this.opts.tls.keyFile] : []),
        ...(this.opts.gatewayArgs ?? []),
      ],
      readyUrl: `${this.url}/readyz`,
      logFile: path.join(this.logDir, 'gateway.log'),
      ports: [this.opts.port],
    });
  }

  private nodeDataDir(id: string): string {
    return path.join(this.opts.dataDir, 'nodes', id);
  }

  /**
   * Takes over a process a dead launcher recorded, if it is that very process (pid and start
   * time), runs with the flags this launcher would give it, and answers on its ready URL.
   * One started with other flags (another --port), or that does not answer, is stopped
   * instead, to be started afresh.
   */
  private async adopt(
    proc: Proc,
    rec: ProcessIdentity & { readonly args: readonly string[] },
  ): Promise<void> {
    if (!sameProcess(rec)) return;
    const sameArgs = rec.args.length === proc.args.length && rec.args.every((a, i) => a === proc.args[i]);
    if (!sameArgs) {
      this.log.info(
        { process: proc.name, pid: rec.pid },
        `${proc.name} runs with other flags: restarting it`,
      );
      await terminatePid(rec.pid);
      return;
    }
    if (!(await answers(proc.readyUrl, 5000, this.probe))) {
      this.log.warn({ process: proc.name, pid: rec.pid }, `${proc.name} does not answer: restarting it`);
      await terminatePid(rec.pid);
      return;
    }
    this.track(proc, adoptedRun(rec.pid));
    this.log.info({ process: proc.name, pid: rec.pid }, `adopted ${proc.name}`);
  }

  private spawn(proc: Proc): Run {
    const out = fs.openSync(proc.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...proc.args], {
        stdio: ['ignore', out, out],
        env: { ...process.env, ...this.opts.env },
        detached: this.opts.detach === true,
      });
    } finally {
      fs.closeSync(out);
    }
    child.on('error', (err) =>
      this.log.error({ process: proc.name, err: errorMessage(err) }, 'spawn failed'),
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

  private proc(name: string): Proc {
    const p = this.procs.get(name);
    if (!p) throw new LocalClusterError('unknown_process', `no process named ${name}`);
    return p;
  }

  private onExit(proc: Proc, run: Run, code: number | null): void {
    if (this.stopping || proc.run !== run) return;
    this.persist();
    if (proc.retiring) return;
    this.log.warn({ process: proc.name, code, ...run.ending(), log: proc.logFile }, `${proc.name} exited`);
    if (!this.opts.restart) return;
    // Crash loops back off (1 s doubling to 30 s), as a kubelet does; a run of 60 s resets it.
    const now = Date.now();
    proc.restartDelayMs =
      now - (proc.startedAt ?? 0) > 60_000 ? 1000 : Math.min(30_000, (proc.restartDelayMs ?? 500) * 2);
    this.log.info({ process: proc.name, inMs: proc.restartDelayMs }, `restarting ${proc.name}`);
    proc.restartTimer = setTimeout(() => {
      if (this.stopping || proc.run !== run || proc.retiring) return;
      this.startProcess(proc.name).catch((err: unknown) =>
        this.log.error({ err: errorMessage(err), process: proc.name }, 'restart failed'),
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
        const res = await this.probe(proc.readyUrl, { signal: AbortSignal.timeout(1000) });
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

  /** Runs `fn` after every scale and clean-up queued before it, so they never interleave. */
  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private onMap(map: PartitionMap): void {
    if (map.epoch > this.latest.epoch) this.latest = map;
    // Queued, so a node is never stopped while a scale that wants it is starting it.
    void this.serially(() => this.stopDrained()).catch((err: unknown) =>
      this.log.error({ err: errorMessage(err) }, 'stopping drained nodes failed'),
    );
  }

  /** Stops the nodes this launcher runs that the map no longer lists: drained, they hold nothing. */
  private async stopDrained(): Promise<void> {
    if (this.stopping) return;
    const map = this.latest;
    const listed = new Set(map.nodes.map((n) => n.id));
    for (const proc of [...this.procs.values()]) {
      if (proc.name === 'gateway' || listed.has(proc.name) || this.joining.has(proc.name)) continue;
      proc.retiring = true;
      clearTimeout(proc.restartTimer);
      if (proc.run?.alive()) {
        this.log.info({ node: proc.name, epoch: map.epoch }, `${proc.name} has left the map: stopping it`);
        // Until every process has this epoch, one may still send a request to the leaving node.
        await this.waitForEpoch(map, 10_000);
        if (this.stopping) return;
        await terminate(proc.run);
      }
      this.procs.delete(proc.name);
      this.persist();
      this.log.info(
        { node: proc.name, dataDir: this.nodeDataDir(proc.name) },
        `${proc.name} stopped; its files stay until it is added again`,
      );
    }
  }

  /** A node started for a scale that failed before the plan named it: stopped and forgotten. */
  private async dropUnlisted(id: string): Promise<void> {
    if (this.latest.nodes.some((n) => n.id === id)) return;
    const proc = this.procs.get(id);
    if (!proc) return;
    proc.retiring = true;
    if (proc.run?.alive()) await terminate(proc.run);
    this.procs.delete(id);
    this.persist();
  }

  /** Waits (at most timeoutMs) until the gateway and every node of `map` reports its epoch or a newer one. */
  private async waitForEpoch(map: PartitionMap, timeoutMs: number): Promise<void> {
    const urls = ['gateway', ...map.nodes.map((n) => n.id)]
      .map((name) => this.procs.get(name))
      .filter((p): p is Proc => p?.run?.alive() === true)
      .map((p) => p.readyUrl);
    const deadline = Date.now() + timeoutMs;
    const reached = async (url: string): Promise<boolean> => {
      try {
        const res = await this.probe(url, { signal: AbortSignal.timeout(1000) });
        const body: unknown = await res.json();
        const epoch =
          typeof body === 'object' && body !== null ? (body as { epoch?: unknown }).epoch : undefined;
        return typeof epoch === 'number' && epoch >= map.epoch;
      } catch {
        return false;
      }
    };
    let waiting = urls;
    while (waiting.length > 0 && Date.now() < deadline && !this.stopping) {
      const done = await Promise.all(waiting.map(reached));
      waiting = waiting.filter((_, i) => !done[i]);
      if (waiting.length > 0) await sleep(100);
    }
    if (waiting.length > 0)
      this.log.warn({ epoch: map.epoch, waiting }, 'not every process reached the epoch in time');
  }

  /** Records the running processes, unless a clean stop is under way (it removes the file). */
  private persist(): void {
    if (!this.stopping && !this.adopting) this.writeProcesses();
  }

  private writeProcesses(): void {
    const processes: Record<string, ProcessIdentity & { args: readonly string[] }> = {};
    for (const p of this.procs.values()) {
      if (p.run?.alive()) processes[p.name] = { ...identityOf(p.run.pid), args: p.args };
    }
    const content: ProcessesFile = { owner: identityOf(process.pid), processes };
    writeFileAtomic(this.processesFile, `${JSON.stringify(content, null, 2)}\n`);
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

/** True while `pid` exists and is not a zombie (where PID 1 does not reap, a dead orphan lingers as one). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  const stat = procStat(pid);
  return stat === undefined || stat[0] !== 'Z';
}

/** The fields of /proc/<pid>/stat after the command name (state first); undefined without /proc. */
function procStat(pid: number): string[] | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text
      .slice(text.lastIndexOf(')') + 2)
      .trim()
      .split(' ');
  } catch {
    return undefined;
  }
}

function identityOf(pid: number): ProcessIdentity {
  // Field 22 of stat (start time since boot), the 20th after the command name.
  const startTime = procStat(pid)?.[19];
  return startTime === undefined ? { pid } : { pid, startTime };
}

/** The recorded process is still running: same pid and, where it can be told, same start time. */
function sameProcess(rec: ProcessIdentity): boolean {
  if (!processAlive(rec.pid)) return false;
  const now = identityOf(rec.pid).startTime;
  return rec.startTime === undefined || now === undefined || now === rec.startTime;
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

function readProcessesFile(file: string, log: Logger): ProcessesFile | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      log.warn({ file, err: errorMessage(err) }, 'ignoring unreadable file');
    return undefined;
  }
  const isIdentity = (v: unknown): v is ProcessIdentity =>
    typeof v === 'object' &&
    v !== null &&
    Number.isSafeInteger((v as ProcessIdentity).pid) &&
    (v as ProcessIdentity).pid > 0 &&
    ['string', 'undefined'].includes(typeof (v as ProcessIdentity).startTime);
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { owner, processes } = parsed as { owner?: unknown; processes?: unknown };
  const clean: Record<string, ProcessIdentity & { args: string[] }> = {};
  if (typeof processes === 'object' && processes !== null) {
    for (const [name, rec] of Object.entries(processes)) {
      const args: unknown = (rec as { args?: unknown }).args;
      if (isIdentity(rec) && Array.isArray(args) && args.every((a) => typeof a === 'string')) {
        clean[name] = { pid: rec.pid, ...(rec.startTime ? { startTime: rec.startTime } : {}), args };
      } else {
        log.warn({ file, process: name }, 'ignoring a malformed process record');
      }
    }
  }
  return { ...(isIdentity(owner) ? { owner } : {}), processes: clean };
}

/** Write then rename, so a launcher killed mid-write leaves the old file or the new one, never half of one. */
function writeFileAtomic(file: string, content: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}

function busyPorts(ports: readonly number[]): Promise<number[]> {
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Creates the map for a new cluster, or checks the stored one: the replication factor and the
 * partition count cannot change; a different --nodes is a scale, done once everything runs.
 */
async function ensureMap(
  store: MetadataStore,
  opts: LocalClusterOptions & { cluster: string },
): Promise<PartitionMap> {
  const existing = await store.load();
  if (!existing) {
    const n = opts.nodes ?? 3;
    const rf = opts.replicationFactor ?? Math.min(3, n);
    if (rf > n)
      throw new UsageError(`--replication-factor ${rf} needs at least ${rf} nodes, got --nodes ${n}`);
    if (n > MAX_NODES) throw new UsageError(`--nodes must be at most ${MAX_NODES}, got ${n}`);
    const map = initialPartitionMap({
      cluster: opts.cluster,
      nodes: localNodes(opts.port, n),
      partitionCount: opts.partitionCount ?? 256,
      replicationFactor: rf,
    });
    if (!(await store.compareAndSet(map, undefined))) {
      throw new LocalClusterError('map_race', 'another launcher created the partition map at the same time');
    }
    return map;
  }
  const mismatch = (flag: string, asked: number | undefined, stored: number): void => {
    if (asked !== undefined && asked !== stored) {
      throw new UsageError(
        `${opts.dataDir} holds a cluster with ${flag} ${stored}; it cannot change to ${asked} (rebalancing moves partitions between nodes, it keeps their number and replication factor)`,
      );
    }
  };
  mismatch('--replication-factor', opts.replicationFactor, existing.replicationFactor);
  mismatch('--partitions', opts.partitionCount, existing.partitionCount);
  if (opts.nodes !== undefined && (opts.nodes < existing.replicationFactor || opts.nodes > MAX_NODES)) {
    throw new UsageError(
      `--nodes must be from ${existing.replicationFactor} (the replication factor of ${opts.dataDir}) to ${MAX_NODES}, got ${opts.nodes}`,
    );
  }
  const ordinals = existing.nodes.map((n) => nodeOrdinal(n.id));
  if (ordinals.some((k) => k === undefined)) {
    throw new LocalClusterError(
      'foreign_map',
      `the map in ${opts.dataDir} was not made by the local launcher`,
    );
  }
  const addresses = new Map(
    existing.nodes.map((n, i) => [n.id, `127.0.0.1:${opts.port + (ordinals[i] ?? 0)}`]),
  );
  // Ports changed since the last run: a new epoch tells every component the new addresses.
  const moved = withNodeAddresses(existing, addresses);
  if (moved === existing) return existing;
  if (!(await store.compareAndSet(moved, existing.epoch))) {
    throw new LocalClusterError('map_race', 'the partition map changed while the launcher was updating it');
  }
  return moved;
}
