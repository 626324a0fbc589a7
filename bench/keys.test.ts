import { keyName, uniformPicker, zipfianPicker } from './keys';
import { HttpReplyParser, RespReplyParser } from './protocols';

test('key names have a fixed width', () => {
  expect(keyName(0)).toBe('key-0000000');
  expect(keyName(99_999)).toBe('key-0099999');
});

test('pickers stay in range; zipfian is skewed, uniform is not', () => {
  const n = 1000;
  const count = (pick: () => number): number[] => {
    const c = new Array<number>(n).fill(0);
    for (let i = 0; i < 100_000; i++) {
      const k = pick();
      expect(k >= 0 && k < n).toBe(true);
      c[k]++;
    }
    return c.sort((a, b) => b - a);
  };
  const top10 = (c: number[]): number => c.slice(0, 10).reduce((a, b) => a + b, 0) / 100_000;
  expect(top10(count(uniformPicker(n)))).toBeLessThan(0.03);
  expect(top10(count(zipfianPicker(n)))).toBeGreaterThan(0.2);
});

test('HTTP replies are complete only with their whole body, in any chunking', () => {
  const p = new HttpReplyParser((s) => (s === 200 ? 'ok' : 'error'));
  expect(p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab'))).toBeUndefined();
  expect(p.push(Buffer.from('cde'))).toBe('ok');
  const chunked = 'HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n';
  expect(p.push(Buffer.from(chunked.slice(0, 50)))).toBeUndefined();
  expect(p.push(Buffer.from(chunked.slice(50)))).toBe('error');
});

test('RESP replies: simple, bulk and nil', () => {
  const p = new RespReplyParser();
  expect(p.push(Buffer.from('+OK\r\n'))).toBe('ok');
  expect(p.push(Buffer.from('$3\r\nab'))).toBeUndefined();
  expect(p.push(Buffer.from('c\r\n'))).toBe('ok');
  expect(p.push(Buffer.from('$-1\r\n'))).toBe('miss');
});
