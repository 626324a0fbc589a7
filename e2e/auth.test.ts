import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { hashToken } from '../common/api-keys';
import { runKvctl } from '../kvctl/main';
import { alive, startTestCluster, tempDir, type TestCluster } from './cluster-harness';
import { freePortBlock } from './free-port';

/**
 * Gateway authentication against a real local cluster whose gateway runs with
 * --auth-file: the role and prefix matrix on both request paths (the lean
 * /v1/kv path and express's routes), the open health and metrics routes, the
 * failure counter, the key file's reload, and the per-connection cap.
 */
jest.setTimeout(90_000);

const TOKENS = {
  admin: 'kvs_e2e-admin-0000000000000000000000000000000000000',
  reader: 'kvs_e2e-reader-000000000000000000000000000000000000',
  writer: 'kvs_e2e-writer-000000000000000000000000000000000000',
  teamA: 'kvs_e2e-team-a-000000000000000000000000000000000000',
  fresh: 'kvs_e2e-fresh-0000000000000000000000000000000000000',
};
type Who = keyof typeof TOKENS | 'none';

const keyFile = (entries: Array<{ id: string; token: string; role: string; prefix?: string }>): string =>
  JSON.stringify({
    keys: entries.map(({ token, ...e }) => ({ ...e, sha256: hashToken(token) })),
  });

const INITIAL_KEYS = [
  { id: 'ops', token: TOKENS.admin, role: 'admin' },
  { id: 'dashboards', token: TOKENS.reader, role: 'read' },
  { id: 'app', token: TOKENS.writer, role: 'readwrite' },
  { id: 'team-a', token: TOKENS.teamA, role: 'readwrite', prefix: 'team-a/' },
];

let tc: TestCluster;
let url: string;
let dir: string;
let authFile: string;

beforeAll(async () => {
  dir = tempDir('auth');
  authFile = path.join(dir, 'keys.json');
  fs.writeFileSync(authFile, keyFile(INITIAL_KEYS));
  tc = await startTestCluster({ authFile, dataDir: path.join(dir, 'data') });
  url = tc.url;
  // A value to read, and to check that refused writes and deletes left alone.
  for (const key of ['shared', 'team-a/doc', 'team-b/doc']) {
    const res = await call('admin', 'PUT', `/v1/kv/${key}`, { body: `original ${key}` });
    expect(res.status).toBe(200);
  }
});

afterAll(async () => {
  await tc?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  code: string | undefined;
}

async function call(
  who: Who,
  method: string,
  route: string,
  opts: { body?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (route === '/put') headers['content-type'] = 'application/json';
  if (who !== 'none') headers.authorization = `Bearer ${TOKENS[who]}`;
  const res = await fetch(`${url}${route}`, { method, headers, body: opts.body });
  const text = await res.text();
  let code: string | undefined;
  if (method !== 'HEAD' && (res.headers.get('content-type') ?? '').includes('application/json')) {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  }
  return { status: res.status, headers: res.headers, text, code };
}

async function valueOf(key: string): Promise<string> {
  const res = await call('admin', 'GET', `/v1/kv/${key}`);
  return res.status === 404 ? '<absent>' : res.text;
}

function expectRefused(a: Answer, status: 401 | 403, what: string): void {
  expect({ what, status: a.status, code: a.code }).toEqual({
    what,
    status,
    code: status === 401 ? 'unauthorized' : 'forbidden',
  });
  if (status === 401) expect(a.headers.get('www-authenticate')).toMatch(/^Bearer/);
  // No stack traces or internals in refusals.
  expect(a.text).not.toMatch(/\n\s+at |127\.0\.0\.1/);
}

async function authFailures(): Promise<Record<string, number>> {
  const res = await call('none', 'GET', '/metrics');
  const counts: Record<string, number> = {};
  for (const m of res.text.matchAll(
    /^kvstore_gateway_auth_failures_total\{[^}]*reason="(\w+)"[^}]*\} (\d+)$/gm,
  )) {
    counts[m[1]] = Number(m[2]);
  }
  return counts;
}

describe('a gateway run with --auth-file', () => {
  it('serves health, readiness and metrics without a key, with security headers', async () => {
    for (const route of ['/healthz', '/readyz', '/metrics']) {
      const res = await call('none', 'GET', route);
      expect([route, res.status]).toEqual([route, 200]);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    }
    // The API's security headers (helmet, configured for an API) on both request paths: the lean
    // /v1/kv path and express's routes.
    const fast = await call('reader', 'GET', '/v1/kv/shared');
    const routed = await call('reader', 'GET', '/get?key=shared');
    for (const res of [fast, routed]) {
      expect(res.status).toBe(200);
      expect(res.headers.get('content-security-policy')).toBe("default-src 'none';frame-ancestors 'none'");
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('strict-transport-security')).toMatch(/^max-age=\d+/);
      expect(res.headers.get('x-powered-by')).toBeNull();
    }
    const metrics = await authFailures();
    expect(Object.keys(metrics).sort()).toEqual(['invalid', 'missing', 'prefix', 'role']);
  });

  it('refuses requests without a valid key with 401 on every other route', async () => {
    const routes: Array<[string, string, string?]> = [
      ['GET', '/v1/cluster'],
      ['GET', '/v1/kv/shared'],
      ['HEAD', '/v1/kv/shared'],
      ['PUT', '/v1/kv/shared', 'overwritten'],
      ['DELETE', '/v1/kv/shared'],
      ['GET', '/get?key=shared'],
      ['POST', '/put', JSON.stringify({ key: 'shared', value: 'overwritten' })],
      ['DELETE', '/delete?key=shared'],
      ['GET', '/v1/admin/repair'],
      ['POST', '/v1/admin/repair'],
      ['GET', '/no/such/route'],
    ];
    const badHeaders: Array<[string, Record<string, string>]> = [
      ['no key', {}],
      [
        'malformed header',
        { authorization: `Basic ${Buffer.from(`ops:${TOKENS.admin}`).toString('base64')}` },
      ],
      ['empty bearer', { authorization: 'Bearer ' }],
      ['unknown key', { authorization: 'Bearer kvs_not-a-key-of-this-cluster' }],
      ['two tokens', { authorization: `Bearer ${TOKENS.admin} ${TOKENS.admin}` }],
    ];
    for (const [method, route, body] of routes) {
      for (const [what, headers] of badHeaders) {
        const res = await call('none', method, route, { body, headers });
        if (method === 'HEAD') expect([what, method, route, res.status]).toEqual([what, method, route, 401]);
        else expectRefused(res, 401, `${what}: ${method} ${route}`);
      }
    }
    expect(await valueOf('shared')).toBe('original shared');
  });

  it('lets any valid key read the cluster map, and each role do what it covers', async () => {
    for (const who of ['reader', 'writer', 'teamA', 'admin'] as const) {
      expect([who, (await call(who, 'GET', '/v1/cluster')).status]).toEqual([who, 200]);
    }
    expect((await call('reader', 'GET', '/v1/kv/shared')).text).toBe('original shared');
    expect(JSON.parse((await call('reader', 'GET', '/get?key=shared')).text)).toEqual({
      key: 'shared',
      value: 'original shared',
    });
    expect((await call('writer', 'PUT', '/v1/kv/app/x', { body: 'one' })).status).toBe(200);
    expect(
      (await call('writer', 'POST', '/put', { body: JSON.stringify({ key: 'app/y', value: 'two' }) })).status,
    ).toBe(200);
    expect((await call('writer', 'DELETE', '/delete?key=app/y')).status).toBe(200);
    expect((await call('writer', 'DELETE', '/v1/kv/app/x')).status).toBe(200);
    expect(await valueOf('app/x')).toBe('<absent>');
  });

  it('refuses writes with a read key (403), and they change nothing', async () => {
    const put = JSON.stringify({ key: 'shared', value: 'overwritten' });
    expectRefused(await call('reader', 'PUT', '/v1/kv/shared', { body: 'overwritten' }), 403, 'PUT /v1/kv');
    expectRefused(await call('reader', 'POST', '/put', { body: put }), 403, 'POST /put');
    expectRefused(await call('reader', 'DELETE', '/v1/kv/shared'), 403, 'DELETE /v1/kv');
    expectRefused(await call('reader', 'DELETE', '/delete?key=shared'), 403, 'DELETE /delete');
    expect(await valueOf('shared')).toBe('original shared');
  });

  it('keeps a prefix-limited key inside its prefix on both request paths', async () => {
    // Inside: reads and writes work on both paths.
    expect((await call('teamA', 'PUT', '/v1/kv/team-a/new', { body: 'mine' })).status).toBe(200);
    expect((await call('teamA', 'GET', '/v1/kv/team-a/new')).text).toBe('mine');
    expect((await call('teamA', 'GET', '/get?key=team-a/doc')).status).toBe(200);
    expect(
      (await call('teamA', 'POST', '/put', { body: JSON.stringify({ key: 'team-a/other', value: 'v' }) }))
        .status,
    ).toBe(200);
    // Outside: every route refuses, percent-encoded or not, before any replica is asked.
    const outside: Array<[string, string, string?, Record<string, string>?]> = [
      ['GET', '/v1/kv/team-b/doc'],
      ['GET', '/v1/kv/team-b/doc', undefined, { 'if-none-match': '"x"' }],
      ['GET', '/v1/kv/team-a'],
      ['GET', '/v1/kv/%74eam-b/doc'],
      ['GET', '/v1/kv/shared'],
      ['PUT', '/v1/kv/team-b/doc', 'stolen'],
      // express's path (a compressed body): refused before the (not really gzip) body is read, so 403, not 400
      ['PUT', '/v1/kv/team-b/doc', 'stolen', { 'content-encoding': 'gzip' }],
      ['DELETE', '/v1/kv/team-b/doc'],
      ['GET', '/get?key=team-b/doc'],
      ['POST', '/put', JSON.stringify({ key: 'team-b/doc', value: 'stolen' })],
      ['DELETE', '/delete?key=team-b/doc'],
    ];
    for (const [method, route, body, headers] of outside) {
      expectRefused(await call('teamA', method, route, { body, headers }), 403, `${method} ${route}`);
    }
    expect(await valueOf('team-b/doc')).toBe('original team-b/doc');
    expect(await valueOf('shared')).toBe('original shared');
  });

  it('keeps /v1/admin/* for admin keys', async () => {
    for (const who of ['reader', 'writer', 'teamA'] as const) {
      expectRefused(await call(who, 'GET', '/v1/admin/repair'), 403, `${who} GET /v1/admin/repair`);
      expectRefused(await call(who, 'POST', '/v1/admin/repair'), 403, `${who} POST /v1/admin/repair`);
    }
    // Express matches routes case-insensitively; the check does too.
    expectRefused(await call('writer', 'POST', '/V1/ADMIN/REPAIR'), 403, 'POST /V1/ADMIN/REPAIR');
    expect((await call('admin', 'GET', '/v1/admin/repair')).status).toBe(200);
  });

  it('classifies a request by the path express routes it by, whatever form its target takes', async () => {
    // An absolute-form target (RFC 9112 3.2.2) is routed by its path: it must need the same key.
    const raw = (method: string, target: string, who: keyof typeof TOKENS, body = ''): Promise<number> =>
      new Promise((resolve, reject) => {
        const { port, hostname } = new URL(url);
        const socket = net.connect(Number(port), hostname, () =>
          socket.write(
            `${method} ${target} HTTP/1.1\r\nHost: kvstore\r\nAuthorization: Bearer ${TOKENS[who]}\r\n` +
              `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
          ),
        );
        let text = '';
        socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
        socket.on('error', reject);
        socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)));
      });
    const origin = `http://kvstore`;
    expect(await raw('POST', `${origin}/put`, 'reader', JSON.stringify({ key: 'shared', value: 'x' }))).toBe(
      403,
    );
    expect(await raw('DELETE', `${origin}/delete?key=shared`, 'reader')).toBe(403);
    expect(await raw('POST', `${origin}/v1/admin/repair`, 'writer')).toBe(403);
    expect(await raw('GET', `${origin}/get?key=team-b/doc`, 'teamA')).toBe(403);
    expect(await raw('GET', `${origin}/get?key=shared`, 'reader')).toBe(200);
    expect(await valueOf('shared')).toBe('original shared');
  });

  it('counts each refusal by reason in /metrics', async () => {
    const before = await authFailures();
    await call('none', 'GET', '/v1/kv/shared');
    await call('none', 'GET', '/get?key=shared');
    await call('none', 'GET', '/v1/cluster', { headers: { authorization: 'Bearer nope' } });
    await call('reader', 'PUT', '/v1/kv/shared', { body: 'x' });
    await call('teamA', 'GET', '/get?key=shared');
    await call('teamA', 'GET', '/v1/kv/shared');
    await call('teamA', 'GET', '/v1/kv/team-a/doc');
    const after = await authFailures();
    const delta = Object.fromEntries(Object.keys(after).map((r) => [r, after[r] - (before[r] ?? 0)]));
    expect(delta).toEqual({ missing: 2, invalid: 1, role: 1, prefix: 2 });
  });

  it('answers at most 32 pipelined requests on one connection and refuses the rest with 429', async () => {
    const request = `GET /v1/kv/shared HTTP/1.1\r\nHost: kvstore\r\nAuthorization: Bearer ${TOKENS.reader}\r\n\r\n`;
    const { port, hostname } = new URL(url);
    const received = await new Promise<string>((resolve, reject) => {
      // Written, not ended: a half-closed connection is one the server may stop answering.
      const socket = net.connect(Number(port), hostname, () => socket.write(request.repeat(100)));
      // The server closes the connection after its 429; this only bounds a failing test.
      socket.setTimeout(30_000, () => socket.destroy());
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', reject);
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    });
    // Bodies carry no newline, so a status line may follow one directly.
    const statuses = [...received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    const ok = statuses.filter((s) => s === 200).length;
    const limited = statuses.filter((s) => s === 429).length;
    expect(ok + limited).toBe(statuses.length);
    expect(ok).toBeGreaterThan(0);
    expect(ok).toBeLessThanOrEqual(32);
    expect(limited).toBeGreaterThanOrEqual(1);
    expect(statuses.length).toBeLessThanOrEqual(100);
    const refusal = received.slice(received.indexOf('HTTP/1.1 429'));
    expect(refusal).toMatch(/\r\nretry-after: \d+\r\n/i);
    expect(refusal).toMatch(/\r\nconnection: close\r\n/i);
    expect(refusal).toMatch(/"code":"rate_limited"/);
    // Even a refusal says the gateway answered it (common/version.ts).
    expect(refusal).toMatch(/\r\nx-kvstore: gateway\/\S+\r\n/i);
    // The gateway is still serving.
    expect((await call('reader', 'GET', '/v1/kv/shared')).text).toBe('original shared');
  });

  it('takes a changed key file within seconds: a new key works, a removed one gets 401', async () => {
    const next = INITIAL_KEYS.filter((k) => k.id !== 'dashboards').concat({
      id: 'fresh',
      token: TOKENS.fresh,
      role: 'read',
    });
    // As a mounted Secret changes: the new file is swapped in whole.
    fs.writeFileSync(`${authFile}.new`, keyFile(next));
    fs.renameSync(`${authFile}.new`, authFile);
    const deadline = Date.now() + 30_000;
    let fresh = 0;
    let removed = 0;
    while (Date.now() < deadline) {
      fresh = (await call('fresh', 'GET', '/v1/kv/shared')).status;
      removed = (await call('reader', 'GET', '/v1/kv/shared')).status;
      if (fresh === 200 && removed === 401) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect({ fresh, removed }).toEqual({ fresh: 200, removed: 401 });

    // A broken file is not taken: the last good keys stay in force.
    fs.writeFileSync(authFile, '{"keys": [ {"id": "half-written"');
    await new Promise((r) => setTimeout(r, 3_000));
    expect((await call('fresh', 'GET', '/v1/kv/shared')).status).toBe(200);
    expect((await call('admin', 'GET', '/v1/cluster')).status).toBe(200);
    const metrics = (await call('none', 'GET', '/metrics')).text;
    expect(metrics).toMatch(/^kvstore_gateway_auth_key_reloads_total\{[^}]*outcome="ok"[^}]*\} [1-9]/m);
    expect(metrics).toMatch(/^kvstore_gateway_auth_key_reloads_total\{[^}]*outcome="error"[^}]*\} [1-9]/m);
  });
});

describe('the gateway command line', () => {
  const run = (args: string[]): Promise<{ code: number | null; stderr: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [path.join(__dirname, '..', 'dist', 'gateway', 'main.js'), ...args],
        {
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code, stderr }));
    });
  const base = (): string[] => [
    '--port',
    '0',
    '--metadata-file',
    path.join(dir, 'data', 'partition-map.json'),
  ];

  it('refuses to start unless auth is on or off by name (usage error, exit 2)', async () => {
    const neither = await run(base());
    expect(neither.code).toBe(2);
    expect(neither.stderr).toMatch(/exactly one of --auth-file PATH .* or --no-auth/);
    const both = await run([...base(), '--no-auth', '--auth-file', authFile]);
    expect(both.code).toBe(2);
  });

  it('refuses to start with a missing or invalid key file, naming it', async () => {
    const missing = await run([...base(), '--auth-file', path.join(dir, 'absent.json')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/absent\.json/);
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(
      bad,
      JSON.stringify({ keys: [{ id: 'root', sha256: hashToken('x'), role: 'admin', prefix: 'a/' }] }),
    );
    const invalid = await run([...base(), '--auth-file', bad]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/keys\[0\] \(id "root"\): an admin key is cluster-wide/);
  });
});

describe('npm start with --auth-file', () => {
  const RUNNER = path.join(__dirname, '..', 'dist', 'local', 'main.js');

  async function kvctl(argv: string[]): Promise<{ code: number; err: string }> {
    let err = '';
    const code = await runKvctl(argv, {
      stdout: { write: () => true },
      stderr: { write: (c: string) => (err += c) },
      stdin: (async function* () {})(),
      env: {},
    });
    return { code, err };
  }

  it('passes the keys to its gateway and asks for an admin key on its own admin port', async () => {
    const runDir = tempDir('auth-runner');
    // Its own key file: the reload test above leaves the shared one broken on purpose.
    const runnerKeys = path.join(dir, 'runner-keys.json');
    fs.writeFileSync(runnerKeys, keyFile(INITIAL_KEYS));
    const port = await freePortBlock(3);
    const child = spawn(
      process.execPath,
      [RUNNER, '--data-dir', runDir, '--port', String(port), '--auth-file', runnerKeys],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 60_000;
      while (!out.includes('Press Ctrl-C to stop.')) {
        if (child.exitCode !== null || Date.now() > deadline)
          throw new Error(`the launcher did not start:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(out).toMatch(/^ {2}auth {6}on: API keys from /m);
      const gw = `http://127.0.0.1:${port}`;
      expect((await fetch(`${gw}/v1/kv/x`)).status).toBe(401);
      expect(
        (await fetch(`${gw}/v1/cluster`, { headers: { authorization: `Bearer ${TOKENS.admin}` } })).status,
      ).toBe(200);

      const adminUrl = `http://127.0.0.1:${port + 100}`;
      const scale = (token?: string) =>
        kvctl([...(token ? ['--token', token] : []), 'scale', '--nodes', '3', '--admin-url', adminUrl]);
      const none = await scale();
      expect(none.code).toBe(3);
      expect(none.err).toMatch(/unauthorized/);
      const writer = await scale(TOKENS.writer);
      expect(writer.code).toBe(3);
      expect(writer.err).toMatch(/forbidden/);
      expect((await scale(TOKENS.admin)).code).toBe(0);
    } finally {
      child.kill('SIGINT');
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 20_000))]);
      if (code === 'timeout') {
        child.kill('SIGKILL');
        const file = path.join(runDir, 'processes.json');
        if (fs.existsSync(file)) {
          const { processes } = JSON.parse(fs.readFileSync(file, 'utf8')) as {
            processes: Record<string, { pid: number }>;
          };
          for (const { pid } of Object.values(processes)) if (alive(pid)) process.kill(pid, 'SIGKILL');
        }
      }
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });
});
