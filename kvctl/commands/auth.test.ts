import { ApiKeySet, authenticate } from '../../common/api-keys';
import { newToken } from '../../common/api-keys';
import { argsOf, commandOf } from '../kvctl.fixtures';
import { runKvctl } from '../main';
import { createKey } from './auth';

async function kvctl(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runKvctl(argv, {
    stdout: { write: (c: string | Uint8Array) => (stdout += c.toString()) },
    stderr: { write: (c: string) => (stderr += c) },
    stdin: (async function* () {})(),
    env: {},
  });
  return { code, stdout, stderr };
}

describe('kvctl auth create-key', () => {
  it('prints a new token once and an entry the gateway accepts for it', async () => {
    const { code, stdout, stderr } = await kvctl(
      'auth',
      'create-key',
      '--id',
      'team-a-writer',
      '--role',
      'readwrite',
      '--prefix',
      'team-a/',
    );
    expect([code, stderr]).toEqual([0, '']);
    const token = /^ {2}(kvs_[A-Za-z0-9_-]{43})$/m.exec(stdout)?.[1];
    const entryLine = /^ {2}(\{.*\})$/m.exec(stdout)?.[1];
    expect(token).toBeDefined();
    expect(entryLine).toBeDefined();
    const entry = JSON.parse(entryLine ?? '') as Record<string, unknown>;
    expect(entry).toEqual({
      id: 'team-a-writer',
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      role: 'readwrite',
      prefix: 'team-a/',
    });
    // The token itself is printed once and is not in the entry.
    expect(stdout.split(token ?? '').length).toBe(2);
    const keys = ApiKeySet.parse(JSON.stringify({ keys: [entry] }));
    const auth = authenticate(keys, `Bearer ${token}`);
    expect(auth.ok && auth.principal.keyId).toBe('team-a-writer');
  });

  it('prints JSON for scripts, with a different token every time', async () => {
    const a = await kvctl('auth', 'create-key', '--id', 'r', '--role', 'read', '--json');
    const b = await kvctl('--url', 'http://x', 'auth', 'create-key', '--role', 'read', '--id', 'r', '--json');
    const pa = JSON.parse(a.stdout) as { token: string; entry: { sha256: string } };
    const pb = JSON.parse(b.stdout) as { token: string; entry: { sha256: string } };
    expect(pa.token).not.toBe(pb.token);
    expect(pa.entry).toEqual({ id: 'r', role: 'read', sha256: expect.any(String) });
    expect(ApiKeySet.parse(JSON.stringify({ keys: [pa.entry] })).verify(pa.token)?.keyId).toBe('r');
  });

  it('refuses what the gateway would refuse, with a usage error (exit 2)', async () => {
    for (const [argv, message] of [
      [['auth'], /needs a subcommand/],
      [['auth', 'delete-key'], /unknown auth subcommand "delete-key"/],
      [['auth', 'create-key', '--role', 'read'], /--id ID is required/],
      [['auth', 'create-key', '--id', 'a'], /--role is required/],
      [
        ['auth', 'create-key', '--id', 'a', '--role', 'write'],
        /--role must be one of read, readwrite, admin/,
      ],
      [['auth', 'create-key', '--id', 'a', '--role', 'admin', '--prefix', 'x/'], /admin key is cluster-wide/],
      [['auth', 'create-key', '--id', 'has space', '--role', 'read'], /id/],
      [['auth', 'create-key', '--id', 'a', '--role', 'read', '--prefix', ''], /prefix/],
      [['auth', 'create-key', '--id', 'a', '--role', 'read', 'extra'], /too many arguments for 'create-key'/],
      [['auth', 'create-key', '--id', 'a', '--role', 'read', '--bogus'], /bogus/],
    ] as const) {
      const r = await kvctl(...argv);
      expect([argv, r.code, r.stdout]).toEqual([argv, 2, '']);
      expect(r.stderr).toMatch(message);
    }
  });

  it('shows its help', async () => {
    const r = await kvctl('auth', '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: kvctl auth create-key/);
    expect((await kvctl('--help')).stdout).toMatch(/auth create-key/);
  });

  it('is recognised wherever the global options are', () => {
    expect(commandOf(['--token', 't', 'auth', 'create-key', '--id', 'a', '--role', 'read'])).toBe('auth');
    expect(commandOf(['get', 'auth'])).toBe('get');
    expect(argsOf('auth', ['--url', 'u', 'auth', 'create-key', '--id', 'a', '--role', 'admin'])).toEqual({
      id: 'a',
      role: 'admin',
      json: false,
    });
  });

  it('makes 32-byte base64url tokens with the kvs_ prefix', () => {
    const fixed = newToken((n) => Buffer.alloc(n, 0xff));
    expect(fixed).toBe(`kvs_${Buffer.alloc(32, 0xff).toString('base64url')}`);
    const { token, entry } = createKey({ id: 'a', role: 'read' });
    expect(token).toMatch(/^kvs_[A-Za-z0-9_-]{43}$/);
    expect(entry.sha256).toMatch(/^[0-9a-f]{64}$/);
  });
});
