import { UsageError } from '../common/cli-options';
import {
  BodyReplyParser,
  keysFor,
  ownedKey,
  parseByteRate,
  parseRebalanceArgs,
  parseValueTag,
  valueFor,
} from './rebalance';

test('rates take bytes, KiB/MiB/GiB suffixes, or the node default', () => {
  expect(parseByteRate('33554432')).toBe(32 * 1024 * 1024);
  expect(parseByteRate('32MiB')).toBe(32 * 1024 * 1024);
  expect(parseByteRate('1GiB')).toBe(1024 ** 3);
  expect(parseByteRate('64KiB')).toBe(64 * 1024);
  expect(parseByteRate('default')).toBeUndefined();
  for (const bad of ['32MB', '-1', '1.5MiB', '', '100']) expect(() => parseByteRate(bad)).toThrow(UsageError);
});

test('options: repeated and comma-separated limits make one run each', () => {
  const o = parseRebalanceArgs([
    '--max-bytes-per-second',
    'default,512MiB',
    '--max-bytes-per-second',
    '8MiB',
  ]);
  expect(o?.limits).toEqual([undefined, 512 * 1024 * 1024, 8 * 1024 * 1024]);
  expect(o?.gib).toBe(1);
  expect(o?.concurrency).toBe(8);
  expect(() => parseRebalanceArgs(['--gib', '0'])).toThrow(UsageError);
  expect(() => parseRebalanceArgs(['--value-size', '8'])).toThrow(UsageError);
});

test('1 GiB of 1 KiB values is 2^20 keys', () => {
  expect(keysFor(1, 1024)).toBe(1024 * 1024);
  expect(keysFor(0.5, 1024)).toBe(512 * 1024);
});

test('a value names its key and generation and has the asked size', () => {
  const v = valueFor(1234, 17, 1024);
  expect(v.length).toBe(1024);
  expect(v.toString('latin1', 0, 15)).toBe('key-0001234:17:');
  expect(parseValueTag(v)).toEqual({ key: 1234, gen: 17 });
  expect(parseValueTag(Buffer.from('something else'))).toBeUndefined();
  expect(valueFor(1, 0, 64).equals(valueFor(1, 0, 64))).toBe(true);
  expect(valueFor(1, 0, 64).equals(valueFor(1, 1, 64))).toBe(false);
});

test('each key has exactly one writing connection, and every connection writes in range', () => {
  const keyCount = 103;
  const concurrency = 8;
  const seen = new Set<number>();
  for (let c = 0; c < concurrency; c++) {
    for (const u of [0, 0.25, 0.5, 0.999999]) {
      const k = ownedKey(c, concurrency, keyCount, u);
      expect(k % concurrency).toBe(c);
      expect(k).toBeGreaterThanOrEqual(0);
      expect(k).toBeLessThan(keyCount);
    }
    for (let u = 0; u < 1; u += 0.001) seen.add(ownedKey(c, concurrency, keyCount, u));
  }
  expect(seen.size).toBe(keyCount);
});

test('the reply parser returns status and body, across chunk boundaries', () => {
  const p = new BodyReplyParser();
  const reply = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: x\r\nContent-Length: 5\r\n\r\nhello');
  expect(p.push(reply.subarray(0, 20))).toBeUndefined();
  expect(p.push(reply.subarray(20, 50))).toBeUndefined();
  const r = p.push(reply.subarray(50));
  expect(r?.status).toBe(200);
  expect(r?.body.toString()).toBe('hello');
  expect(p.push(Buffer.from('HTTP/1.1 204 No Content\r\n\r\n'))).toEqual({
    status: 204,
    body: Buffer.alloc(0),
  });
  expect(() => new BodyReplyParser().push(Buffer.from('HTTP/1.1 200 OK\r\n\r\nxx'))).toThrow();
});
