import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { KeyValueStoreClient, type ClusterInfo } from '../client';
import { runKvctl } from '../kvctl/main';
import { alive as exists, tempDir } from './cluster-harness';

/**
 * `npm start`'s launcher as a real process (dist/local/main.js): it owns the
 * map like an operator, so killing it must not take the data plane down, a
 * new launcher adopts the processes it left, a rebalance it was running
 * resumes, and `kvctl scale` grows and shrinks the cluster while writes go on.
 */
jest.setTimeout(240_000);

const RUNNER = path.resolve(__dirname, '..', 'dist', 'local', 'main.js');
/**
 * Streaming throttled so that a rebalance lasts seconds and the launcher can be killed in the
 * middle of one: past a first burst of 1 MiB, a node receives 64 KiB/s. With PRELOAD below,
 * each node added to 3 takes about 1.8 MB: some 12 s.
 */
const NODE_ARGS = ['--node-arg=--move-max-bytes-per-second=65536'];
const PRELOAD_KEYS = 300;
const PRELOAD_VALUE = 'y'.repeat(10_000);

let dataDir: string;
let port: number;
let runner: Runner | undefined;
let writers: ReturnType<typeof startWriters> | undefined;
const everyPid = new Set<number>();

interface Runner {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | null>;
}

function canBind(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * The launcher's ports: gateway, nodes n1..n5 (RPC and health) and its own admin port (base + 100),
 * below the kernel's ephemeral range: n4 and n5 bind theirs only when the test scales, long after
 * the check, and an outgoing connection of any process may take an ephemeral port meanwhile.
 */
async function freeRunnerPorts(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 12_000);
    const ports = [base, base + 100];
    for (let k = 1; k <= 5; k++) ports.push(base + k, base + 100 + k);
    if ((await Promise.all(ports.map(canBind))).every(Boolean)) return base;
  }
  throw new Error('no free block of ports found');
}

async function startRunner(extra: string[] = []): Promise<Runner> {
  const child = spawn(
    process.execPath,
    [RUNNER, '--data-dir', dataDir, '--port', String(port), '--partitions', '32', ...NODE_ARGS, ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info' } },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const r: Runner = { child, output: () => out, exited };
  const deadline = Date.now() + 60_000;
  while (!out.includes('Press Ctrl-C to stop.')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the launcher did not start:\n${out}`);
    }
    await sleep(100);
  }
  for (const pid of Object.values(recorded())) everyPid.add(pid);
  return r;
}

/** name → pid, as the launcher recorded them in processes.json. */
function recorded(): Record<string, number> {
  const file = path.join(dataDir, 'processes.json');
  if (!fs.existsSync(file)) return {};
  const { processes } = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    processes: Record<string, { pid: number }>;
  };
  return Object.fromEntries(Object.entries(processes).map(([name, p]) => [name, p.pid]));
}

/** Exists and is not a zombie: an orphan killed here is reaped by whoever adopted it, maybe later. */
function alive(pid: number | undefined): boolean {
  if (!exists(pid)) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function storedMap(): { epoch: number; nodes: { id: string }[]; rebalance?: unknown; moves: unknown[] } {
  return JSON.parse(fs.readFileSync(path.join(dataDir, 'partition-map.json'), 'utf8')) as ReturnType<
    typeof storedMap
  >;
}

async function kvctl(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runKvctl(argv, {
    stdout: { write: (s: string | Uint8Array) => out.push(String(s)) },
    stderr: { write: (s: string) => err.push(s) },
    stdin: (async function* () {})(),
    env: {},
  });
  return { code, out: out.join(''), err: err.join('') };
}

const adminUrl = (): string => `http://127.0.0.1:${port + 100}`;
const gateway = (): KeyValueStoreClient =>
  new KeyValueStoreClient({ url: `http://127.0.0.1:${port}`, consistency: 'quorum' });

/** Writers on disjoint keys, one request at a time each: the last acknowledged value is what a read must return. */
function startWriters(client: KeyValueStoreClient, writers: number, keysPerWriter: number) {
  const acked = new Map<string, string>();
  const failures: string[] = [];
  let stop = false;
  const loops = Array.from({ length: writers }, async (_, w) => {
    for (let i = 0; !stop; i++) {
      const key = `w${w}-k${i % keysPerWriter}`;
      const value = `v${i}-${'x'.repeat(150)}`;
      try {
        await client.put(key, value);
        acked.set(key, value);
      } catch (err) {
        failures.push(`put ${key}: ${(err as Error).message}`);
      }
      await sleep(5);
    }
  });
  return {
    acked,
    failures,
    async stop() {
      stop = true;
      await Promise.all(loops);
    },
  };
}

beforeAll(async () => {
  dataDir = tempDir('runner');
  port = await freeRunnerPorts();
});

afterAll(async () => {
  await writers?.stop();
  // Whatever a failed test left: the launcher's children live in sessions of their own.
  runner?.child.kill('SIGKILL');
  for (const pid of [...everyPid, ...Object.values(recorded())]) {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test('the data plane outlives a killed launcher, and the next one adopts it', async () => {
  runner = await startRunner();
  const client = gateway();
  await client.put('before', 'crash');
  const pids = recorded();
  expect(Object.keys(pids).sort()).toEqual(['gateway', 'n1', 'n2', 'n3']);

  runner.child.kill('SIGKILL');
  await runner.exited;
  // A dead operator does not kill pods: every process still runs and the gateway still serves.
  for (const pid of Object.values(pids)) expect(alive(pid)).toBe(true);
  await client.put('while', 'dead');
  expect(await client.get('while')).toBe('dead');
  expect(await client.get('before')).toBe('crash');

  runner = await startRunner();
  expect(runner.output()).toContain('adopted   n1, n2, n3, gateway');
  // Adopted, not started again: the same processes, each started once.
  expect(recorded()).toEqual(pids);
  for (const id of ['n1', 'n2', 'n3']) {
    const log = fs.readFileSync(path.join(dataDir, 'logs', `${id}.log`), 'utf8');
    expect([id, log.split('\n').filter((l) => l.includes('"node started"')).length]).toEqual([id, 1]);
  }
  expect(await client.get('while')).toBe('dead');
  await client.put('after', 'adoption');
  expect(await client.get('after')).toBe('adoption');
  const progress = (await (await fetch(`${adminUrl()}/v1/admin/rebalance`)).json()) as { active: boolean };
  expect(progress.active).toBe(false);

  // The restart-on-exit policy covers adopted processes too.
  process.kill(pids.n2, 'SIGKILL');
  await waitFor('n2 restarted', () => recorded().n2 !== undefined && recorded().n2 !== pids.n2);
  everyPid.add(recorded().n2);
  await waitFor(
    'n2 ready',
    async () => (await fetch(`http://127.0.0.1:${port + 102}/readyz`).catch(() => null))?.ok === true,
  );
});

test('the admin endpoint refuses a bad scale with 400 and changes nothing', async () => {
  const before = storedMap().epoch;
  const pids = recorded();
  const post = async (body: string) => {
    const res = await fetch(`${adminUrl()}/v1/admin/scale`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string } } };
  };
  for (const body of ['{"nodes":2}', '{"nodes":65}', '{"nodes":3.5}', '{"nodes":"4"}', '{}', 'four']) {
    const r = await post(body);
    expect([body, r.status, r.body.error?.code]).toEqual([body, 400, 'bad_request']);
  }
  expect((await post('{"nodes":2}')).body.error?.message).toMatch(/from 3 \(the replication factor\) to 64/);
  const viaKvctl = await kvctl(['scale', '--nodes', '2', '--admin-url', adminUrl()]);
  expect(viaKvctl.code).toBe(2);
  expect(viaKvctl.err).toMatch(/^kvctl: bad_request: nodes must be a whole number from 3/);
  expect((await fetch(`${adminUrl()}/v1/admin/scale`)).status).toBe(405);
  expect((await fetch(`${adminUrl()}/nowhere`)).status).toBe(404);

  expect(storedMap().epoch).toBe(before);
  expect(recorded()).toEqual(pids);
});

test('kvctl scale grows 3 -> 5 and shrinks back to 3 under writes, surviving a launcher crash mid-rebalance', async () => {
  const client = gateway();
  for (let i = 0; i < PRELOAD_KEYS; i++) await client.put(`pre-${i}`, `p${i}-${PRELOAD_VALUE}`);
  writers = startWriters(client, 3, 40);

  // Grow: the launcher starts n4 and n5, waits until they are ready, then records the plan.
  const grow = await kvctl(['scale', '--nodes', '5', '--admin-url', adminUrl()]);
  expect(grow).toMatchObject({ code: 0, err: '' });
  expect(grow.out).toMatch(
    /^scaling to 5 nodes \(epoch \d+\): \d+ partition moves planned\n {2}added: {4}n4, n5/,
  );
  const planned = storedMap();
  expect(planned.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3', 'n4', 'n5']);
  expect(planned.rebalance).toBeDefined();
  expect(planned.moves.length).toBeGreaterThan(0);

  // Kill the launcher in the middle of the rebalance: the plan is in the map, n4 and n5 keep running.
  runner?.child.kill('SIGKILL');
  await runner?.exited;
  const pids = recorded();
  expect(Object.keys(pids).sort()).toEqual(['gateway', 'n1', 'n2', 'n3', 'n4', 'n5']);
  for (const pid of Object.values(pids)) everyPid.add(pid);
  expect(storedMap().rebalance).toBeDefined();
  await client.put('mid', 'rebalance');

  // A new launcher adopts all six and resumes the recorded plan.
  runner = await startRunner();
  expect(runner.output()).toContain('adopted   n1, n2, n3, n4, n5, gateway');
  expect(runner.output()).toMatch(/rebalance \d+ of \d+ moves left, to 5 nodes/);
  expect(recorded()).toEqual(pids);
  const status = await kvctl(['status', '--url', `http://127.0.0.1:${port}`, '--json']);
  const view = JSON.parse(status.out) as { rebalance: { targetNodes: string[]; movesTotal: number } };
  expect(view.rebalance).toMatchObject({ targetNodes: ['n1', 'n2', 'n3', 'n4', 'n5'] });
  const resumed = await kvctl([
    'scale',
    '--nodes',
    '5',
    '--wait',
    '--interval',
    '200ms',
    '--admin-url',
    adminUrl(),
  ]);
  expect(resumed).toMatchObject({ code: 0, err: '' });
  // Re-asking for the same target resumes the plan rather than re-planning it; it may have finished already.
  expect(resumed.out).toMatch(
    /rebalance finished in [\d.]+s: 5 nodes|nothing to do: the cluster already has 5 nodes/,
  );
  const grown = (await client.cluster()) as ClusterInfo;
  expect(grown.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3', 'n4', 'n5']);
  expect(grown.moves).toEqual([]);
  expect(grown.rebalance).toBeUndefined();
  for (const n of grown.nodes) expect([n.id, n.partitions > 0]).toEqual([n.id, true]);
  const report = await client.repairStatus();
  const streamed = report.nodes.filter((n) => n.id === 'n4' || n.id === 'n5').map((n) => n.streamedKeys ?? 0);
  expect(Math.min(...streamed)).toBeGreaterThan(0);

  // Shrink: n4 and n5 drain, leave the map, and the launcher stops them.
  const shrink = await kvctl([
    'scale',
    '--nodes',
    '3',
    '--wait',
    '--interval',
    '200ms',
    '--admin-url',
    adminUrl(),
  ]);
  expect(shrink).toMatchObject({ code: 0, err: '' });
  expect(shrink.out).toContain('draining: n4, n5');
  await waitFor('n4 and n5 stopped and forgotten', () => !('n4' in recorded()) && !('n5' in recorded()));
  expect(alive(pids.n4) || alive(pids.n5)).toBe(false);
  expect(Object.keys(recorded()).sort()).toEqual(['gateway', 'n1', 'n2', 'n3']);
  expect(storedMap().nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3']);

  const { acked, failures } = writers;
  await writers.stop();
  writers = undefined;
  expect(failures).toEqual([]);
  expect(acked.size).toBeGreaterThan(0);
  for (const [key, value] of acked) expect([key, await client.get(key)]).toEqual([key, value]);
  for (let i = 0; i < PRELOAD_KEYS; i += 7)
    expect(await client.get(`pre-${i}`)).toBe(`p${i}-${PRELOAD_VALUE}`);
  expect(await client.get('mid')).toBe('rebalance');
});

test('a clean SIGTERM of the launcher stops every process', async () => {
  const pids = Object.values(recorded());
  expect(pids.length).toBeGreaterThan(0);
  runner?.child.kill('SIGTERM');
  expect(await runner?.exited).toBe(0);
  expect(runner?.output()).toContain('stopped.');
  for (const pid of pids) expect(alive(pid)).toBe(false);
  expect(fs.existsSync(path.join(dataDir, 'processes.json'))).toBe(false);
  runner = undefined;
});
