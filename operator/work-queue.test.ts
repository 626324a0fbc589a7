import pino from 'pino';
import { deferred, until } from '../common/metadata-store.fixtures';
import { WorkQueue } from './work-queue';

const log = pino({ level: 'silent' });

describe('WorkQueue', () => {
  test('runs one handler at a time per key, and once more for changes during a run', async () => {
    const runs: string[] = [];
    let active = 0;
    let maxActiveA = 0;
    const gate = deferred<void>();
    const q = new WorkQueue({
      log,
      handler: async (key) => {
        runs.push(key);
        if (key === 'a') {
          active++;
          maxActiveA = Math.max(maxActiveA, active);
          if (runs.filter((k) => k === 'a').length === 1) await gate.promise;
          active--;
        }
      },
    });
    q.add('a');
    q.add('b');
    await until(() => runs.includes('b'));
    // Three adds of a running key: one more run, never two at once.
    q.add('a');
    q.add('a');
    q.add('a');
    gate.resolve();
    await until(() => runs.filter((k) => k === 'a').length === 2);
    await new Promise((r) => setTimeout(r, 20));
    expect(runs.filter((k) => k === 'a')).toHaveLength(2);
    expect(maxActiveA).toBe(1);
    await q.stop();
  });

  test('coalesces adds of a waiting key and respects the concurrency', async () => {
    const gate = deferred<void>();
    const runs: string[] = [];
    const q = new WorkQueue({
      log,
      concurrency: 1,
      handler: async (key) => {
        runs.push(key);
        if (key === 'first') await gate.promise;
      },
    });
    q.add('first');
    q.add('x');
    q.add('x');
    q.add('y');
    expect(q.length).toBe(3);
    gate.resolve();
    await until(() => runs.length === 3);
    expect(runs).toEqual(['first', 'x', 'y']);
    await q.stop();
  });

  test('reports its depth: keys waiting for a worker, not those running or scheduled for later', async () => {
    const gate = deferred<void>();
    const runs: string[] = [];
    const depths: number[] = [];
    const q = new WorkQueue({
      log,
      concurrency: 1,
      onDepthChange: (depth) => depths.push(depth),
      handler: async (key) => {
        runs.push(key);
        if (key === 'first') await gate.promise;
      },
    });
    q.add('first');
    // Running, so not waiting: depth 0, nothing to report.
    expect(q.depth).toBe(0);
    q.add('x');
    q.add('y');
    q.add('x');
    // A change to the running key is one more run later, not a waiting key now.
    q.add('first');
    expect(q.depth).toBe(2);
    q.addAfter('later', 60_000);
    expect(q.depth).toBe(2);
    gate.resolve();
    await until(() => runs.length === 4);
    await until(() => q.depth === 0);
    expect(runs).toEqual(['first', 'x', 'y', 'first']);
    // When `first` ends it waits again (behind x and y) as x starts: the depth stays 2.
    expect(depths).toEqual([1, 2, 1, 0]);
    await q.stop();
    expect(depths.at(-1)).toBe(0);
  });

  test('retries a failing key with growing backoff, and resets it after a success', async () => {
    const times: number[] = [];
    let failuresLeft = 3;
    const q = new WorkQueue({
      log,
      backoffBaseMs: 20,
      handler: async () => {
        times.push(Date.now());
        if (failuresLeft-- > 0) throw new Error('boom');
      },
    });
    q.add('k');
    await until(() => times.length === 4, 5000);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(gaps[0]).toBeGreaterThanOrEqual(15);
    expect(gaps[1]).toBeGreaterThanOrEqual(35);
    expect(gaps[2]).toBeGreaterThanOrEqual(75);
    await new Promise((r) => setTimeout(r, 200));
    expect(times).toHaveLength(4);
    await q.stop();
  });

  test('requeueAfterMs brings the key back; stop() waits for the running handler and drops the rest', async () => {
    let runs = 0;
    const gate = deferred<void>();
    let finished = false;
    const q = new WorkQueue({
      log,
      handler: async (key) => {
        runs++;
        if (key === 'slow') {
          await gate.promise;
          finished = true;
          return;
        }
        return runs < 3 ? { requeueAfterMs: 10 } : undefined;
      },
    });
    q.add('again');
    await until(() => runs === 3);
    q.add('slow');
    q.addAfter('later', 50);
    const stopping = q.stop();
    gate.resolve();
    await stopping;
    expect(finished).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(runs).toBe(4);
    q.add('ignored');
    expect(q.length).toBe(0);
  });
});
