import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LocalCluster } from '../local/cluster';
import type { Endpoint } from './load';
import { etcdHttp, kvHttp, resp, type Protocol } from './protocols';

/**
 * The systems under test, each started by the benchmark on loopback and stopped
 * after its runs: kvstore (through LocalCluster, as `npm start` runs it), a
 * 3-member etcd, a single Redis, and the minimal in-memory server.
 */
export interface System {
  readonly name: string;
  readonly endpoints: readonly Endpoint[];
  readonly protocol: Protocol;
  /** how it was started, for RESULTS.md */
  readonly description: string;
  /** its server processes by role (gateway, node, member, server), for CPU accounting */
  processes(): ServerProcess[];
  stop(): Promise<void>;
}

export interface ServerProcess {
  readonly role: string;
  readonly pid: number;
}

export class PeerError extends Error {}

export interface StartOptions {
  readonly workDir: string;
  readonly valueSize: number;
  /** extra environment for kvstore processes (e.g. NODE_OPTIONS for the profiler hook) */
  readonly env?: Readonly<Record<string, string>>;
}

const HOST = '127.0.0.1';

// Compiled files live in dist/, whether this module runs from dist/ (npm run bench) or from source (jest).
const PARENT = path.resolve(__dirname, '..');
export const REPO_ROOT = path.basename(PARENT) === 'dist' ? path.dirname(PARENT) : PARENT;
export const DIST_BENCH = path.join(REPO_ROOT, 'dist', 'bench');

export function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, HOST, () => s.close(() => resolve(true)));
  });
}

/** A base port with `offsets` from it all free (e.g. LocalCluster's port+i and port+101+i). */
export async function freePorts(offsets: readonly number[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const free = await Promise.all(offsets.map((o) => canBind(base + o)));
    if (free.every(Boolean)) return base;
  }
  throw new PeerError('no free block of ports found');
}

async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  child?: ChildProcess,
  timeoutMs = 30_000,
) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new PeerError(`${what} exited during start (code ${child.exitCode})`);
    }
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new PeerError(`${what} was not ready within ${timeoutMs} ms`);
}

function httpOk(url: string, expect?: string): Promise<boolean> {
  return fetch(url, { signal: AbortSignal.timeout(1000) }).then(
    async (r) => r.ok && (expect === undefined || (await r.text()).includes(expect)),
  );
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function launch(cmd: string, args: string[], logFile: string): ChildProcess {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  return child;
}

async function terminate(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
          c.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
}

function processesOf(role: string, children: readonly ChildProcess[]): ServerProcess[] {
  return children.flatMap((c) => (c.pid === undefined ? [] : [{ role, pid: c.pid }]));
}

export async function startKvstore(
  opts: StartOptions & { nodes: number; replicationFactor: number },
): Promise<System & { cluster: LocalCluster }> {
  const offsets = [0];
  for (let i = 0; i < opts.nodes; i++) offsets.push(1 + i, 101 + i);
  const port = await freePorts(offsets);
  const dataDir = path.join(opts.workDir, `kvstore-${opts.nodes}n-rf${opts.replicationFactor}`);
  const cluster = await LocalCluster.start({
    dataDir,
    port,
    nodes: opts.nodes,
    replicationFactor: opts.replicationFactor,
    env: opts.env,
  });
  return {
    name: `kvstore ${opts.nodes} node${opts.nodes > 1 ? 's' : ''} RF ${opts.replicationFactor}`,
    endpoints: [{ host: HOST, port }],
    protocol: kvHttp(`${HOST}:${port}`, opts.valueSize),
    description: `LocalCluster: ${opts.nodes} node process(es) + 1 gateway, RF ${opts.replicationFactor}, 256 partitions, consistency quorum (default), LMDB in ${dataDir}`,
    cluster,
    processes: () =>
      ['gateway', ...cluster.nodeIds()].flatMap((n) => {
        const pid = cluster.pid(n);
        return pid ? [{ role: n === 'gateway' ? 'gateway' : 'nodes', pid }] : [];
      }),
    stop: () => cluster.stop(),
  };
}

/** A 3-member etcd cluster; clients spread over the members as etcd's own client balances. */
export async function startEtcd(opts: StartOptions & { members?: number }): Promise<System> {
  const n = opts.members ?? 3;
  const base = await freePorts(Array.from({ length: 2 * n }, (_, i) => i));
  const dir = path.join(opts.workDir, 'etcd');
  fs.mkdirSync(dir, { recursive: true });
  const peerUrl = (i: number): string => `http://${HOST}:${base + n + i}`;
  const initial = Array.from({ length: n }, (_, i) => `m${i + 1}=${peerUrl(i)}`).join(',');
  const children = Array.from({ length: n }, (_, i) => {
    const client = `http://${HOST}:${base + i}`;
    return launch(
      'etcd',
      [
        '--name',
        `m${i + 1}`,
        '--data-dir',
        path.join(dir, `m${i + 1}`),
        '--listen-client-urls',
        client,
        '--advertise-client-urls',
        client,
        '--listen-peer-urls',
        peerUrl(i),
        '--initial-advertise-peer-urls',
        peerUrl(i),
        '--initial-cluster',
        initial,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        'kvstore-bench',
        '--logger',
        'zap',
        '--log-level',
        'warn',
      ],
      path.join(dir, `m${i + 1}.log`),
    );
  });
  try {
    for (let i = 0; i < n; i++) {
      await waitFor(`etcd m${i + 1}`, () => httpOk(`http://${HOST}:${base + i}/health`, 'true'), children[i]);
    }
  } catch (err) {
    await terminate(children);
    throw err;
  }
  return {
    name: `etcd ${n} members`,
    endpoints: Array.from({ length: n }, (_, i) => ({ host: HOST, port: base + i })),
    protocol: etcdHttp(`${HOST}:${base}`, opts.valueSize),
    description: `etcd ${etcdVersion()} x${n} on loopback, default settings (WAL fsync per batch), HTTP JSON gateway /v3/kv/put and /v3/kv/range (serializable)`,
    processes: () => processesOf('members', children),
    stop: () => terminate(children),
  };
}

export async function startRedis(opts: StartOptions): Promise<System & { port: number }> {
  const port = await freePorts([0]);
  const dir = path.join(opts.workDir, 'redis');
  fs.mkdirSync(dir, { recursive: true });
  const child = launch(
    'redis-server',
    ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir],
    path.join(dir, 'redis.log'),
  );
  try {
    await waitFor('redis-server', () => tcpOpen(port), child);
  } catch (err) {
    await terminate([child]);
    throw err;
  }
  return {
    name: 'redis 1 server',
    endpoints: [{ host: HOST, port }],
    protocol: resp(opts.valueSize),
    description: 'redis-server, in memory only (no RDB, no AOF): the single-node ceiling, not a durable peer',
    port,
    processes: () => processesOf('server', [child]),
    stop: () => terminate([child]),
  };
}

export async function startMinimal(opts: StartOptions): Promise<System> {
  const port = await freePorts([0]);
  const script = path.join(DIST_BENCH, 'minimal-server.js');
  const child = launch(process.execPath, [script, String(port)], path.join(opts.workDir, 'minimal.log'));
  try {
    await waitFor('minimal server', () => tcpOpen(port), child);
  } catch (err) {
    await terminate([child]);
    throw err;
  }
  return {
    name: 'minimal node:http',
    endpoints: [{ host: HOST, port }],
    protocol: kvHttp(`${HOST}:${port}`, opts.valueSize),
    description:
      'bench/minimal-server.ts: node:http, values in a Map, same /v1/kv/{key} routes, nothing else',
    processes: () => processesOf('server', [child]),
    stop: () => terminate([child]),
  };
}

function etcdVersion(): string {
  try {
    const out = execFileSync('etcd', ['--version'], { encoding: 'utf8' });
    return /etcd Version: (\S+)/.exec(out)?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
