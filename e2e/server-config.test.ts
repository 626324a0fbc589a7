import { execFile } from 'node:child_process';
import path from 'node:path';

/** The four servers as built (dist/): their --help, and settings from KVSTORE_* variables. */
const DIST = path.resolve(__dirname, '..', 'dist');
const SERVERS = {
  'kvstore-node': 'node/main.js',
  'kvstore-gateway': 'gateway/main.js',
  'kvstore-operator': 'operator/main.js',
  launcher: 'local/main.js',
} as const;

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(main: string, args: string[], env: Record<string, string> = {}): Promise<Exit> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(DIST, main), ...args],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe.each(Object.entries(SERVERS))('%s', (_name, main) => {
  it('prints its usage on --help, naming the environment variables, and exits 0', async () => {
    const r = await run(main, ['--help']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/^usage: /);
    expect(r.stdout).toMatch(/KVSTORE_SOME_FLAG/);
  });

  it('refuses an unknown flag with a usage error (exit 2)', async () => {
    const r = await run(main, ['--no-such-flag']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--no-such-flag/);
  });
});

test('a bad value from a variable is a usage error that names the variable, not the flag', async () => {
  const r = await run(SERVERS['kvstore-gateway'], ['--no-auth'], { KVSTORE_RPC_TIMEOUT_MS: 'soon' });
  expect(r.code).toBe(2);
  expect(r.stderr).toBe('kvstore-gateway: KVSTORE_RPC_TIMEOUT_MS must be a whole number, got "soon"\n');
  const b = await run(SERVERS['kvstore-gateway'], [], { KVSTORE_NO_AUTH: 'yes' });
  expect(b.code).toBe(2);
  expect(b.stderr).toBe('kvstore-gateway: KVSTORE_NO_AUTH takes true, false, 1 or 0, got "yes"\n');
});

test("a Kubernetes service link's KVSTORE_PORT is named as such", async () => {
  const r = await run(SERVERS['kvstore-gateway'], ['--no-auth'], { KVSTORE_PORT: 'tcp://10.0.0.1:80' });
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/KVSTORE_PORT must be a whole number.*enableServiceLinks: false/);
});

test('a flag on the command line wins over its variable', async () => {
  // The variable alone is refused; with the flag given, the flag's (bad) value is the one reported.
  const r = await run(SERVERS['kvstore-gateway'], ['--no-auth', '--port=x'], { KVSTORE_PORT: 'y' });
  expect(r.code).toBe(2);
  expect(r.stderr).toBe('kvstore-gateway: --port must be a whole number, got "x"\n');
});

test('a KVSTORE_* variable that is no setting is logged as a warning at start-up', async () => {
  // The operator logs, then stops at the missing kubeconfig: enough to see its start-up lines.
  const r = await run(SERVERS['kvstore-operator'], ['--metrics-listen=127.0.0.1:1'], {
    KVSTORE_LEADER_ELEKT: '0',
    KUBECONFIG: path.join(DIST, 'no-such-kubeconfig'),
  });
  expect(r.code).toBe(2);
  const warning = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((l) => l.level === 'warn');
  expect(warning).toMatchObject({ component: 'operator', variables: ['KVSTORE_LEADER_ELEKT'] });
  expect(String(warning?.msg)).toMatch(/^ignoring KVSTORE_LEADER_ELEKT: not a setting of kvstore-operator/);
});
