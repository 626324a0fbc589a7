import fc from 'fast-check';
import { TransactionBudget } from './transaction-budget';

describe('TransactionBudget', () => {
  it('admits batches up to its size, then in arrival order as room comes back', async () => {
    const b = new TransactionBudget(10);
    expect(b.tryAcquire(6)).toBe(true);
    expect(b.tryAcquire(5)).toBe(false);
    const order: string[] = [];
    const five = b.acquire(5).then(() => order.push('five'));
    // Fits, but someone waits before it: no overtaking.
    const one = b.acquire(1).then(() => order.push('one'));
    expect(b.tryAcquire(1)).toBe(false);
    await Promise.resolve();
    expect(order).toEqual([]);
    b.release(6);
    await Promise.all([five, one]);
    expect(order).toEqual(['five', 'one']);
    expect(b.used).toBe(6);
  });

  it('lets a batch larger than the budget through alone rather than never', async () => {
    const b = new TransactionBudget(10);
    expect(b.tryAcquire(3)).toBe(true);
    let big = false;
    const p = b.acquire(25).then(() => (big = true));
    await Promise.resolve();
    expect(big).toBe(false);
    b.release(3);
    await p;
    expect(b.used).toBe(25);
  });

  it('never holds more than its size unless one batch alone is larger, and serves every waiter', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 40 }),
        async (max, sizes) => {
          const b = new TransactionBudget(max);
          const held: number[] = [];
          let served = 0;
          const all = sizes.map((n) =>
            b.acquire(n).then(() => {
              held.push(n);
              served++;
              const total = held.reduce((x, y) => x + y, 0);
              expect(total <= max || held.length === 1).toBe(true);
            }),
          );
          // Release in the order taken, one per turn, until everyone was served.
          while (served < sizes.length || held.length > 0) {
            await new Promise((r) => setImmediate(r));
            const n = held.shift();
            if (n !== undefined) b.release(n);
          }
          await Promise.all(all);
          expect(b.used).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });
});
