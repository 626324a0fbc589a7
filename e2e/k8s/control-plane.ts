import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The real node start.sh adds with `node: true` (node.sh): containerd, kubelet and kube-proxy in a
 * network namespace of their own, CoreDNS and a default StorageClass; the host routes to its pod and
 * Service ranges, so a ClusterIP answers from this process.
 */
export interface KubeNode {
  /** the Node object's name */
  readonly name: string;
  /** the network namespace (under /run/netns) the node's processes run in */
  readonly netns: string;
  /** the node's address (the kubelet's, and the source of its pods' traffic to the host) */
  readonly ip: string;
  /** where the API server listens, on the host's end of the node's link */
  readonly hostIp: string;
  readonly podCidr: string;
  readonly serviceCidr: string;
  /** the cluster DNS Service's ClusterIP */
  readonly dnsIp: string;
  /** the node's containerd socket (for `ctr --address`) */
  readonly containerdSocket: string;
}

/** A real kube-apiserver + kube-controller-manager + etcd, started by start.sh; with a node if asked. */
export interface ControlPlane {
  /** admin (system:masters) kubeconfig: for kubectl, helm and @kubernetes/client-node */
  readonly kubeconfigPath: string;
  /** where build.sh put kube-apiserver, kube-controller-manager, kubectl, etcd and helm */
  readonly binDir: string;
  /** certs, etcd data, logs/ (one file per process), kubeconfig, env */
  readonly workDir: string;
  /** process.env plus KUBECONFIG, the binaries first on PATH, and helm's folders inside workDir */
  readonly env: NodeJS.ProcessEnv;
  /** the node, when started with `node: true` */
  readonly node?: KubeNode;
  /** Stops every process (SIGTERM, then SIGKILL) and removes workDir unless KVSTORE_K8S_KEEP is set. Idempotent. */
  stop(): Promise<void>;
}

export interface StartControlPlaneOptions {
  /** progress lines (build steps, readiness); default: stderr, so a long first build is visibly alive */
  readonly log?: (line: string) => void;
  /**
   * Start a real node too (start.sh with KVSTORE_K8S_NODE=1: scheduler, containerd, kubelet,
   * kube-proxy, CoreDNS, storage, our images). Needs root; takes the first free address slot.
   */
  readonly node?: boolean;
}

export interface CommandResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

const here = __dirname;

/**
 * Builds the binaries if the cache lacks them (build.sh; tens of minutes the
 * first time on a 2-core machine, a second when cached) and starts a fresh
 * control plane in a new temporary work dir. Throws with the scripts' output
 * when either fails: these tests never fall back to a fake API server.
 */
export async function startControlPlane(opts: StartControlPlaneOptions = {}): Promise<ControlPlane> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const build = await run('bash', [path.join(here, 'build.sh')], { onStderrLine: log });
  if (build.code !== 0) throw new Error(`e2e/k8s/build.sh failed (exit ${build.code}):\n${build.stderr}`);
  const binDir = lastLine(build.stdout);

  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-k8s-'));
  const stopScript = path.join(here, 'stop.sh');
  // If the test process exits without calling stop() (a crash, a forgotten
  // afterAll), stop the servers anyway; start.sh's owner watcher covers SIGKILL.
  const onExit = (): void => {
    try {
      execFileSync('bash', [stopScript, workDir], { stdio: 'ignore' });
    } catch {
      // Exiting anyway: nothing left to report the failure to.
      return;
    }
  };
  process.on('exit', onExit);

  const start = await run('bash', [path.join(here, 'start.sh'), workDir], {
    env: {
      ...process.env,
      KVSTORE_K8S_BIN: binDir,
      KVSTORE_K8S_OWNER_PID: String(process.pid),
      KVSTORE_K8S_NODE: opts.node ? '1' : '0',
    },
    onStderrLine: log,
  });
  if (start.code !== 0) {
    process.off('exit', onExit);
    throw new Error(
      `e2e/k8s/start.sh failed (exit ${start.code}); logs in ${workDir}/logs:\n${start.stderr}`,
    );
  }
  const kubeconfigPath = lastLine(start.stdout);

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KUBECONFIG: kubeconfigPath,
    PATH: `${binDir}${path.delimiter}${process.env.PATH ?? ''}`,
    // helm would otherwise write repositories and caches into the user's home.
    HELM_CACHE_HOME: path.join(workDir, 'helm', 'cache'),
    HELM_CONFIG_HOME: path.join(workDir, 'helm', 'config'),
    HELM_DATA_HOME: path.join(workDir, 'helm', 'data'),
  };

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      const result = await run('bash', [stopScript, workDir], {});
      process.off('exit', onExit);
      if (result.code !== 0)
        throw new Error(`e2e/k8s/stop.sh failed (exit ${result.code}):\n${result.stderr}`);
      if (process.env.KVSTORE_K8S_KEEP) log(`control plane stopped; kept ${workDir}`);
      else fs.rmSync(workDir, { recursive: true, force: true });
    })();
    return stopped;
  };

  const node = opts.node ? readNodeEnv(path.join(workDir, 'env')) : undefined;
  return { kubeconfigPath, binDir, workDir, env, node, stop };
}

/** The node's addresses from start.sh's env file (`export NAME=value` lines, values %q-quoted or plain). */
function readNodeEnv(file: string): KubeNode {
  const vars = new Map<string, string>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^export (KVSTORE_K8S_[A-Z_]+)=(\S+)$/.exec(line);
    if (m?.[1] && m[2]) vars.set(m[1], m[2]);
  }
  const get = (name: string): string => {
    const value = vars.get(`KVSTORE_K8S_${name}`);
    if (!value) throw new Error(`${file} lacks KVSTORE_K8S_${name}: did start.sh start a node?`);
    return value;
  };
  return {
    name: get('NODE_NAME'),
    netns: get('NETNS'),
    ip: get('NODE_IP'),
    hostIp: get('HOST_IP'),
    podCidr: get('POD_CIDR'),
    serviceCidr: get('SERVICE_CIDR'),
    dnsIp: get('DNS_IP'),
    containerdSocket: get('CONTAINERD_SOCK'),
  };
}

/** Runs one of the control plane's binaries (kubectl, helm, ...) against it; never throws on a non-zero exit. */
export function runTool(
  cp: ControlPlane,
  tool: string,
  args: readonly string[],
  input?: string,
): Promise<CommandResult> {
  return run(path.join(cp.binDir, tool), args, { env: cp.env, input, cwd: cp.workDir });
}

/** runTool that fails on a non-zero exit, with the tool's stderr; resolves to its stdout. */
export async function runToolOk(
  cp: ControlPlane,
  tool: string,
  args: readonly string[],
  input?: string,
): Promise<string> {
  const result = await runTool(cp, tool, args, input);
  if (result.code !== 0) throw new Error(`${tool} ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/**
 * Polls `check` until it returns a value (not undefined). An error thrown by `check` counts as
 * "not yet" (the API server may be between states) and is reported if time runs out.
 */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 120_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string;
  readonly cwd?: string;
  readonly onStderrLine?: (line: string) => void;
}

function run(command: string, args: readonly string[], opts: RunOptions): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      stderr += text;
      if (opts.onStderrLine) {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) opts.onStderrLine(line);
      }
    });
    child.once('error', reject);
    child.once('close', (code) => {
      if (partial && opts.onStderrLine) opts.onStderrLine(partial);
      resolve({ code, stdout, stderr });
    });
    // A command that exits without reading its input (build.sh when everything is cached) closes the
    // pipe first: EPIPE then says nothing about how it went, its exit code does.
    child.stdin.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') reject(err);
    });
    child.stdin.end(opts.input ?? '');
  });
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  const line = lines[lines.length - 1]?.trim();
  if (!line) throw new Error(`expected a path on the last line of the output, got: ${JSON.stringify(text)}`);
  return line;
}
