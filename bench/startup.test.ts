import { UsageError } from '../common/cli-options';
import { logLines, median, parseStartupArgs, sumKeyBytes, writeOrder } from './startup';

/*
 * The pure parts of `npm run bench:startup`. The bench itself spawns node
 * processes from dist/; its CI-sized run belongs with the e2e suites.
 */

test('options: defaults are the issue-9 target, 1 M keys of 100 B, 3 starts', () => {
  const o = parseStartupArgs([]);
  expect(o?.keys).toBe(1_000_000);
  expect(o?.valueBytes).toBe(100);
  expect(o?.runs).toBe(3);
  expect(o?.order).toBe('random');
  expect(o?.partitions).toBe(256);
  expect(parseStartupArgs(['--keys', '2000', '--runs', '1', '--order', 'sorted'])).toMatchObject({
    keys: 2000,
    runs: 1,
    order: 'sorted',
  });
  expect(() => parseStartupArgs(['--keys', '0'])).toThrow(UsageError);
  expect(() => parseStartupArgs(['--keys', '10000000'])).toThrow(UsageError);
  expect(() => parseStartupArgs(['--order', 'backwards'])).toThrow(UsageError);
});

test('the write order is a permutation, the same on every run', () => {
  const a = writeOrder(1000, 'random');
  expect([...a].sort((x, y) => x - y)).toEqual([...writeOrder(1000, 'sorted')]);
  expect([...a]).toEqual([...writeOrder(1000, 'random')]);
  expect([...a]).not.toEqual([...writeOrder(1000, 'sorted')]);
});

test('median of odd and even counts', () => {
  expect(median([5, 1, 3])).toBe(3);
  expect(median([4, 1, 3, 2])).toBe(2.5);
  expect(median([])).toBeNaN();
});

test('raw key bytes count the fixed-width key names', () => {
  expect(sumKeyBytes(3)).toBe(3 * 'key-0000000'.length);
});

test('log lines: the JSON lines with that msg, other lines skipped', () => {
  const text = [
    '{"level":"info","time":"2026-01-01T00:00:00.000Z","ms":1234,"msg":"hash trees built"}',
    'Error: something',
    '    at a stack frame (hash trees built)',
    '{"level":"info","msg":"node started"}',
  ].join('\n');
  const found = logLines(text, 'hash trees built');
  expect(found).toHaveLength(1);
  expect(found[0].ms).toBe(1234);
});
