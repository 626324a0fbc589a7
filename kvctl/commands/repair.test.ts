import { UsageError } from '../../common/cli-options';
import { argsOf, commandOf } from '../kvctl.fixtures';
import type { Env } from '../io';
import { runKvctl } from '../main';
import { formatProgressLine, formatRepairReport } from './repair';
import type { RepairReport } from '../../common/rest-api';

const env = {};

/** repair's arguments as kvctl's command line parses them. */
const parseRepairArgs = (argv: string[], env: Env) => argsOf('repair', argv, env);

describe('kvctl repair: command line', () => {
  it('is recognised wherever the global options are', () => {
    expect(commandOf(['repair'])).toBe('repair');
    expect(commandOf(['--url', 'http://h:1', 'repair', '--watch'])).toBe('repair');
    expect(commandOf(['--token', 'repair', 'get', 'k'])).toBe('get');
    expect(commandOf(['get', 'repair'])).toBe('get');
  });

  it('parses partitions (repeated or comma separated), --watch and --interval', () => {
    expect(parseRepairArgs(['repair'], env)).toEqual({
      url: 'http://127.0.0.1:3000',
      watch: false,
      intervalMs: 1000,
      json: false,
    });
    expect(
      parseRepairArgs(
        [
          '--url',
          'http://g:9',
          'repair',
          '--partition',
          '7',
          '--partition',
          '3,7',
          '--watch',
          '--interval',
          '250ms',
        ],
        env,
      ),
    ).toEqual({ url: 'http://g:9', partitions: [3, 7], watch: true, intervalMs: 250, json: false });
    expect(parseRepairArgs(['repair', '-o', 'json'], env).json).toBe(true);
    expect(parseRepairArgs(['repair'], { KVSTORE_URL: 'http://e:1', KVSTORE_TOKEN: 't' })).toEqual(
      expect.objectContaining({ url: 'http://e:1', token: 't' }),
    );
  });

  it.each([
    [['repair', '--partition', 'x'], /partition numbers/],
    [['repair', 'extra'], /too many arguments for 'repair'/],
    [['repair', '--interval', '1s'], /needs --watch/],
    [['repair', '--watch', '--interval', '10ms'], /duration/],
    [['repair', '--bogus'], /bogus/],
  ])('refuses %j', (argv, message) => {
    expect(() => parseRepairArgs(argv, env)).toThrow(UsageError);
    expect(() => parseRepairArgs(argv, env)).toThrow(message);
  });

  it('exits 2 on a usage error and 0 with the help, without contacting anyone', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = {
      stdout: { write: (s: string) => out.push(s) },
      stderr: { write: (s: string) => err.push(s) },
    };
    expect(await runKvctl(['repair', '--partition', '-1'], io)).toBe(2);
    expect(err.join('')).toMatch(/usage/);
    expect(await runKvctl(['repair', '--help'], io)).toBe(0);
    expect(out.join('')).toMatch(/usage: kvctl repair/);
  });

  it('exits 3 when the gateway cannot be reached', async () => {
    const err: string[] = [];
    const io = { stdout: { write: () => true }, stderr: { write: (s: string) => err.push(s) } };
    // Port 1 on loopback: nothing listens there.
    expect(await runKvctl(['--url', 'http://127.0.0.1:1', 'repair'], io)).toBe(3);
    expect(err.join('')).toMatch(/unreachable/);
  });
});

describe('kvctl repair: output', () => {
  const report: RepairReport = {
    epoch: 3,
    nodes: [
      {
        id: 'n1',
        address: '127.0.0.1:1',
        ready: true,
        keys: 10,
        repair: {
          running: true,
          partitionsTotal: 64,
          partitionsDone: 40,
          keysRepaired: 120,
          lastFullRepairAt: 0,
        },
      },
      {
        id: 'n2',
        address: '127.0.0.1:2',
        ready: false,
        repair: {
          running: false,
          partitionsTotal: 64,
          partitionsDone: 64,
          partitionsFailed: 2,
          keysRepaired: 0,
          lastFullRepairAt: 1_000_000,
          refilling: true,
        },
      },
      { id: 'n3', address: '127.0.0.1:3', error: { code: 'rpc_unavailable', message: 'down' } },
    ],
  };

  it('prints one progress line per poll', () => {
    expect(formatProgressLine(report, 3200)).toBe(
      '[3.2s] n1 40/64, 120 keys | n2 refilling done | n3 rpc_unavailable',
    );
  });

  it('prints a table of every node', () => {
    const text = formatRepairReport(report, 1_004_000);
    expect(text.split('\n')[0]).toMatch(
      /^NODE\s+READY\s+STATE\s+PARTITIONS\s+FAILED\s+KEYS REPAIRED\s+LAST FULL REPAIR$/,
    );
    expect(text).toMatch(/n1\s+yes\s+running\s+40\/64\s+0\s+120\s+never/);
    expect(text).toMatch(/n2\s+no\s+refilling\s+64\/64\s+2\s+0\s+1970-01-01T00:16:40.000Z \(4.0s ago\)/);
    expect(text).toMatch(/n3\s+-\s+error: rpc_unavailable/);
  });
});
