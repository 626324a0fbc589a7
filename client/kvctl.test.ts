import { DEFAULT_URL, KvctlUsageError, USAGE, formatCluster, parseKvctlArgs, runKvctl } from './kvctl';

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
    [['get'], 'get: missing <key>'],
    [['delete'], 'delete: missing <key>'],
    [['put', 'k'], 'put: missing <key> <value>'],
    [['put', 'k', 'v', 'extra'], 'put takes <key> <value>, got 3 arguments (quote a value that has spaces)'],
    [['get', 'a', 'b'], 'get takes <key>, got 2 arguments'],
    [['cluster', 'x'], 'cluster takes no arguments, got 1 argument'],
    [['get', 'k', '--json=yes'], "Option '--json' does not take an argument"],
    [['--consistency', 'strong', 'get', 'k'], '--consistency must be one of one, quorum, all, got "strong"'],
    [['--consistency'], "Option '--consistency <value>' argument missing"],
    [['--bogus', 'get', 'k'], "unknown option --bogus (a key or value that starts with '-' goes after '--')"],
    [['get', '-k'], "unknown option -k (a key or value that starts with '-' goes after '--')"],
    [['get', 'k', '--ttl', '5'], '--ttl applies only to put'],
    [['get', 'k', '--json'], '--json applies only to cluster'],
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
  it('takes the URL from --url, else KVSTORE_URL, else the default', () => {
    expect(parseKvctlArgs(['cluster'], {}).url).toBe(DEFAULT_URL);
    expect(parseKvctlArgs(['cluster'], { KVSTORE_URL: '' }).url).toBe(DEFAULT_URL);
    expect(parseKvctlArgs(['cluster'], { KVSTORE_URL: 'http://e:1' }).url).toBe('http://e:1');
    expect(parseKvctlArgs(['--url', 'http://f:2', 'cluster'], { KVSTORE_URL: 'http://e:1' }).url).toBe(
      'http://f:2',
    );
  });

  it('takes the token from --token, else KVSTORE_TOKEN', () => {
    expect(parseKvctlArgs(['cluster'], {}).token).toBeUndefined();
    expect(parseKvctlArgs(['cluster'], { KVSTORE_TOKEN: 't1' }).token).toBe('t1');
    expect(parseKvctlArgs(['--token', 't2', 'cluster'], { KVSTORE_TOKEN: 't1' }).token).toBe('t2');
  });

  it('accepts options anywhere and values after --', () => {
    expect(parseKvctlArgs(['put', 'k', 'v', '--consistency', 'all', '--ttl', '60'], {})).toEqual({
      url: DEFAULT_URL,
      consistency: 'all',
      token: undefined,
      command: { name: 'put', key: 'k', value: 'v', ttlSeconds: 60 },
    });
    expect(parseKvctlArgs(['put', '--', '-k', '-v'], {}).command).toEqual({
      name: 'put',
      key: '-k',
      value: '-v',
    });
    expect(parseKvctlArgs(['put', 'k', '-'], {}).command).toEqual({ name: 'put', key: 'k', value: '-' });
    expect(parseKvctlArgs(['get', 'a/b c'], {}).command).toEqual({ name: 'get', key: 'a/b c' });
    expect(parseKvctlArgs(['delete', 'k'], {}).command).toEqual({ name: 'delete', key: 'k' });
    expect(parseKvctlArgs(['cluster', '--json'], {}).command).toEqual({ name: 'cluster', json: true });
  });

  it('throws KvctlUsageError for a bad command line', () => {
    expect(() => parseKvctlArgs(['nope'], {})).toThrow(KvctlUsageError);
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
