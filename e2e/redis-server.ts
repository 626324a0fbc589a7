import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { freePort } from './free-port';

export interface RunningRedis {
  readonly url: string;
  readonly port: number;
  /** SIGTERM, wait for exit (SIGKILL after 5 s), remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /** a fixed port, e.g. to restart a server where clients expect it; default: a free one */
  readonly port?: number;
  /** how long to wait for PONG (default 10000 ms) */
  readonly readyTimeoutMs?: number;
}

const OUTPUT_LIMIT = 8192;

/** The path of redis-server, or an Error saying how to install it: these tests never skip. */
export function findRedisServer(): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'redis-server');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // Not in this PATH entry; keep looking.
      continue;
    }
  }
  throw new Error(
    'redis-server is not on PATH; the Redis e2e tests need a real server: install it (apt-get install redis-server)',
  );
}

/** A plain client for the duration of `fn`, to look at (or vandalise) what a component wrote. */
export async function withRedisClient<T>(url: string, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    return await fn(r);
  } finally {
    await r.quit();
  }
}

/**
 * A throwaway redis-server on 127.0.0.1: no persistence, its own temp dir,
 * ready (answers PING) when the promise resolves.
 */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RunningRedis> {
  const bin = findRedisServer();
  // A free port can be taken before redis binds it: try a few when we picked it.
  const attempts = opts.port === undefined ? 3 : 1;
  let lastError: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = opts.port ?? (await freePort());
    try {
      return await startOn(bin, port, opts.readyTimeoutMs ?? 10_000);
    } catch (err) {
      lastError = err;
      if (!(err instanceof Error) || !/Address already in use/i.test(err.message)) throw err;
    }
  }
  throw lastError;
}

async function startOn(bin: string, port: number, readyTimeoutMs: number): Promise<RunningRedis> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-redis-'));
  const child = spawn(
    bin,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_LIMIT);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  // Settles only while starting: a server that exits later (stop()) is not a start failure.
  let failStart: ((err: Error) => void) | undefined;
  const startFailed = new Promise<never>((_resolve, reject) => {
    failStart = reject;
  });
  child.on('error', (err) => {
    output = (output + `\n[spawn error] ${err.message}`).slice(-OUTPUT_LIMIT);
    failStart?.(new Error(`cannot run ${bin}: ${err.message}`));
  });
  void exited.then(({ code, signal }) =>
    failStart?.(new Error(`redis-server exited early (code ${code}, signal ${signal}):\n${output}`)),
  );

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= stopChild(child, exited).finally(() => fs.rmSync(dir, { recursive: true, force: true }));
    return stopped;
  };

  try {
    await Promise.race([waitForPong(port, readyTimeoutMs), startFailed]);
  } catch (err) {
    await stop();
    throw err;
  } finally {
    failStart = undefined;
  }
  return { url: `redis://127.0.0.1:${port}`, port, stop };
}

async function stopChild(
  child: ChildProcess,
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
): Promise<void> {
  // No pid: it never started, so there is no exit to wait for.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const forced = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), 5000);
  });
  const outcome = await Promise.race([exited, forced]);
  clearTimeout(timer);
  if (outcome === 'timeout') {
    child.kill('SIGKILL');
    await exited;
  }
}

async function waitForPong(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no attempt';
  while (Date.now() < deadline) {
    try {
      await ping(port);
      return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms (last: ${last})`);
}

/** One PING over a raw socket: no client library, so nothing of it lingers. */
function ping(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (err?: Error): void => {
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    socket.setTimeout(500, () => done(new Error('PING timed out')));
    socket.once('error', (err) => done(err));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (!reply.includes('\r\n')) return;
      if (reply.startsWith('+PONG')) done();
      else done(new Error(`unexpected reply ${JSON.stringify(reply.trim())}`));
    });
  });
}
