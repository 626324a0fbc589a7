import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HybridLogicalClock } from '../common/hlc';
import { RpcClient } from '../common/rpc-client';
import { LocalCluster, type LocalClusterOptions } from '../local/cluster';
import { freePort, freePortBlock } from './free-port';

/**
 * Starts a real local cluster (separate node and gateway processes from dist/,
 * real LMDB files in a temp dir, real sockets) on ports nobody else holds.
 */
export interface TestCluster {
  readonly cluster: LocalCluster;
  readonly url: string;
  readonly dataDir: string;
  readonly port: number;
  /** stops every process; keeps the data directory unless `remove` */
  stop(remove?: boolean): Promise<void>;
}

/**
 * An internal-RPC client to one node of `t`, speaking as a peer would: the cluster's map epoch
 * and internal token, versions from a clock named `clockId`.
 */
export function nodeClient(t: TestCluster, node: string, clockId = 'e2e-peer', timeoutMs = 5000): RpcClient {
  const info = t.cluster.map.nodes.find((n) => n.id === node);
  if (!info) throw new Error(`no node ${node}`);
  return new RpcClient({
    nodeId: node,
    address: info.address,
    clock: new HybridLogicalClock(clockId),
    epoch: () => t.cluster.map.epoch,
    timeoutMs,
    token: t.cluster.internalToken,
  });
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `kvstore-${prefix}-`));
}

export async function startTestCluster(
  opts: Partial<LocalClusterOptions> & { dataDir?: string } = {},
): Promise<TestCluster> {
  const dataDir = opts.dataDir ?? tempDir('cluster');
  const port = opts.port ?? (await freePortBlock(opts.nodes ?? 3));
  const cluster = await LocalCluster.start({ nodes: 3, partitionCount: 64, ...opts, dataDir, port });
  return {
    cluster,
    url: cluster.url,
    dataDir,
    port,
    async stop(remove = false) {
      await cluster.stop();
      if (remove) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** True while a process with this pid exists. */
export function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A gateway process beside a test cluster's own, following the same map. */
export interface ExtraGateway {
  readonly url: string;
  readonly logFile: string;
  readonly process: ChildProcess;
  /** SIGTERM and wait for it to exit */
  stop(): Promise<void>;
}

/**
 * Starts one more gateway (dist/gateway/main.js, or `main` of another release) on a free port for `tc`'s cluster, with its metadata
 * flags and internal token, plus `args` (auth and rate-limit flags: `--no-auth` unless given one),
 * and waits until it is ready.
 */
export async function startExtraGateway(
  tc: TestCluster,
  args: readonly string[] = [],
  id = 'gw-second',
  main = path.resolve(__dirname, '..', 'dist', 'gateway', 'main.js'),
): Promise<ExtraGateway> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logFile = path.join(tempDir(id), 'gateway.log');
  const out = fs.openSync(logFile, 'a');
  const auth = args.some((a) => a === '--no-auth' || a.startsWith('--auth-file')) ? [] : ['--no-auth'];
  let child: ChildProcess;
  try {
    child = spawn(
      process.execPath,
      [
        main,
        ...['--id', id, '--cluster', tc.cluster.cluster, '--port', String(port)],
        ...tc.cluster.metadataArgs,
        // The launcher's nodes serve only callers holding the cluster's internal token.
        ...['--internal-token-file', tc.cluster.internalTokenFile],
        ...auth,
        ...args,
      ],
      { stdio: ['ignore', out, out] },
    );
  } finally {
    fs.closeSync(out);
  }
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  for (let i = 0; i < 200 && child.exitCode === null; i++) {
    const ok = await fetch(`${url}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { url, logFile, process: child, stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`gateway ${id} did not become ready; its log:\n${fs.readFileSync(logFile, 'utf8')}`);
}
