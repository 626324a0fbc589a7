import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Supervisor } from './supervisor';
import { probeFetch } from './tls-probe';

/** A port free on 127.0.0.1 now (the kernel's pick for port 0). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** The environment of a running process, as the kernel holds it. */
function environOf(pid: number): Record<string, string> {
  const entries = fs
    .readFileSync(`/proc/${pid}/environ`, 'utf8')
    .split('\0')
    .filter((e) => e !== '')
    .map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)] as const);
  return Object.fromEntries(entries);
}

describe('the supervisor', () => {
  const saved = { ...process.env };
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-supervisor-'));
  });
  afterEach(() => {
    process.env = { ...saved };
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("gives a child none of the launcher's KVSTORE_* settings, only the allow-list and what it sets", async () => {
    // The launcher's own settings, which every server would read as its own if passed on.
    process.env.KVSTORE_PORT = '4000';
    process.env.KVSTORE_RPC_TIMEOUT_MS = '5';
    process.env.LOG_LEVEL = 'warn';
    process.env.SOME_SECRET = 'not for children';
    const port = await freePort();
    const supervisor = new Supervisor({
      processesFile: path.join(dir, 'processes.json'),
      dataDir: dir,
      log: pino({ level: 'silent' }),
      probe: probeFetch(undefined),
      env: { DELIBERATE: 'yes' },
    });
    supervisor.add({
      name: 'child',
      // A real node process that answers its ready URL, as a node or gateway would.
      args: ['-e', `require('node:http').createServer((q, r) => r.end('ok')).listen(${port}, '127.0.0.1')`],
      readyUrl: `http://127.0.0.1:${port}/`,
      logFile: path.join(dir, 'child.log'),
      ports: [port],
    });
    try {
      await supervisor.start('child');
      const pid = supervisor.pid('child');
      expect(pid).toBeDefined();
      const env = environOf(pid!);
      expect(Object.keys(env).filter((k) => k.startsWith('KVSTORE_'))).toEqual([]);
      expect(env.SOME_SECRET).toBeUndefined();
      expect(env.LOG_LEVEL).toBe('warn');
      expect(env.DELIBERATE).toBe('yes');
      expect(env.PATH).toBe(process.env.PATH);
    } finally {
      await supervisor.stopAll('all', 'child');
    }
  });
});
