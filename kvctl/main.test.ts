import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { UsageError } from '../common/cli-options';
import { formatCluster } from './commands/cluster';
import { argsOf } from './kvctl.fixtures';
import { parseKvctlArgs, runKvctl } from './main';
import { DEFAULT_GATEWAY_URL as DEFAULT_URL } from './options';
import { IDENTITY_HEADER, identity, KVSTORE_VERSION } from '../common/version';
import { EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, palette, terminalEscapes } from './io';
import { AUTH_USAGE } from './commands/auth';
import { COMPLETION_USAGE } from './commands/completion';
import {
  BATCH_USAGE,
  CLUSTER_USAGE,
  DELETE_USAGE,
  EXIT_STATUSES,
  GET_USAGE,
  PUT_USAGE,
  USAGE,
} from './usage';

/** Runs kvctl in-process with buffers for its streams. Every case here fails or finishes before any request. */
async function run(argv: string[], env: Record<string, string | undefined> = {}) {
  let stdout = '';
  let stderr = '';
  const code = await runKvctl(argv, {
    stdout: { write: (c: string | Uint8Array) => (stdout += Buffer.from(c).toString('utf8')) },
    stderr: { write: (c: string) => (stderr += c) },
    stdin: (async function* () {})(),
    env,
  });
  return { code, stdout, stderr };
}

describe('kvctl help', () => {
  it.each([['--help'], ['-h'], ['help']])('%s prints the usage to stdout', async (...argv) => {
    const r = await run(argv);
    expect(r).toEqual({ code: 0, stdout: `${USAGE}\n`, stderr: '' });
  });

  it('prints the usage for `help` even when an earlier run in the process left an exit status', async () => {
    const before = process.exitCode;
    process.exitCode = 3;
    try {
      expect(await run(['help'])).toEqual({ code: 0, stdout: `${USAGE}\n`, stderr: '' });
    } finally {
      process.exitCode = before;
    }
  });

  it.each([
    [['get', 'k', '--help'], GET_USAGE],
    [['get', '--help'], GET_USAGE],
    [['help', 'get'], GET_USAGE],
    [['put', '--help'], PUT_USAGE],
    [['delete', '-h'], DELETE_USAGE],
    [['batch', '--help'], BATCH_USAGE],
    [['help', 'cluster'], CLUSTER_USAGE],
    [['completion', '--help'], COMPLETION_USAGE],
    [['auth', 'create-key', '--help'], AUTH_USAGE],
  ])("%j prints that command's own usage", async (argv, usage) => {
    expect(await run(argv)).toEqual({ code: 0, stdout: `${usage}\n`, stderr: '' });
  });

  it.each([['--version'], ['-V']])('%s prints the version', async (flag) => {
    expect(await run([flag])).toEqual({ code: 0, stdout: `${KVSTORE_VERSION}\n`, stderr: '' });
  });

  it('documents every command and the exit statuses', () => {
    for (const word of [
      'put <key> <value>',
      'get <key>',
      'delete <key>',
      'cluster',
      'completion bash|zsh',
      '-o, --output',
      '--ttl',
      'KVSTORE_URL',
    ]) {
      expect(USAGE).toContain(word);
    }
    expect(USAGE).toContain(EXIT_STATUSES);
  });
});

describe('kvctl usage errors exit 2 with the reason and a hint on stderr', () => {
  it.each([
    [[], 'missing command'],
    [['frobnicate'], 'unknown command "frobnicate"'],
    [['get'], "missing required argument 'key'"],
    [['delete'], "missing required argument 'key'"],
    [['put', 'k'], "missing required argument 'value'"],
    [
      ['put', 'k', 'v', 'extra'],
      "too many arguments for 'put'. Expected 2 arguments but got 3. (quote a value that has spaces)",
    ],
    [['get', 'a', 'b'], "too many arguments for 'get'. Expected 1 argument but got 2."],
    [['cluster', 'x'], "too many arguments for 'cluster'. Expected 0 arguments but got 1."],
    [
      ['get', 'k', '--json=yes'],
      "unknown option '--json=yes' (a key or value that starts with '-' goes after '--')",
    ],
    [['--consistency', 'strong', 'get', 'k'], '--consistency must be one of one, quorum, all, got "strong"'],
    [['--consistency'], "option '--consistency <level>' argument missing"],
    [
      ['--bogus', 'get', 'k'],
      "unknown option '--bogus' (a key or value that starts with '-' goes after '--')",
    ],
    [['get', '-k'], "unknown option '-k' (a key or value that starts with '-' goes after '--')"],
    // an option of another command: get has no --ttl (put's) nor --json (cluster's)
    [
      ['get', 'k', '--ttl', '5'],
      "unknown option '--ttl' (a key or value that starts with '-' goes after '--')",
    ],
    [['get', 'k', '--json'], "unknown option '--json' (a key or value that starts with '-' goes after '--')"],
    [['put', 'k', 'v', '--ttl', '0'], '--ttl must be a whole number of seconds >= 1, got "0"'],
    [['put', 'k', 'v', '--ttl', '1.5'], '--ttl must be a whole number of seconds >= 1, got "1.5"'],
    [['put', 'k', 'v', '--ttl=-3'], '--ttl must be a whole number of seconds >= 1, got "-3"'],
  ])('%j', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    // The help of the command named; an unknown option before it is the program's own error.
    const command =
      argv[0] === '--bogus' ? undefined : argv.find((a) => ['get', 'put', 'delete', 'cluster'].includes(a));
    expect(r.stderr).toBe(
      `kvctl: usage: ${message}\nRun 'kvctl${command ? ` ${command}` : ''} --help' for usage.\n`,
    );
  });

  it.each([
    [['get', ''], 'kvctl: bad_request: key must not be empty\n'],
    [['delete', '..'], 'kvctl: bad_request: key ".." cannot be addressed in a URL path\n'],
    [['--url', 'nope', 'get', 'k'], 'kvctl: bad_request: invalid url "nope"\n'],
    [['--url', 'ftp://h', 'cluster'], 'kvctl: bad_request: url must be http: or https:, got "ftp://h"\n'],
  ])('%j is refused by the client before any request', async (argv, stderr) => {
    expect(await run(argv)).toEqual({ code: 2, stdout: '', stderr });
  });
});

describe('parseKvctlArgs', () => {
  const cluster = (argv: string[], env: Record<string, string>) => argsOf('cluster', argv, env);

  it('takes the URL from --url, else KVSTORE_URL, else the default', () => {
    expect(cluster(['cluster'], {}).url).toBe(DEFAULT_URL);
    expect(cluster(['cluster'], { KVSTORE_URL: '' }).url).toBe(DEFAULT_URL);
    expect(cluster(['cluster'], { KVSTORE_URL: 'http://e:1' }).url).toBe('http://e:1');
    expect(cluster(['--url', 'http://f:2', 'cluster'], { KVSTORE_URL: 'http://e:1' }).url).toBe('http://f:2');
  });

  it('takes the token from --token, else KVSTORE_TOKEN', () => {
    expect(cluster(['cluster'], {}).token).toBeUndefined();
    expect(cluster(['cluster'], { KVSTORE_TOKEN: 't1' }).token).toBe('t1');
    expect(cluster(['--token', 't2', 'cluster'], { KVSTORE_TOKEN: 't1' }).token).toBe('t2');
  });

  it('accepts options anywhere and values after --', () => {
    expect(parseKvctlArgs(['put', 'k', 'v', '--consistency', 'all', '--ttl', '60'], {})).toEqual({
      command: 'put',
      args: { url: DEFAULT_URL, consistency: 'all', key: 'k', value: 'v', ttlSeconds: 60 },
    });
    expect(argsOf('put', ['put', 'k', 'v', '--ttl', '60', '--consistency', 'all'])).toMatchObject({
      consistency: 'all',
      ttlSeconds: 60,
    });
    expect(argsOf('put', ['put', '--', '-k', '-v'])).toEqual({ url: DEFAULT_URL, key: '-k', value: '-v' });
    expect(argsOf('put', ['put', 'k', '-'])).toEqual({ url: DEFAULT_URL, key: 'k', value: '-' });
    expect(parseKvctlArgs(['get', 'a/b c'], {})).toEqual({
      command: 'get',
      args: { url: DEFAULT_URL, key: 'a/b c' },
    });
    expect(parseKvctlArgs(['delete', 'k'], {})).toEqual({
      command: 'delete',
      args: { url: DEFAULT_URL, key: 'k' },
    });
    expect(parseKvctlArgs(['cluster', '--json'], {})).toEqual({
      command: 'cluster',
      args: { url: DEFAULT_URL, json: true },
    });
  });

  it('throws UsageError for a bad command line, naming the help to read', () => {
    expect(() => parseKvctlArgs(['nope'], {})).toThrow(UsageError);
    expect(() => parseKvctlArgs(['status', '--bogus'], {})).toThrow(
      expect.objectContaining({ context: expect.objectContaining({ help: 'kvctl status --help' }) }),
    );
  });
});

describe('formatCluster', () => {
  it('summarises nodes, replica counts and moves', () => {
    const text = formatCluster({
      cluster: 'demo',
      epoch: 4,
      partitionCount: 2,
      replicationFactor: 2,
      nodes: [
        { id: 'n1', address: '127.0.0.1:7001', zone: 'z1', status: 'up', partitions: 2 },
        { id: 'node-2', address: '127.0.0.1:7002', status: 'down', partitions: 1 },
      ],
      partitions: [['n1', 'node-2'], ['n1']],
      moves: [{ partition: 1, from: 'n1', to: 'node-2' }],
    });
    expect(text).toBe(
      [
        'cluster      demo',
        'epoch        4',
        'replication  2 replicas per partition',
        'partitions   2 (1 with fewer than 2 replicas)',
        'nodes        2 (1 down)',
        '',
        'NODE    ADDRESS         ZONE  STATUS  REPLICAS',
        'n1      127.0.0.1:7001  z1    up      2',
        'node-2  127.0.0.1:7002  -     down    1',
        '',
        'moves in progress: 1',
        '  PARTITION  FROM  TO',
        '  1          n1    node-2',
        '',
      ].join('\n'),
    );
  });
});

/** A stand-in gateway that names itself as the real one does: a key `k` stored, nothing else. */
async function standInGateway(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    res.setHeader(IDENTITY_HEADER, identity('gateway'));
    if (req.url === '/v1/kv/k') {
      res.writeHead(200, { etag: '"1.2.gw"', 'content-type': 'application/octet-stream' });
      res.end('v');
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'not_found', message: 'no such key' } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe('exit statuses, as kvctl --help documents them', () => {
  let gw: { url: string; close(): Promise<void> };
  beforeAll(async () => {
    gw = await standInGateway();
  });
  afterAll(() => gw.close());

  it('documents 0, 1, 2 and 3, and each is what kvctl returns', async () => {
    const documented = [...EXIT_STATUSES.matchAll(/^ {2}(\d) /gm)].map((m) => Number(m[1]));
    expect(documented).toEqual([EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_FAILURE]);
    const cases: Record<number, string[]> = {
      [EXIT_OK]: ['--url', gw.url, 'get', 'k'],
      [EXIT_NOT_FOUND]: ['--url', gw.url, 'get', 'absent'],
      [EXIT_USAGE]: ['get', 'k', '-o', 'yaml'],
      [EXIT_FAILURE]: ['--url', 'http://127.0.0.1:1', 'get', 'k'],
    };
    for (const code of documented) expect([code, (await run(cases[code])).code]).toEqual([code, code]);
  });

  it('-o json prints one JSON document; an unknown format is a usage error', async () => {
    const r = await run(['--url', gw.url, 'get', 'k', '-o', 'json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ key: 'k', version: '1.2.gw', value: 'v' });
    expect(await run(['-o', 'xml', 'cluster'])).toEqual({
      code: 2,
      stdout: '',
      stderr: `kvctl: usage: -o/--output takes table or json, got "xml"\nRun 'kvctl cluster --help' for usage.\n`,
    });
    expect((await run(['cluster', '--json', '-o', 'table'])).code).toBe(2);
  });
});

describe('escapes only on a terminal, never with NO_COLOR', () => {
  const io = (isTTY: boolean | undefined, env: Record<string, string>) => ({
    stdout: { write: () => true, ...(isTTY === undefined ? {} : { isTTY }) },
    stderr: { write: () => true },
    env,
  });
  it.each([
    [true, {}, true],
    [true, { NO_COLOR: '1' }, false],
    [true, { NO_COLOR: '' }, true],
    [true, { TERM: 'dumb' }, false],
    [false, {}, false],
    [undefined, {}, false],
  ])('tty %s, env %j: %s', (isTTY, env, escapes) => {
    expect(terminalEscapes(io(isTTY, env))).toBe(escapes);
    expect(palette(io(isTTY, env)).bad('DEGRADED')).toBe(
      escapes ? '\x1b[1;31mDEGRADED\x1b[22;39m' : 'DEGRADED',
    );
  });
});
