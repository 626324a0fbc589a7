import { TokenBucket } from './rate-limiter';

describe('TokenBucket', () => {
  it('lets a burst through, then holds the long-run rate', () => {
    let now = 0;
    const b = new TokenBucket(100, 50, () => now);
    expect(b.reserve(50)).toBe(0);
    // In debt by 10 tokens: 100 ms at 100/s.
    expect(b.reserve(10)).toBe(100);
    now += 100;
    expect(b.reserve(0)).toBe(0);
    // Idle time refills up to the burst, never beyond.
    now += 10_000;
    expect(b.reserve(50)).toBe(0);
    expect(b.reserve(1)).toBe(10);
  });

  it('waits out the debt, and stops waiting when aborted', async () => {
    const b = new TokenBucket(1000, 1);
    const started = Date.now();
    await b.take(1);
    await b.take(50);
    expect(Date.now() - started).toBeGreaterThanOrEqual(40);
    const stop = new AbortController();
    const slow = b.take(100_000, stop.signal);
    stop.abort();
    await slow;
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('refuses a rate that is not positive', () => {
    expect(() => new TokenBucket(0)).toThrow(RangeError);
  });
});
