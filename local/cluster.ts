import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { UsageError } from '../common/cli-options';
import { errorMessage, KvError } from '../common/errors';
import { ensureInternalTokenFile } from '../common/internal-token';
import type { Logger } from '../common/logger';
import type { PartitionMap } from '../common/partition-map';
import type { RebalanceProgress } from '../common/rebalance-progress';
import { LocalClusterError } from './errors';
import { MapOwner } from './map-owner';
import { adminPort, localNodes, MAX_NODES, nodeAddress, nodeOrdinal } from './node-ports';
import { busyPorts, sleep, Supervisor } from './supervisor';
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
  /**
   * per node id, the node program to run instead of this release's dist/node/main.js: a node of
   * another release beside this one's, as in a rolling upgrade (e2e/mixed-release.test.ts)
   */
  readonly nodeMain?: Readonly<Record<string, string>>;
  readonly log?: Logger;
  readonly startTimeoutMs?: number;
  /** environment for every process (e.g. LOG_LEVEL); of the launcher's own, only child-env.ts's allow-list */
  readonly env?: Readonly<Record<string, string>>;
}

/** A scale request that can never succeed as asked (not an integer, out of range): HTTP 400. */
export class ScaleRequestError extends KvError {
  constructor(message: string, context: Record<string, unknown> = {}) {
    super('bad_request', message, context);
  }
}

import type { ScaleResult } from '../common/rest-api';

// Compiled processes live in dist/, whether this module runs from dist/ (npm start) or from source (jest).
const PARENT = path.resolve(__dirname, '..');
const DIST = path.basename(PARENT) === 'dist' ? PARENT : path.join(PARENT, 'dist');
const NODE_MAIN = path.join(DIST, 'node', 'main.js');
const GATEWAY_MAIN = path.join(DIST, 'gateway', 'main.js');

/**
 * The cluster as its users see it: which processes it has (a node per node of the map, and the
 * gateway), brought up in order, and scaled with the nodes started before they join and stopped
 * once they have left the map. Running the processes is the Supervisor's job, the map the
 * MapOwner's.
 */
export class LocalCluster {
  private readonly processes: Supervisor;
  private stopped: Promise<void> | undefined;
  /** nodes started for a scale whose plan is not in the map yet: not to be stopped as strays */
  private readonly joining = new Set<string>();
  /** scale and the stopping of drained nodes, one at a time */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly log: Logger;
  /** the launcher's requests to its processes (https to a TLS gateway) */
  private readonly probe: ProbeFetch;

  private constructor(
    readonly opts: LocalClusterOptions,
    private readonly owner: MapOwner,
    /** the cluster's internal token, from internalTokenFile: every node requires it, every caller presents it */
    readonly internalToken: string,
  ) {
    this.log = opts.log ?? pino({ level: 'silent' });
    this.probe = probeFetch(opts.tls);
    this.processes = new Supervisor({
      processesFile: this.processesFile,
      dataDir: opts.dataDir,
      log: this.log,
      probe: this.probe,
      restart: opts.restart,
      detach: opts.detach,
      startTimeoutMs: opts.startTimeoutMs,
      env: opts.env,
    });
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
    return this.owner.map;
  }

  /** Flags that point a process at this cluster's partition map. */
  get metadataArgs(): string[] {
    return this.opts.redisUrl ? ['--redis', this.opts.redisUrl] : ['--metadata-file', this.metadataFile];
  }

  nodeIds(): string[] {
    return this.owner.map.nodes.map((n) => n.id);
  }

  /** Processes this launcher found running and took over instead of starting them. */
  adoptedProcesses(): string[] {
    return this.processes.adopted();
  }

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    for (const f of [NODE_MAIN, GATEWAY_MAIN]) {
      if (!fs.existsSync(f))
        throw new LocalClusterError('not_built', `${f} is missing: run npm run build first`);
    }
    fs.mkdirSync(path.join(opts.dataDir, 'logs'), { recursive: true });
    const internalToken = ensureInternalTokenFile(path.join(opts.dataDir, 'internal-token'));
    const owner = await MapOwner.open({
      cluster: opts.cluster ?? 'local',
      dataDir: opts.dataDir,
      file: path.join(opts.dataDir, 'partition-map.json'),
      redisUrl: opts.redisUrl,
      port: opts.port,
      nodes: opts.nodes,
      replicationFactor: opts.replicationFactor,
      partitionCount: opts.partitionCount,
      log: opts.log,
    });
    const asked = opts.nodes;
    const stored = owner.targetNodeCount;
    if (asked !== undefined && asked !== stored && opts.rebalancer === false) {
      await owner.close();
      throw new UsageError(
        `${opts.dataDir} holds a cluster of ${stored} nodes; scaling it to ${asked} needs the rebalancer`,
      );
    }
    const lc = new LocalCluster(opts, owner, internalToken);
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
    for (const node of this.owner.map.nodes) this.addNodeProc(node.id);
    this.addGatewayProc();
    // Adopt what is still running as recorded; stop recorded strays (a node no longer in the map).
    await this.processes.takeOver();
    const busy = await busyPorts(this.processes.portsToStart());
    if (busy.length > 0) {
      throw new UsageError(
        `port${busy.length > 1 ? 's' : ''} ${busy.join(', ')} already in use on 127.0.0.1 (is another kvstore running?); pick another --port`,
      );
    }
    await Promise.all(
      this.processes
        .names()
        .filter((name) => name !== 'gateway')
        .map((name) => this.processes.ensureReady(name)),
    );
    await this.processes.ensureReady('gateway');

    if (this.opts.rebalancer === false) return;
    // After the processes: a rebalance recorded in the map resumes with every node it names running.
    await this.owner.startRebalancer(
      {
        log: this.log,
        internalToken: this.internalToken,
        ...(this.opts.rebalancePollIntervalMs ? { pollIntervalMs: this.opts.rebalancePollIntervalMs } : {}),
      },
      () => this.onMap(),
    );
  }
  /**
   * Grows or shrinks the cluster to nodes n1..n`count`: starts the nodes that are new and
   * waits until they are ready, then records the rebalance plan in the map. Nodes that
   * leave are stopped once a later map no longer lists them. A scale while a rebalance is
   * under way re-plans from where it stands.
   */
  async scale(count: number): Promise<ScaleResult> {
    const rf = this.owner.map.replicationFactor;
    if (!Number.isSafeInteger(count) || count < rf || count > MAX_NODES) {
      throw new ScaleRequestError(
        `nodes must be a whole number from ${rf} (the replication factor) to ${MAX_NODES}, got ${String(count)}`,
        { nodes: count, replicationFactor: rf },
      );
    }
    if (!this.owner.rebalancing) {
      throw new LocalClusterError('no_rebalancer', 'this cluster was started without a rebalancer');
    }
    return this.serially(async () => {
      if (this.processes.stopping) throw new LocalClusterError('stopping', 'the launcher is stopping');
      const target = localNodes(this.opts.port, count);
      const listed = new Set(this.owner.map.nodes.map((n) => n.id));
      // Nodes the map does not list and nothing runs: started now, before the plan names them.
      const fresh = target.filter((t) => !listed.has(t.id) && !this.processes.running(t.id));
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
        this.addNodeProc(t.id);
        this.processes.rejoin(t.id);
        this.joining.add(t.id);
      }
      try {
        await Promise.all(fresh.map((t) => this.processes.start(t.id)));
        await this.owner.scale(target);
      } catch (err) {
        for (const t of fresh) this.joining.delete(t.id);
        await Promise.all(fresh.map((t) => this.dropUnlisted(t.id)));
        throw err;
      }
      for (const t of fresh) this.joining.delete(t.id);
      const progress = await this.owner.progress();
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
  progress(): Promise<RebalanceProgress> {
    return this.owner.progress();
  }

  /** Resolves when no rebalance is under way and every node that left the map has been stopped. */
  async idle(): Promise<void> {
    await this.owner.idle();
    await this.serially(async () => undefined);
  }

  /** Starts a stopped node (or the gateway) again and waits until it is ready. */
  async startProcess(name: string): Promise<void> {
    await this.processes.start(name);
  }

  /** Sends a signal to a process; for SIGKILL and SIGTERM waits until it is gone. */
  async signal(name: string, signal: NodeJS.Signals): Promise<void> {
    await this.processes.signal(name, signal);
  }

  /** Base URL of a node's health and metrics listener. */
  adminUrl(nodeId: string): string {
    const k = nodeOrdinal(nodeId);
    if (
      k === undefined ||
      (!this.processes.has(nodeId) && !this.owner.map.nodes.some((n) => n.id === nodeId))
    ) {
      throw new LocalClusterError('unknown_process', `no node named ${nodeId}`);
    }
    return `http://127.0.0.1:${adminPort(this.opts.port, k)}`;
  }

  /** The pid of the process's current (or last) run, spawned or adopted. */
  pid(name: string): number | undefined {
    return this.processes.pid(name);
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
    this.processes.beginStop();
    await this.owner.stopRebalancer(this.log);
    // Gateway first, so no request is mid-flight to a node that is going away.
    await this.processes.stopAll(which, 'gateway');
    await this.owner.close();
  }

  private addNodeProc(id: string): void {
    if (this.processes.has(id)) return;
    const k = nodeOrdinal(id);
    if (k === undefined)
      throw new LocalClusterError('foreign_map', `node ${id} was not named by the local launcher`);
    const address = nodeAddress(this.opts.port, k);
    const admin = adminPort(this.opts.port, k);
    this.processes.add({
      name: id,
      args: [
        this.opts.nodeMain?.[id] ?? NODE_MAIN,
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
    });
  }
  private addGatewayProc(): void {
    this.processes.add({
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

  /** Runs `fn` after every scale and clean-up queued before it, so they never interleave. */
  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** A newer map (the owner has taken it in already). */
  private onMap(): void {
    // Queued, so a node is never stopped while a scale that wants it is starting it.
    void this.serially(() => this.stopDrained()).catch((err: unknown) =>
      this.log.error({ err: errorMessage(err) }, 'stopping drained nodes failed'),
    );
  }

  /** Stops the nodes this launcher runs that the map no longer lists: drained, they hold nothing. */
  private async stopDrained(): Promise<void> {
    if (this.processes.stopping) return;
    const map = this.owner.map;
    const listed = new Set(map.nodes.map((n) => n.id));
    for (const name of this.processes.names()) {
      if (name === 'gateway' || listed.has(name) || this.joining.has(name)) continue;
      this.processes.retire(name);
      if (this.processes.running(name)) {
        this.log.info({ node: name, epoch: map.epoch }, `${name} has left the map: stopping it`);
        // Until every process has this epoch, one may still send a request to the leaving node.
        await this.waitForEpoch(map, 10_000);
        if (this.processes.stopping) return;
      }
      await this.processes.remove(name);
      this.log.info(
        { node: name, dataDir: this.nodeDataDir(name) },
        `${name} stopped; its files stay until it is added again`,
      );
    }
  }

  /** A node started for a scale that failed before the plan named it: stopped and forgotten. */
  private async dropUnlisted(id: string): Promise<void> {
    if (this.owner.map.nodes.some((n) => n.id === id)) return;
    await this.processes.remove(id);
  }

  /** Waits (at most timeoutMs) until the gateway and every node of `map` reports its epoch or a newer one. */
  private async waitForEpoch(map: PartitionMap, timeoutMs: number): Promise<void> {
    const urls = this.processes.readyUrls(['gateway', ...map.nodes.map((n) => n.id)]);
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
    while (waiting.length > 0 && Date.now() < deadline && !this.processes.stopping) {
      const done = await Promise.all(waiting.map(reached));
      waiting = waiting.filter((_, i) => !done[i]);
      if (waiting.length > 0) await sleep(100);
    }
    if (waiting.length > 0)
      this.log.warn({ epoch: map.epoch, waiting }, 'not every process reached the epoch in time');
  }
}
