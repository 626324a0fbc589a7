import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { UsageError } from '../../common/cli-options';
import type { RebalanceStatus, ScaleResult } from '../../common/rest-api';
import { argsOf, commandOf } from '../kvctl.fixtures';
import { parseKvctlArgs, runKvctl } from '../main';
import { SCALE_USAGE, DEFAULT_ADMIN_URL, formatPlan } from './scale';
import { IDENTITY_HEADER, identity } from '../../common/version';

const idle: RebalanceStatus = {
  epoch: 3,
  active: false,
  targetNodes: ['n1', 'n2', 'n3'],
  drainingNodes: [],
  movesTotal: 0,
  movesDone: 0,
  movesLeft: 0,
  keysInFlight: 0,
  bytesInFlight: 0,
  keysStreamed: 0,
  bytesStreamed: 0,
  moves: [],
};

const growing: ScaleResult = {
  ...idle,
  epoch: 4,
  active: true,
  targetNodes: ['n1', 'n2', 'n3', 'n4', 'n5'],
  movesTotal: 4,
  movesLeft: 4,
  startedAt: 1_000,
  moves: [
    { partition: 0, from: 'n1', to: 'n4', state: 'waiting', keys: 0, bytes: 0 },
    { partition: 1, from: 'n2', to: 'n4', state: 'waiting', keys: 0, bytes: 0 },
    { partition: 2, from: 'n3', to: 'n5', state: 'waiting', keys: 0, bytes: 0 },
    { partition: 3, from: 'n1', to: 'n5', state: 'waiting', keys: 0, bytes: 0 },
  ],
  addedNodes: ['n4', 'n5'],
};

describe('kvctl scale: command line', () => {
  it('is found wherever the global options put it', () => {
    expect(commandOf(['scale', '--nodes', '5'])).toBe('scale');
    expect(commandOf(['--url', 'http://g:1', 'scale', '--nodes', '5'])).toBe('scale');
    expect(commandOf(['--token', 'scale', 'get', 'k'])).toBe('get');
    // scale's own options follow it (commander); before the command they are refused.
    expect(() => commandOf(['--admin-url', 'scale', 'get', 'k'])).toThrow(/unknown option '--admin-url'/);
    expect(commandOf(['get', 'scale'])).toBe('get');
  });

  it('parses --nodes, --admin-url (flag, environment, default), --wait and --interval', () => {
    expect(argsOf('scale', ['scale', '--nodes', '5'], {})).toEqual({
      adminUrl: DEFAULT_ADMIN_URL,
      nodes: 5,
      wait: false,
      intervalMs: 1000,
      json: false,
    });
    expect(DEFAULT_ADMIN_URL).toBe('http://127.0.0.1:3100');
    expect(argsOf('scale', ['scale', '--nodes', '4'], { KVSTORE_ADMIN_URL: 'http://a:1' }).adminUrl).toBe(
      'http://a:1',
    );
    expect(
      argsOf(
        'scale',
        ['scale', '--nodes', '4', '--admin-url', 'http://b:2', '--wait', '--interval', '250ms'],
        {
          KVSTORE_ADMIN_URL: 'http://a:1',
        },
      ),
    ).toMatchObject({ adminUrl: 'http://b:2', wait: true, intervalMs: 250 });
    // Without --admin-url: the launcher beside the gateway (--url's port + 100), the flag before the
    // environment, the admin URL before the gateway's.
    const at = (argv: string[], env: Record<string, string>) =>
      argsOf('scale', [...argv, 'scale', '--nodes', '3'], env).adminUrl;
    expect(at(['--url', 'http://g:3000'], { KVSTORE_ADMIN_URL: 'http://a:1' })).toBe('http://g:3100');
    expect(at(['--url', 'https://[::1]/kv'], {})).toBe('https://[::1]:543');
    expect(at([], { KVSTORE_URL: 'http://g:4000' })).toBe('http://g:4100');
    expect(at([], { KVSTORE_URL: 'http://g:4000', KVSTORE_ADMIN_URL: 'http://a:1' })).toBe('http://a:1');
    expect(at(['--url', 'http://g:3000'], {})).toBe('http://g:3100');
    expect(
      argsOf('scale', ['--url', 'http://g:1', 'scale', '--nodes', '3', '--admin-url', 'http://b:2'], {})
        .adminUrl,
    ).toBe('http://b:2');
    expect(parseKvctlArgs(['scale', '--help'], {})).toEqual({ command: 'help', text: `${SCALE_USAGE}\n` });
  });

  it.each([
    [['scale'], /--nodes N is required/],
    [['scale', '--nodes', 'five'], /whole number from 1 to 64/],
    [['scale', '--nodes', '0'], /whole number from 1 to 64/],
    [['scale', '--nodes', '65'], /whole number from 1 to 64/],
    [['scale', '--nodes', '3', '--interval', '1s'], /needs --wait/],
    [['scale', '--nodes', '3', '--wait', '--interval', '1ms'], /duration/],
    [['scale', '--nodes', '3', 'extra'], /too many arguments for 'scale'/],
    [['scale', '--bogus'], /bogus/],
  ])('refuses %j', (argv, message) => {
    expect(() => argsOf('scale', argv, {})).toThrow(UsageError);
    expect(() => argsOf('scale', argv, {})).toThrow(message);
  });

  it('prints the plan: moves, nodes added and drained, moves per node', () => {
    expect(formatPlan(growing, 5)).toBe(
      [
        'scaling to 5 nodes (epoch 4): 4 partition moves planned',
        '  added:    n4, n5 (started, ready)',
        '  per node: n1 +0/-2, n2 +0/-1, n3 +0/-1, n4 +2/-0, n5 +2/-0',
        'follow it: kvctl status --watch (gateway), or kvctl scale --nodes 5 --wait',
        '',
      ].join('\n'),
    );
    const shrinking: ScaleResult = {
      ...growing,
      targetNodes: ['n1', 'n2', 'n3'],
      drainingNodes: ['n4', 'n5'],
      addedNodes: [],
      moves: [{ partition: 0, from: 'n4', to: 'n1', state: 'waiting', keys: 0, bytes: 0 }],
      movesTotal: 1,
    };
    expect(formatPlan(shrinking, 3)).toContain('  draining: n4, n5 (stopped once they hold nothing)');
    expect(formatPlan({ ...idle, addedNodes: [] }, 3)).toBe(
      'nothing to do: the cluster already has 3 nodes\n',
    );
  });
});

describe('kvctl scale against a launcher', () => {
  let server: http.Server;
  let url: string;
  const posted: unknown[] = [];
  /** what GET /v1/admin/rebalance answers, in turn */
  let polls: RebalanceStatus[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      // A stand-in launcher says so, as the real one does (common/version.ts).
      res.setHeader(IDENTITY_HEADER, identity('launcher'));
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        if (req.method === 'POST' && req.url === '/v1/admin/scale') {
          const body = JSON.parse(Buffer.concat(chunks).toString()) as { nodes: number };
          posted.push({ contentType: req.headers['content-type'], body });
          if (body.nodes < 3) {
            res.statusCode = 400;
            res.end(
              JSON.stringify({ error: { code: 'bad_request', message: 'nodes must be from 3 to 64' } }),
            );
            return;
          }
          res.statusCode = 202;
          res.end(JSON.stringify(body.nodes === 3 ? { ...idle, addedNodes: [] } : growing));
        } else if (req.method === 'GET' && req.url === '/v1/admin/rebalance') {
          res.end(JSON.stringify(polls.shift() ?? idle));
        } else if (req.url === '/v1/cluster') {
          // A gateway's answer: what --admin-url pointing at the gateway would get.
          res.end(JSON.stringify({ cluster: 'c', epoch: 1 }));
        } else {
          res.statusCode = 404;
          res.end(JSON.stringify({ error: { code: 'not_found', message: 'no route' } }));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const run = async (argv: string[], tty = false, env: Record<string, string> = {}) => {
    const out: string[] = [];
    const err: string[] = [];
    let t = 1_000;
    const code = await runKvctl(
      argv,
      {
        stdout: { write: (s: string) => out.push(s), isTTY: tty },
        stderr: { write: (s: string) => err.push(s) },
        env: { KVSTORE_ADMIN_URL: url, ...env },
      },
      {
        sleep: async () => undefined,
        // every poll 2 s later
        now: () => (t += 2000),
      },
    );
    return { code, out: out.join(''), err: err.join('') };
  };

  it('posts the target as JSON and prints the plan', async () => {
    posted.length = 0;
    const r = await run(['scale', '--nodes', '5']);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(posted).toEqual([{ contentType: 'application/json', body: { nodes: 5 } }]);
    expect(r.out).toContain('scaling to 5 nodes (epoch 4): 4 partition moves planned');
    expect(r.out).toContain('added:    n4, n5');
  });

  it('--wait redraws a progress line until the rebalance is done', async () => {
    polls = [
      { ...growing, movesDone: 1, movesLeft: 3, keysStreamed: 100, bytesStreamed: 2048 },
      { ...growing, movesDone: 3, movesLeft: 1, keysStreamed: 300, bytesStreamed: 6144 },
      { ...idle, epoch: 9, targetNodes: growing.targetNodes, keysStreamed: 400, bytesStreamed: 8192 },
    ];
    const r = await run(['scale', '--nodes', '5', '--wait'], true);
    expect(r.code).toBe(0);
    const frames = r.out.split('\r\x1b[2K').slice(1);
    expect(frames).toHaveLength(3);
    expect(frames[0]).toMatch(/^\[#####-{15}\] 1\/4 partitions moved, 100 keys, 2\.0 KiB streamed, .*left$/);
    // 4 KiB more in the 2 s between the first and second poll.
    expect(frames[1]).toContain('3/4 partitions moved, 300 keys, 6.0 KiB streamed, 2.0 KiB/s');
    expect(frames[2]).toMatch(/^\[#{20}\] 4\/4 partitions moved, 400 keys, 8\.0 KiB streamed, .*done\n/);
    expect(r.out).toMatch(/rebalance finished in [\d.]+s: 5 nodes \(epoch 9\)\n$/);
  });

  it('--wait on a pipe prints one line per poll', async () => {
    polls = [{ ...growing, movesDone: 2, movesLeft: 2 }, idle];
    const r = await run(['scale', '--nodes', '5', '--wait']);
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('\x1b');
    expect(r.out.split('\n').filter((l) => l.includes('partitions moved'))).toHaveLength(2);
  });

  it('--wait on a terminal with NO_COLOR set writes no escapes', async () => {
    polls = [{ ...growing, movesDone: 2, movesLeft: 2 }, idle];
    const r = await run(['scale', '--nodes', '5', '--wait'], true, { NO_COLOR: '1' });
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('\x1b');
    expect(r.out.split('\n').filter((l) => l.includes('partitions moved'))).toHaveLength(2);
  });

  it('-o json --wait prints JSON lines: the plan, then each poll', async () => {
    polls = [{ ...growing, movesDone: 2, movesLeft: 2 }, idle];
    const r = await run(['scale', '--nodes', '5', '--wait', '-o', 'json'], true);
    expect(r.code).toBe(0);
    const lines = r.out
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as RebalanceStatus);
    expect(lines.map((l) => [l.active, l.movesDone])).toEqual([
      [true, 0],
      [true, 2],
      [false, 0],
    ]);
  });

  it('says a gateway is not the launcher, and how to reach it', async () => {
    const gateway = http.createServer((_req, res) => {
      res.setHeader(IDENTITY_HEADER, identity('gateway'));
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'not_found', message: 'no route' } }));
    });
    await new Promise<void>((r) => gateway.listen(0, '127.0.0.1', r));
    try {
      const at = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
      const r = await run(['scale', '--nodes', '5', '--admin-url', at]);
      expect(r.code).toBe(3);
      expect(r.err).toBe(
        `kvctl: not_kvstore: the server at ${at} is a kvstore gateway (x-kvstore: ${identity('gateway')}), not the kvstore launcher admin endpoint (npm start); check the URL (scale talks to the npm start launcher: --admin-url, or --url's port + 100)\n`,
      );
    } finally {
      await new Promise<void>((r) => gateway.close(() => r()));
    }
  });

  it('says so when there is nothing to do', async () => {
    const r = await run(['scale', '--nodes', '3', '--wait']);
    expect(r).toMatchObject({ code: 0, out: 'nothing to do: the cluster already has 3 nodes\n' });
  });

  it('exits 2 when the launcher refuses the target, 3 when it cannot be reached or is not a launcher', async () => {
    const refused = await run(['scale', '--nodes', '2']);
    expect(refused).toMatchObject({ code: 2, err: 'kvctl: bad_request: nodes must be from 3 to 64\n' });
    const down = await run(['scale', '--nodes', '5', '--admin-url', 'http://127.0.0.1:1']);
    expect(down.code).toBe(3);
    expect(down.err).toMatch(/^kvctl: unreachable: /);
    const wrong = await run(['scale', '--nodes', '5', '--admin-url', `${url}/elsewhere`]);
    expect(wrong).toMatchObject({ code: 3, err: 'kvctl: not_found: no route\n' });
  });

  it('is wired into kvctl, with its usage', async () => {
    const out: string[] = [];
    const io = {
      stdout: { write: (s: string | Uint8Array) => out.push(String(s)) },
      stderr: { write: (s: string) => out.push(s) },
      stdin: (async function* () {})(),
      env: { KVSTORE_ADMIN_URL: url },
    };
    expect(await runKvctl(['scale', '--help'], io)).toBe(0);
    expect(out.join('')).toContain('usage: kvctl scale --nodes N');
    out.length = 0;
    expect(await runKvctl(['help'], io)).toBe(0);
    expect(out.join('')).toMatch(/\n {2}scale --nodes N \[--wait\] +grow or shrink/);
    expect(await runKvctl(['scale'], io)).toBe(2);
  });
});
