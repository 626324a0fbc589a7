import { UsageError } from '../common/cli-options';
import { formatCluster } from './commands/cluster';
import { argsOf } from './kvctl.fixtures';
import { parseKvctlArgs, runKvctl } from './main';
import { DEFAULT_GATEWAY_URL as DEFAULT_URL } from './options';
import { USAGE } from './usage';

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
  it.each([['--help'], ['-h'], ['help'], ['get', 'k', '--help']])(
    '%s prints the usage to stdout',
    async (...argv) => {
      const r = await run(argv);
      expect(r).toEqual({ code: 0, stdout: `${USAGE}\n`, stderr: '' });
    },
  );

  it('documents every command and the exit statuses', () => {
    for (const word of [
      'put <key> <value>',
      'get <key>',
      'delete <key>',
      'cluster [--json]',
      '--ttl',
      'KVSTORE_URL',
    ]) {
      expect(USAGE).toContain(word);
    }
    expect(USAGE).toContain('2 usage error');
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
    expect(r.stderr).toBe(`kvctl: usage: ${message}\nRun 'kvctl --help' for usage.\n`);
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
