import { InFlightBudget } from './in-flight-budget';

jest.useFakeTimers();

describe('InFlightBudget', () => {
  it('takes what fits at once, and gives it back on release', () => {
    const b = new InFlightBudget({ maxBytes: 100, maxRequests: 10, queueMs: 50 });
    expect(b.acquire(60)).toBe(true);
    expect(b.acquire(40)).toBe(true);
    expect(b.held()).toEqual({ bytes: 100, requests: 2, waiting: 0 });
    b.release(60);
    b.release(40);
    expect(b.held()).toEqual({ bytes: 0, requests: 0, waiting: 0 });
  });

  it('lets a request wait for room up to queueMs, then sheds it', async () => {
    const b = new InFlightBudget({ maxBytes: 100, maxRequests: 10, queueMs: 50 });
    expect(b.acquire(80)).toBe(true);
    const waits = b.acquire(30) as Promise<boolean>;
    const shed = b.acquire(30) as Promise<boolean>;
    expect(b.held().waiting).toBe(2);
    b.release(80);
    await expect(waits).resolves.toBe(true);
    await expect(shed).resolves.toBe(true);
    const late = b.acquire(90) as Promise<boolean>;
    jest.advanceTimersByTime(50);
    await expect(late).resolves.toBe(false);
    expect(b.held()).toEqual({ bytes: 60, requests: 2, waiting: 0 });
  });

  it('serves the line in order: a large body at its head holds smaller ones back, so it is not starved', async () => {
    const b = new InFlightBudget({ maxBytes: 100, maxRequests: 10, queueMs: 1000 });
    expect(b.acquire(50)).toBe(true);
    const big = b.acquire(90) as Promise<boolean>;
    // Would fit now, but the big one is ahead in line.
    const small = b.acquire(10);
    expect(small).toBeInstanceOf(Promise);
    b.release(50);
    await expect(big).resolves.toBe(true);
    expect(b.held()).toMatchObject({ bytes: 100, requests: 2 });
    await expect(small).resolves.toBe(true);
  });

  it('bounds requests as well as bytes; with no queue, sheds at once', () => {
    const b = new InFlightBudget({ maxBytes: 1000, maxRequests: 2, queueMs: 0 });
    expect(b.acquire(1)).toBe(true);
    expect(b.acquire(1)).toBe(true);
    expect(b.acquire(1)).toBe(false);
  });

  it('takes a body larger than the whole budget when nothing else is held, never refusing it outright', async () => {
    const b = new InFlightBudget({ maxBytes: 100, maxRequests: 10, queueMs: 1000 });
    expect(b.acquire(500)).toBe(true);
    const next = b.acquire(1) as Promise<boolean>;
    b.release(500);
    await expect(next).resolves.toBe(true);
  });
});
