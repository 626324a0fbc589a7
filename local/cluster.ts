import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { UsageError } from '../common/cli-options';
import { errorMessage, KvError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { MetadataStore } from '../common/metadata-store';
import { openMetadataStore } from '../common/open-metadata-store';
import type { NodeInfo, PartitionMap } from '../common/partition-map';
import { placePartitions } from '../common/placement';

/**
 * The whole system on one machine: N storage nodes and a gateway as separate
 * local processes on 127.0.0.1, as on Kubernetes, minus Kubernetes. This
 * launcher plays the operator's part for the map: it creates the partition map
 * on first start and updates node addresses when ports change.
 */
export interface LocalClusterOptions {
  readonly dataDir: string;
  /** gateway port; node i listens on port+i (RPC) and port+100+i (health, metrics) */
  readonly port: number;
  /** undefined: 3 for a new cluster, the stored count for an existing one */
  readonly nodes?: number;
  readonly replicationFactor?: number;
  readonly partitionCount?: number;
  readonly cluster?: string;
  readonly redisUrl?: string;
  /** restart a process that exits on its own (npm start); tests kill nodes on purpose and keep this off */
  readonly restart?: boolean;
  /** extra flags for every gateway process */
  readonly gatewayArgs?: readonly string[];
  /** extra flags for every node process */
  readonly nodeArgs?: readonly string[];
  readonly log?: Logger;
  readonly startTimeoutMs?: number;
  /** extra environment for every process (e.g. LOG_LEVEL) */
  readonly env?: Readonly<Record<string, string>>;
}

export class LocalClusterError extends KvError {}

// Compiled processes live in dist/, whether this module runs from dist/ (npm start) or from source (jest).
const PARENT = path.resolve(__dirname, '..');
const DIST = path.basename(PARENT) === 'dist' ? PARENT : path.join(PARENT, 'dist');
const NODE_MAIN = path.join(DIST, 'node', 'main.js');
const GATEWAY_MAIN = path.join(DIST, 'gateway', 'main.js');

interface Proc {
  readonly name: string;
  readonly args: string[];
  readonly readyUrl: string;
  readonly logFile: string;
  child?: ChildProcess;
  exited?: Promise<number | null>;
  startedAt?: number;
  restartDelayMs?: number;
}

export class LocalCluster {
  private readonly procs = new Map<string, Proc>();
  private stopping = false;

  private constructor(
    readonly opts: LocalClusterOptions,
    readonly map: PartitionMap,
    private readonly store: MetadataStore,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.opts.port}`;
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

  /** Flags that point a process at this cluster's partition map. */
  get metadataArgs(): string[] {
    return this.opts.redisUrl ? ['--redis', this.opts.redisUrl] : ['--metadata-file', this.metadataFile];
  }

  nodeIds(): string[] {
    return this.map.nodes.map((n) => n.id);
  }

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    for (const f of [NODE_MAIN, GATEWAY_MAIN]) {
      if (!fs.existsSync(f))
        throw new LocalClusterError('not_built', `${f} is missing: run npm run build first`);
    }
    fs.mkdirSync(path.join(opts.dataDir, 'logs'), { recursive: true });
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
    const lc = new LocalCluster(opts, map, store);
    for (const [i, node] of map.nodes.entries()) {
      lc.procs.set(node.id, {
        name: node.id,
        args: [
          NODE_MAIN,
          '--id',
          node.id,
          '--cluster',
          cluster,
          '--data-dir',
          path.join(opts.dataDir, 'nodes', node.id),
          '--listen',
          node.address,
          '--admin-listen',
          `127.0.0.1:${adminPort(opts.port, i)}`,
          ...lc.metadataArgs,
          ...(opts.nodeArgs ?? []),
        ],
        readyUrl: `http://127.0.0.1:${adminPort(opts.port, i)}/readyz`,
        logFile: path.join(lc.logDir, `${node.id}.log`),
      });
    }
    lc.procs.set('gateway', {
      name: 'gateway',
      args: [
        GATEWAY_MAIN,
        '--id',
        'gw-local',
        '--cluster',
        cluster,
        '--port',
        String(opts.port),
        ...lc.metadataArgs,
        ...(opts.gatewayArgs ?? []),
      ],
      readyUrl: `http://127.0.0.1:${opts.port}/readyz`,
      logFile: path.join(lc.logDir, 'gateway.log'),
    });
    const busy = await busyPorts([
      opts.port,
      ...map.nodes.flatMap((n, i) => [Number(n.address.split(':')[1]), adminPort(opts.port, i)]),
    ]);
    if (busy.length > 0) {
      await store.close();
      throw new UsageError(
        `port${busy.length > 1 ? 's' : ''} ${busy.join(', ')} already in use on 127.0.0.1 (is another kvstore running?); pick another --port`,
      );
    }
    try {
      await Promise.all(lc.nodeIds().map((id) => lc.startProcess(id)));
      await lc.startProcess('gateway');
    } catch (err) {
      await lc.stop();
      throw err;
    }
    return lc;
  }

  /** Starts a stopped node (or the gateway) again and waits until it is ready. */
  async startProcess(name: string): Promise<void> {
    const proc = this.proc(name);
    if (proc.child && proc.child.exitCode === null && proc.child.signalCode === null) {
      throw new LocalClusterError('already_running', `${name} is already running`);
    }
    const out = fs.openSync(proc.logFile, 'a');
    const child = spawn(process.execPath, proc.args, {
      stdio: ['ignore', out, out],
      env: { ...process.env, ...this.opts.env },
    });
    fs.closeSync(out);
    proc.child = child;
    proc.startedAt = Date.now();
    proc.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    void proc.exited.then((code) => this.onExit(proc, child, code));
    await this.waitReady(proc, child);
  }

  /** Sends a signal to a process; for SIGKILL and SIGTERM waits until it is gone. */
  async signal(name: string, signal: NodeJS.Signals): Promise<void> {
    const proc = this.proc(name);
    const child = proc.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    if (signal === 'SIGKILL' || signal === 'SIGTERM') await proc.exited;
  }

  /** Base URL of a node's health and metrics listener. */
  adminUrl(nodeId: string): string {
    const i = this.map.nodes.findIndex((n) => n.id === nodeId);
    if (i < 0) throw new LocalClusterError('unknown_process', `no node named ${nodeId}`);
    return `http://127.0.0.1:${adminPort(this.opts.port, i)}`;
  }

  pid(name: string): number | undefined {
    return this.proc(name).child?.pid;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const running = [...this.procs.values()].filter(
      (p) => p.child && p.child.exitCode === null && p.child.signalCode === null,
    );
    // Gateway first, so no request is mid-flight to a node that is going away.
    const gw = running.find((p) => p.name === 'gateway');
    if (gw) await this.terminate(gw);
    await Promise.all(running.filter((p) => p !== gw).map((p) => this.terminate(p)));
    await this.store.close();
  }

  private async terminate(proc: Proc): Promise<void> {
    const child = proc.child;
    if (!child) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await proc.exited;
    clearTimeout(timer);
  }

  private proc(name: string): Proc {
    const p = this.procs.get(name);
    if (!p) throw new LocalClusterError('unknown_process', `no process named ${name}`);
    return p;
  }

  private onExit(proc: Proc, child: ChildProcess, code: number | null): void {
    if (this.stopping || proc.child !== child) return;
    this.opts.log?.warn(
      { process: proc.name, code, signal: child.signalCode, log: proc.logFile },
      `${proc.name} exited`,
    );
    if (!this.opts.restart) return;
    // Crash loops back off (1 s doubling to 30 s), as a kubelet does; a run of 60 s resets it.
    const now = Date.now();
    proc.restartDelayMs =
      now - (proc.startedAt ?? 0) > 60_000 ? 1000 : Math.min(30_000, (proc.restartDelayMs ?? 500) * 2);
    this.opts.log?.info({ process: proc.name, inMs: proc.restartDelayMs }, `restarting ${proc.name}`);
    setTimeout(() => {
      if (this.stopping || proc.child !== child) return;
      this.startProcess(proc.name).catch((err: unknown) =>
        this.opts.log?.error({ err: errorMessage(err), process: proc.name }, 'restart failed'),
      );
    }, proc.restartDelayMs);
  }

  private async waitReady(proc: Proc, child: ChildProcess): Promise<void> {
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new LocalClusterError(
          'process_exited',
          `${proc.name} exited during start (code ${child.exitCode}, signal ${child.signalCode}):\n${tail(proc.logFile)}`,
        );
      }
      try {
        const res = await fetch(proc.readyUrl, { signal: AbortSignal.timeout(1000) });
        if (res.ok) return;
      } catch {
        // not listening yet: poll again
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    throw new LocalClusterError(
      'start_timeout',
      `${proc.name} was not ready in time:\n${tail(proc.logFile)}`,
    );
  }
}

function busyPorts(ports: number[]): Promise<number[]> {
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

function adminPort(base: number, index: number): number {
  return base + 101 + index;
}

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Creates the map for a new cluster, or checks and adopts the stored one. */
async function ensureMap(
  store: MetadataStore,
  opts: LocalClusterOptions & { cluster: string },
): Promise<PartitionMap> {
  const addresses = (n: number): NodeInfo[] =>
    Array.from({ length: n }, (_, i) => ({ id: `n${i + 1}`, address: `127.0.0.1:${opts.port + 1 + i}` }));
  const existing = await store.load();
  if (!existing) {
    const n = opts.nodes ?? 3;
    const rf = opts.replicationFactor ?? Math.min(3, n);
    if (rf > n)
      throw new UsageError(`--replication-factor ${rf} needs at least ${rf} nodes, got --nodes ${n}`);
    const nodes = addresses(n);
    const partitionCount = opts.partitionCount ?? 256;
    const map: PartitionMap = {
      cluster: opts.cluster,
      epoch: 1,
      partitionCount,
      replicationFactor: rf,
      nodes,
      partitions: placePartitions({ nodes, partitionCount, replicationFactor: rf }),
      moves: [],
    };
    if (!(await store.compareAndSet(map, undefined))) {
      throw new LocalClusterError('map_race', 'another launcher created the partition map at the same time');
    }
    return map;
  }
  const mismatch = (flag: string, asked: number | undefined, stored: number): void => {
    if (asked !== undefined && asked !== stored) {
      throw new UsageError(
        `${opts.dataDir} holds a cluster with ${flag} ${stored}; changing it to ${asked} needs rebalancing, which the local launcher does not do yet`,
      );
    }
  };
  mismatch('--nodes', opts.nodes, existing.nodes.length);
  mismatch('--replication-factor', opts.replicationFactor, existing.replicationFactor);
  mismatch('--partitions', opts.partitionCount, existing.partitionCount);
  const nodes = addresses(existing.nodes.length);
  const same = existing.nodes.every((n, i) => n.id === nodes[i].id && n.address === nodes[i].address);
  if (same) return existing;
  if (!existing.nodes.every((n, i) => n.id === nodes[i].id)) {
    throw new LocalClusterError(
      'foreign_map',
      `the map in ${opts.dataDir} was not made by the local launcher`,
    );
  }
  // Ports changed since the last run: a new epoch tells every component the new addresses.
  const moved: PartitionMap = { ...existing, epoch: existing.epoch + 1, nodes };
  if (!(await store.compareAndSet(moved, existing.epoch))) {
    throw new LocalClusterError('map_race', 'the partition map changed while the launcher was updating it');
  }
  return moved;
}
