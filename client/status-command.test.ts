import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ClusterInfo, RepairReport } from './client';
import {
  clusterStatus,
  formatBytes,
  formatStatus,
  isStatusCommand,
  parseStatusArgs,
  progressBar,
  runStatus,
  StatusUsageError,
} from './status-command';

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
    expect(isStatusCommand(['status'])).toBe(true);
    expect(isStatusCommand(['--url', 'http://h:1', 'status', '--watch'])).toBe(true);
    expect(isStatusCommand(['--token', 'status', 'get', 'k'])).toBe(false);
    expect(isStatusCommand(['get', 'status'])).toBe(false);
  });

  it('parses its options and refuses bad ones', () => {
    expect(parseStatusArgs(['status', '--watch', '--interval', '500ms'], {})).toMatchObject({
      watch: true,
      intervalMs: 500,
      url: 'http://127.0.0.1:3000',
    });
    expect(parseStatusArgs(['status'], { KVSTORE_URL: 'http://x:9' }).url).toBe('http://x:9');
    expect(() => parseStatusArgs(['status', '--interval', '2s'], {})).toThrow(StatusUsageError);
    expect(() => parseStatusArgs(['status', '--watch', '--interval', '10ms'], {})).toThrow(/100ms to 1h/);
    expect(() => parseStatusArgs(['status', 'extra'], {})).toThrow(/no arguments/);
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
    expect(text).toMatch(/moves in progress: 1\n {2}PARTITION {2}FROM {2}TO\n {2}2 {10}n3 {4}n2/);
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

    const run = async (argv: string[], opts: Parameters<typeof runStatus>[2] = {}) => {
      const out: string[] = [];
      const err: string[] = [];
      const code = await runStatus(
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
      expect(JSON.parse(r.out)).toMatchObject({ cluster: 'c1', belowQuorum: [2] });
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
