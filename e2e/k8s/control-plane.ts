import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A real kube-apiserver + kube-controller-manager + etcd on 127.0.0.1, started by start.sh. */
export interface ControlPlane {
  /** admin (system:masters) kubeconfig: for kubectl, helm and @kubernetes/client-node */
  readonly kubeconfigPath: string;
  /** where build.sh put kube-apiserver, kube-controller-manager, kubectl, etcd and helm */
  readonly binDir: string;
  /** certs, etcd data, logs/ (one file per process), kubeconfig, env */
  readonly workDir: string;
  /** process.env plus KUBECONFIG, the binaries first on PATH, and helm's folders inside workDir */
  readonly env: NodeJS.ProcessEnv;
  /** Stops every process (SIGTERM, then SIGKILL) and removes workDir unless KVSTORE_K8S_KEEP is set. Idempotent. */
  stop(): Promise<void>;
}

export interface StartControlPlaneOptions {
  /** progress lines (build steps, readiness); default: stderr, so a long first build is visibly alive */
  readonly log?: (line: string) => void;
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
    env: { ...process.env, KVSTORE_K8S_BIN: binDir, KVSTORE_K8S_OWNER_PID: String(process.pid) },
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

  return { kubeconfigPath, binDir, workDir, env, stop };
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
