import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { UsageError } from '../../common/cli-options';
import { latencySummary, summarize } from '../../verify/workload';
import type { HistoryOp } from '../../verify/history';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type KvctlIo } from '../io';
import { argsOf, commandOf } from '../kvctl.fixtures';
import { runKvctl } from '../main';
import { formatReport, VERIFY_EXIT_VIOLATIONS } from './verify';
import { IDENTITY_HEADER, identity } from '../../common/version';

describe('command line', () => {
  test('verify is found wherever the global options are', () => {
    expect(commandOf(['verify'])).toBe('verify');
    expect(commandOf(['--url', 'http://x', 'verify', '--duration', '5s'])).toBe('verify');
    expect(commandOf(['--consistency', 'one', '--token', 't', 'verify'])).toBe('verify');
    expect(commandOf(['put', 'verify', 'x'])).toBe('put');
    expect(commandOf(['put', 'k', 'verify', '--ttl', '5'])).toBe('put');
    // A command's own options follow the command (commander); before it they are refused.
    expect(() => commandOf(['--ttl', '5', 'put', 'k', 'verify'])).toThrow(/unknown option '--ttl'/);
    expect(() => commandOf([])).toThrow(/missing command/);
  });

  test('defaults, environment and flags', () => {
    expect(argsOf('verify', ['verify'], {})).toEqual({
      url: 'http://127.0.0.1:3000',
      token: undefined,
      consistency: 'quorum',
      durationMs: 60_000,
      maxOps: undefined,
      clients: 4,
      keys: 16,
      timeoutMs: 5000,
      historyFile: undefined,
      json: false,
    });
    const a = argsOf(
      'verify',
      [
        'verify',
        '--duration',
        '2m',
        '--clients',
        '8',
        '--keys',
        '100',
        '--timeout',
        '1500ms',
        '--history',
        'h.json',
      ],
      { KVSTORE_URL: 'http://gw:3000', KVSTORE_TOKEN: 'tok' },
    );
    expect(a).toMatchObject({
      url: 'http://gw:3000',
      token: 'tok',
      durationMs: 120_000,
      clients: 8,
      keys: 100,
      timeoutMs: 1500,
      historyFile: 'h.json',
    });
    // --ops alone runs until the count, without the default duration
    expect(argsOf('verify', ['verify', '--ops', '500'], {})).toMatchObject({
      maxOps: 500,
      durationMs: undefined,
    });
  });

  test.each([
    [['verify', 'extra']],
    [['verify', '--clients', '0']],
    [['verify', '--keys', 'many']],
    [['verify', '--duration', 'soon']],
    [['verify', '--consistency', 'most']],
    [['verify', '--bogus']],
  ])('refuses %j', (argv) => {
    expect(() => argsOf('verify', argv, {})).toThrow(UsageError);
  });

  test('durations: the one syntax of every duration flag (common/duration.ts)', () => {
    const verify = (d: string) => argsOf('verify', ['verify', '--duration', d, '--timeout', d], {});
    expect(verify('60s')).toMatchObject({ durationMs: 60_000, timeoutMs: 60_000 });
    expect(verify('1.5s')).toMatchObject({ durationMs: 1500, timeoutMs: 1500 });
    expect(verify('250ms')).toMatchObject({ durationMs: 250, timeoutMs: 250 });
    expect(verify('2m')).toMatchObject({ durationMs: 120_000, timeoutMs: 120_000 });
    expect(verify('1h')).toMatchObject({ durationMs: 3_600_000, timeoutMs: 3_600_000 });
    // status --interval once refused 1m that verify --duration took: one parser now.
    expect(argsOf('status', ['status', '--watch', '--interval', '1m'], {}).intervalMs).toBe(60_000);
    expect(argsOf('repair', ['repair', '--watch', '--interval', '1m'], {}).intervalMs).toBe(60_000);
    expect(argsOf('scale', ['scale', '--nodes', '3', '--wait', '--interval', '1m'], {}).intervalMs).toBe(
      60_000,
    );
    for (const bad of ['60', '0s', '-1s', '1.5x', 'abc', '']) {
      expect(() => verify(bad)).toThrow(
        new RegExp(`^--duration takes a duration .*got ${JSON.stringify(bad)}`),
      );
    }
    expect(() => argsOf('status', ['status', '--watch', '--interval', 'abc'], {})).toThrow(
      /^--interval takes/,
    );
    expect(() => argsOf('verify', ['verify', '--timeout', '2h'], {})).toThrow(
      /^--timeout takes a duration from 1ms to 1h/,
    );
  });
});

describe('statistics', () => {
  test('nearest-rank percentiles', () => {
    const samples = Array.from({ length: 100 }, (_, i) => 100 - i); // 1..100, unsorted
    expect(latencySummary(samples)).toEqual({ count: 100, p50: 50, p99: 99, max: 100 });
    expect(latencySummary([7])).toEqual({ count: 1, p50: 7, p99: 7, max: 7 });
    expect(latencySummary([])).toEqual({ count: 0, p50: 0, p99: 0, max: 0 });
  });

  test('counts by op and outcome, errors by code', () => {
    const base = { client: 'c', key: 'k', start: 0 };
    const ops: HistoryOp[] = [
      { ...base, id: 1, op: 'put', value: 'a', end: 2, outcome: 'ok', version: '1.0.g' },
      { ...base, id: 2, op: 'put', value: 'b', end: 4, outcome: 'failed', error: 'unavailable: 1 of 3' },
      { ...base, id: 3, op: 'get', end: 6, outcome: 'timeout', error: 'timeout: no answer' },
      { ...base, id: 4, op: 'delete', end: 8, outcome: 'failed', error: 'unreachable: ECONNREFUSED' },
    ];
    const s = summarize(ops, 1000);
    expect(s.operations).toBe(4);
    expect(s.byOp.put).toEqual({ ok: 1, failed: 1, timeout: 0 });
    expect(s.errors).toEqual({ unavailable: 1, timeout: 1, unreachable: 1 });
    expect(s.latency.all).toEqual({ count: 4, p50: 4, p99: 8, max: 8 });
    const text = formatReport(s, 1, 'quorum', [
      { kind: 'lost-write', key: 'k', message: 'put "a" #1 is gone' },
    ]);
    expect(text).toMatch(/^operations {3}4 in 1\.0 s/m);
    expect(text).toMatch(/^errors {7}(unavailable 1|timeout 1|unreachable 1)/m);
    expect(text).toMatch(/^violations {3}1 \(lost-write 1\)$/m);
    expect(text).toMatch(/^ {2}lost-write {2}k: put "a" #1 is gone$/m);
  });
});

/**
 * A gateway in memory: last writer wins by a counter, like one kvstore gateway. `forget` acknowledges every
 * fourth put without keeping it, a store that loses acknowledged writes.
 */
async function fakeGateway(forget: boolean): Promise<{ url: string; close(): Promise<void> }> {
  const data = new Map<string, { value: Buffer; version: string } | null>();
  let counter = 0;
  let puts = 0;
  const server = http.createServer((req, res) => {
    // A stand-in gateway says so, as the real one does (common/version.ts).
    res.setHeader(IDENTITY_HEADER, identity('gateway'));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/readyz') {
        res.end('{"status":"ready"}');
        return;
      }
      const key = decodeURIComponent(url.pathname.slice('/v1/kv/'.length));
      const version = `${1000 + ++counter}.0.fake`;
      res.setHeader('content-type', 'application/json');
      if (req.method === 'PUT') {
        if (!(forget && ++puts % 4 === 0)) data.set(key, { value: Buffer.concat(chunks), version });
        res.end(JSON.stringify({ key, version }));
      } else if (req.method === 'DELETE') {
        data.set(key, null);
        res.end(JSON.stringify({ key, version }));
      } else {
        const rec = data.get(key);
        if (!rec) {
          res.statusCode = 404;
          res.end('{"error":{"code":"not_found","message":"key not found"}}');
          return;
        }
        res.setHeader('etag', `"${rec.version}"`);
        res.setHeader('content-type', 'application/octet-stream');
        res.end(rec.value);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function capture(): { io: KvctlIo; out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    io: {
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      env: {},
    },
    out: () => out,
    err: () => err,
  };
}

describe('kvctl verify against a gateway', () => {
  test('a correct store: operations, latencies, 0 violations, exit 0', async () => {
    const gw = await fakeGateway(false);
    try {
      const c = capture();
      const code = await runKvctl(
        ['--url', gw.url, 'verify', '--ops', '400', '--clients', '3', '--keys', '4'],
        {
          ...c.io,
          stdin: (async function* () {})(),
        },
      );
      expect(c.err()).toBe('');
      expect(code).toBe(EXIT_OK);
      expect(c.out()).toMatch(/^operations {3}4\d\d in /m);
      expect(c.out()).toMatch(/^latency ms {3}p50 [\d.]+ {2}p99 [\d.]+ {2}max [\d.]+$/m);
      expect(c.out()).toMatch(/^final reads {2}4 keys at quorum$/m);
      expect(c.out()).toMatch(/^violations {3}0$/m);
    } finally {
      await gw.close();
    }
  });

  test('a store that loses acknowledged writes: each violation listed, exit 1', async () => {
    const gw = await fakeGateway(true);
    try {
      const c = capture();
      const code = await runKvctl(
        ['verify', '--url', gw.url, '--ops', '400', '--clients', '3', '--keys', '4'],
        c.io,
      );
      expect(code).toBe(VERIFY_EXIT_VIOLATIONS);
      const listed = c.out().match(/^ {2}lost-write {2}verify\/\S+\/k\d: .+$/gm) ?? [];
      const counted = Number(/^violations {3}(\d+)/m.exec(c.out())?.[1]);
      expect(listed.length).toBeGreaterThan(0);
      expect(listed.length).toBe(counted);
    } finally {
      await gw.close();
    }
  });

  test('-o json: the report as one JSON document on stdout, the progress on stderr', async () => {
    const gw = await fakeGateway(true);
    try {
      const c = capture();
      const code = await runKvctl(
        ['verify', '--url', gw.url, '--ops', '200', '--keys', '4', '-o', 'json'],
        c.io,
      );
      expect(code).toBe(VERIFY_EXIT_VIOLATIONS);
      const report = JSON.parse(c.out()) as { finalReads: number; violations: { kind: string }[] };
      expect(report.finalReads).toBe(4);
      expect(report.violations.length).toBeGreaterThan(0);
      expect(report.violations.every((v) => v.kind === 'lost-write')).toBe(true);
      expect(c.err()).toMatch(/^verify: http:/);
    } finally {
      await gw.close();
    }
  });

  test('usage errors exit 2; an unreachable gateway exits 3', async () => {
    const c = capture();
    expect(await runKvctl(['verify', '--clients', 'x'], c.io)).toBe(EXIT_USAGE);
    expect(c.err()).toMatch(/--clients takes a whole number/);
    const d = capture();
    expect(await runKvctl(['verify', '--url', 'http://127.0.0.1:1', '--ops', '1'], d.io)).toBe(EXIT_FAILURE);
    expect(d.err()).toMatch(/not_ready: the gateway at http:\/\/127\.0\.0\.1:1 is not ready/);
  });
});
