import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { UsageError } from '../../common/cli-options';
import type { RunOptions } from '../io';
import { argsOf, commandOf } from '../kvctl.fixtures';
import { runKvctl } from '../main';
import type { ClusterInfo, RepairReport } from '../../common/rest-api';
import {
  clusterStatus,
  formatBytes,
  formatStatus,
  formatRebalanceLine,
  formatAge,
  progressBar,
  rebalanceRates,
} from './status';
import { IDENTITY_HEADER, identity } from '../../common/version';

const info: ClusterInfo = {
  cluster: 'c1',
  epoch: 4,
  partitionCount: 4,
  replicationFactor: 3,
  nodes: [
    { id: 'n1', address: 'h:1', status: 'up', partitions: 4 },
    { id: 'n2', address: 'h:2', status: 'up', partitions: 4 },
    { id: 'n3', address: 'h:3', status: 'down', partitions: 3 },
    { id: 'n4', address: 'h:4', status: 'up', partitions: 1 },
  ],
  partitions: [
    ['n1', 'n2', 'n3'],
    ['n1', 'n2', 'n3'],
    ['n1', 'n3', 'n4'],
    ['n1', 'n2', 'n4'],
  ],
  moves: [],
};

const repairing = {
  running: true,
  partitionsTotal: 4,
  partitionsDone: 1,
  keysRepaired: 3,
  lastFullRepairAt: 0,
  refilling: true,
};
const idle = {
  running: false,
  partitionsTotal: 4,
  partitionsDone: 4,
  keysRepaired: 0,
  lastFullRepairAt: 1_000,
};

const report: RepairReport = {
  epoch: 4,
  nodes: [
    { id: 'n1', address: 'h:1', ready: true, keys: 10, bytes: 4096, hints: 2, repair: idle },
    { id: 'n2', address: 'h:2', ready: true, keys: 10, bytes: 4096, hints: 0, repair: idle },
    { id: 'n3', address: 'h:3', error: { code: 'rpc_unavailable', message: 'connect ECONNREFUSED' } },
    { id: 'n4', address: 'h:4', ready: false, keys: 1, repair: repairing },
  ],
};

describe('kvctl status', () => {
  it('is found wherever the global options put it', () => {
    expect(commandOf(['status'])).toBe('status');
    expect(commandOf(['--url', 'http://h:1', 'status', '--watch'])).toBe('status');
    expect(commandOf(['--token', 'status', 'get', 'k'])).toBe('get');
    expect(commandOf(['get', 'status'])).toBe('get');
  });

  it('parses its options and refuses bad ones', () => {
    expect(argsOf('status', ['status', '--watch', '--interval', '500ms'], {})).toMatchObject({
      watch: true,
      intervalMs: 500,
      url: 'http://127.0.0.1:3000',
    });
    expect(argsOf('status', ['status'], { KVSTORE_URL: 'http://x:9' }).url).toBe('http://x:9');
    expect(() => argsOf('status', ['status', '--interval', '2s'], {})).toThrow(UsageError);
    expect(() => argsOf('status', ['status', '--watch', '--interval', '10ms'], {})).toThrow(/100ms to 1h/);
    expect(() => argsOf('status', ['status', 'extra'], {})).toThrow(/too many arguments for 'status'/);
  });

  it('joins the map with the nodes: states, under-replicated and below-quorum partitions', () => {
    const s = clusterStatus(info, report);
    expect(s.nodes.map((n) => n.state)).toEqual(['up', 'up', 'down', 'refilling']);
    // n3 down and n4 refilling: every partition has a replica that does not serve.
    expect(s.underReplicated).toEqual([0, 1, 2, 3]);
    // Partition 2 is held by n1, n3, n4: only n1 serves, fewer than a quorum of 2.
    expect(s.belowQuorum).toEqual([2]);
  });

  it('draws a view a person can read', () => {
    const text = formatStatus(clusterStatus(info, report), 61_000);
    expect(text).toContain('cluster c1   epoch 4   UNAVAILABLE (below quorum)');
    expect(text).toMatch(/^n1\s+h:1\s+up\s+4\s+10\s+4\.0 KiB\s+2\s+idle\s+60s ago$/m);
    expect(text).toMatch(/^n3\s+h:3\s+down\s+3\s+-\s+-\s+-\s+-\s+-$/m);
    expect(text).toMatch(/^n4\s+h:4\s+refilling\s+1\s+1\s+-\s+-\s+\[#####-{15}\] 1\/4\s+never$/m);
    expect(text).toContain('  n3: rpc_unavailable: connect ECONNREFUSED');
    expect(text).toContain('partitions under-replicated: 4 of 4 (0, 1, 2, 3)');
    expect(text).toContain('below quorum (quorum reads and writes fail): 1 (2)');
    expect(text).toContain('moves in progress: none');
  });

  it('says healthy when every replica is up, and lists moves', () => {
    const up: ClusterInfo = {
      ...info,
      nodes: info.nodes.map((n) => ({ ...n, status: 'up' })),
      moves: [{ partition: 2, from: 'n3', to: 'n2' }],
    };
    const all: RepairReport = {
      epoch: 4,
      nodes: info.nodes.map((n) => ({ id: n.id, address: n.address, ready: true, keys: 1, repair: idle })),
    };
    const text = formatStatus(clusterStatus(up, all), 2_000);
    expect(text).toContain('healthy');
    expect(text).toContain('partitions: all replicas up');
    expect(text).toContain('moves in progress: 1 (no rebalance plan recorded in the map)');
    expect(text).toMatch(
      /^ {2}PARTITION {2}FROM {2}TO {2}STATE {4}KEYS {2}BYTES\n {2}2 {10}n3 {4}n2 {2}waiting {2}0 {5}0 B$/m,
    );
  });

  describe('a rebalance under way', () => {
    // n1, n2, n3, n4 moving to n1, n2, n4: n3 drains into n4; 8 of the plan's 32 moves are done.
    const T0 = 1_000_000;
    const growing: ClusterInfo = {
      ...info,
      epoch: 9,
      nodes: info.nodes.map((n) => ({ ...n, status: 'up' })),
      moves: [
        { partition: 0, from: 'n3', to: 'n4' },
        { partition: 1, from: 'n3', to: 'n4' },
        ...Array.from({ length: 22 }, (_, i) => ({ partition: 2 + (i % 2), from: 'n3', to: 'n4' })),
      ],
      rebalance: { targetNodes: ['n1', 'n2', 'n4'], movesTotal: 32, startedAt: T0 },
    };
    const reports: RepairReport = {
      epoch: 9,
      nodes: [
        { id: 'n1', address: 'h:1', ready: true, keys: 5, streamedKeys: 0, streamedBytes: 0 },
        { id: 'n2', address: 'h:2', ready: true, keys: 5, streamedKeys: 0, streamedBytes: 0 },
        { id: 'n3', address: 'h:3', ready: true, keys: 5 },
        {
          id: 'n4',
          address: 'h:4',
          ready: true,
          keys: 3,
          streamedKeys: 1000,
          streamedBytes: 4 * 1024 * 1024,
          incoming: [
            { partition: 0, from: 'n3', state: 'streaming', keys: 120, bytes: 2048 },
            { partition: 1, from: 'n3', state: 'ready', keys: 80, bytes: 1024, error: 'n3 slow' },
          ],
        },
      ],
    };

    it('joins the plan with what the receiving nodes report', () => {
      const r = clusterStatus(growing, reports).rebalance;
      expect(r).toMatchObject({
        active: true,
        movesTotal: 32,
        movesDone: 8,
        movesLeft: 24,
        keysInFlight: 200,
        bytesInFlight: 3072,
        keysStreamed: 1000,
        bytesStreamed: 4 * 1024 * 1024,
        drainingNodes: ['n3'],
        startedAt: T0,
      });
      expect(r.moves.slice(0, 3).map((m) => m.state)).toEqual(['streaming', 'ready', 'waiting']);
    });

    it('computes the rate between two refreshes, else since the start, and the time left from moves done', () => {
      const r = clusterStatus(growing, reports).rebalance;
      // 8 of 32 moves in 40 s: 24 left take 120 s; 4 MiB in 40 s is 102.4 KiB/s.
      expect(rebalanceRates(r, T0 + 40_000)).toEqual({
        bytesPerSecond: (4 * 1024 * 1024) / 40,
        etaMs: 120_000,
      });
      // Between two refreshes 2 s apart, 1 MiB more: 512 KiB/s.
      const prev = { at: T0 + 38_000, bytesStreamed: 3 * 1024 * 1024 };
      expect(rebalanceRates(r, T0 + 40_000, prev).bytesPerSecond).toBe(512 * 1024);
      // A node restarted (counters went down): back to the rate since the start.
      const restarted = { at: T0 + 38_000, bytesStreamed: 9 * 1024 * 1024 };
      expect(rebalanceRates(r, T0 + 40_000, restarted).bytesPerSecond).toBe((4 * 1024 * 1024) / 40);
      // Nothing moved yet: no estimate.
      expect(rebalanceRates({ ...r, movesDone: 0, movesLeft: 32 }, T0 + 40_000).etaMs).toBeUndefined();
      expect(formatAge(120_000)).toBe('2m');
    });

    it('draws a progress bar, rate, time left, draining nodes and the first 20 moves', () => {
      const text = formatStatus(clusterStatus(growing, reports), T0 + 40_000, {
        at: T0 + 38_000,
        bytesStreamed: 3 * 1024 * 1024,
      });
      expect(text).toContain('rebalance to 3 nodes (n1, n2, n4), started 40s ago');
      expect(text).toContain(
        '  [#####---------------] 8/32 partitions moved, 1000 keys, 4.0 MiB streamed, 512.0 KiB/s, about 2m left',
      );
      expect(text).toContain('  in flight: 24 moves, 200 keys, 3.0 KiB copied so far');
      expect(text).toContain('  draining: n3');
      expect(text).toMatch(/^n3\s+h:3\s+up, draining\s/m);
      expect(text).toMatch(/^ {2}0 +n3 +n4 +streaming +120 +2\.0 KiB$/m);
      expect(text).toMatch(/^ {2}1 +n3 +n4 +ready \(n3 slow\) +80 +1\.0 KiB$/m);
      expect(text).toContain('  ... and 4 more (--json lists all)');
      expect(text.split('\n').filter((l) => / n3 +n4 /.test(l))).toHaveLength(20);
    });

    it('says done when nothing is left', () => {
      const done = clusterStatus({ ...growing, moves: [], rebalance: undefined }, reports).rebalance;
      expect(done.active).toBe(false);
      expect(formatRebalanceLine(done, {})).toBe(
        '[####################] 0/0 partitions moved, 1000 keys, 4.0 MiB streamed, done',
      );
      expect(formatStatus(clusterStatus({ ...growing, moves: [] }, reports), T0)).toContain(
        'rebalance to 3 nodes',
      );
    });
  });

  it('formats sizes and bars', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3.0 GiB');
    expect(progressBar(0, 4)).toBe('[----]');
    expect(progressBar(1, 4)).toBe('[####]');
    expect(progressBar(Number.NaN, 4)).toBe('[----]');
  });

  describe('against a gateway', () => {
    let server: http.Server;
    let url: string;
    let down = false;
    beforeAll(async () => {
      server = http.createServer((req, res) => {
        // A stand-in gateway says so, as the real one does (common/version.ts).
        res.setHeader(IDENTITY_HEADER, identity('gateway'));
        res.setHeader('Content-Type', 'application/json');
        const nodes = down ? info.nodes : info.nodes.map((n) => ({ ...n, status: 'up' }));
        if (req.url === '/v1/cluster') res.end(JSON.stringify({ ...info, nodes }));
        else if (req.url === '/v1/admin/repair') {
          res.end(
            JSON.stringify(
              down
                ? report
                : {
                    epoch: 4,
                    nodes: info.nodes.map((n) => ({ id: n.id, address: n.address, ready: true, keys: 1 })),
                  },
            ),
          );
        } else {
          res.statusCode = 404;
          res.end('{"error":{"code":"not_found","message":"no"}}');
        }
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    const run = async (argv: string[], opts: RunOptions = {}) => {
      const out: string[] = [];
      const err: string[] = [];
      const code = await runKvctl(
        argv,
        {
          stdout: { write: (s: string) => out.push(s), isTTY: true },
          stderr: { write: (s: string) => err.push(s) },
          env: {},
        },
        opts,
      );
      return { code, out: out.join(''), err: err.join('') };
    };

    it('exits 0 when healthy and 1 when degraded', async () => {
      down = false;
      expect((await run(['status', '--url', url])).code).toBe(0);
      down = true;
      const r = await run(['status', '--url', url, '--json']);
      expect(r.code).toBe(1);
      expect(JSON.parse(r.out)).toMatchObject({
        cluster: 'c1',
        belowQuorum: [2],
        rebalance: { active: false, movesTotal: 0 },
      });
    });

    it('--watch redraws until stopped', async () => {
      const stop = new AbortController();
      let sleeps = 0;
      const r = await run(['status', '--url', url, '--watch', '--interval', '100ms'], {
        sleep: async () => {
          if (++sleeps === 2) stop.abort();
        },
        signal: stop.signal,
      });
      expect(r.out.split('\x1b[H\x1b[2J').length - 1).toBe(2);
    });

    it('exits 3 when the gateway cannot be reached', async () => {
      const r = await run(['status', '--url', 'http://127.0.0.1:1']);
      expect(r.code).toBe(3);
      expect(r.err).toMatch(/^kvctl: unreachable: /);
    });
  });
});
