import { deferred } from '../common/metadata-store.fixtures';
import { gather, gatherStaged, type ExtraReason } from './quorum';

describe('gather', () => {
  it('settles after `need` successes without waiting for a replica that never answers', async () => {
    const calls = new Map(['a', 'b', 'c'].map((t) => [t, deferred<number>()]));
    const { quorum } = gather(['a', 'b', 'c'], 2, (t) => calls.get(t)!.promise);
    calls.get('a')!.resolve(1);
    calls.get('c')!.resolve(3);
    const o = await quorum;
    expect(o.ok.map(([t]) => t).sort()).toEqual(['a', 'c']);
    expect(o.failed).toEqual([]);
  });

  it('settles as soon as the level is out of reach', async () => {
    const calls = new Map(['a', 'b', 'c'].map((t) => [t, deferred<number>()]));
    const { quorum } = gather(['a', 'b', 'c'], 3, (t) => calls.get(t)!.promise);
    calls.get('b')!.reject(new Error('down'));
    const o = await quorum;
    expect(o.ok).toEqual([]);
    expect(o.failed.map(([t]) => t)).toEqual(['b']);
  });

  it('reports every outcome in `all`, and treats a throwing call as a failure', async () => {
    const { quorum, all } = gather(['a', 'b', 'c'], 2, (t) => {
      if (t === 'b') throw new Error('sync throw');
      return Promise.resolve(t.charCodeAt(0));
    });
    expect((await quorum).ok.length).toBe(2);
    const o = await all;
    expect(o.ok.length).toBe(2);
    expect(o.failed.map(([t]) => t)).toEqual(['b']);
  });
});

describe('gatherStaged', () => {
  const setup = (targets: string[]) => {
    const calls = new Map(targets.map((t) => [t, deferred<number>()]));
    const asked: string[] = [];
    const extra: ExtraReason[] = [];
    const call = (t: string) => {
      asked.push(t);
      return calls.get(t)!.promise;
    };
    return { calls, asked, extra, onExtra: (r: ExtraReason) => extra.push(r), call };
  };

  it('asks only `need` targets, in order, when they answer', async () => {
    const s = setup(['a', 'b', 'c']);
    const { quorum, all } = gatherStaged(['a', 'b', 'c'], 2, s.call, { onExtra: s.onExtra });
    expect(s.asked).toEqual(['a', 'b']);
    s.calls.get('b')!.resolve(2);
    s.calls.get('a')!.resolve(1);
    const o = await quorum;
    expect(o.ok.map(([t]) => t)).toEqual(['b', 'a']);
    expect((await all).ok.length).toBe(2);
    expect(s.asked).toEqual(['a', 'b']);
    expect(s.extra).toEqual([]);
  });

  it('asks the next target for each failure, and reports every asked target in `all`', async () => {
    const s = setup(['a', 'b', 'c']);
    const { quorum, all } = gatherStaged(['a', 'b', 'c'], 2, s.call, { onExtra: s.onExtra });
    s.calls.get('a')!.reject(new Error('down'));
    await Promise.resolve();
    await Promise.resolve();
    expect(s.asked).toEqual(['a', 'b', 'c']);
    s.calls.get('c')!.resolve(3);
    s.calls.get('b')!.resolve(2);
    const o = await quorum;
    expect(o.ok.map(([t]) => t).sort()).toEqual(['b', 'c']);
    expect(o.failed.map(([t]) => t)).toEqual(['a']);
    const a = await all;
    expect(a.failed.map(([t]) => t)).toEqual(['a']);
    expect(s.extra).toEqual(['failed']);
  });

  it('settles as soon as the level is out of reach, without asking targets that cannot help', async () => {
    const s = setup(['a', 'b', 'c']);
    const { quorum } = gatherStaged(['a', 'b', 'c'], 3, s.call);
    expect(s.asked).toEqual(['a', 'b', 'c']);
    s.calls.get('b')!.reject(new Error('down'));
    const o = await quorum;
    expect(o.ok).toEqual([]);
    expect(o.failed.map(([t]) => t)).toEqual(['b']);
  });

  it('fails when every target fails, after asking each once', async () => {
    const s = setup(['a', 'b', 'c']);
    const { quorum, all } = gatherStaged(['a', 'b', 'c'], 1, s.call);
    s.calls.get('a')!.reject(new Error('x'));
    await new Promise((r) => setImmediate(r));
    s.calls.get('b')!.reject(new Error('y'));
    await new Promise((r) => setImmediate(r));
    s.calls.get('c')!.reject(new Error('z'));
    const o = await quorum;
    expect(o.ok).toEqual([]);
    expect(o.failed.map(([t]) => t)).toEqual(['a', 'b', 'c']);
    expect((await all).failed.length).toBe(3);
    expect(s.asked).toEqual(['a', 'b', 'c']);
  });

  it('hedges: asks one more target each interval while the level is short', async () => {
    jest.useFakeTimers();
    try {
      const s = setup(['a', 'b', 'c']);
      const { quorum, all } = gatherStaged(['a', 'b', 'c'], 1, s.call, {
        hedgeAfterMs: 50,
        onExtra: s.onExtra,
      });
      expect(s.asked).toEqual(['a']);
      jest.advanceTimersByTime(49);
      expect(s.asked).toEqual(['a']);
      jest.advanceTimersByTime(1);
      expect(s.asked).toEqual(['a', 'b']);
      s.calls.get('b')!.resolve(2);
      const o = await quorum;
      expect(o.ok).toEqual([['b', 2]]);
      jest.advanceTimersByTime(500);
      expect(s.asked).toEqual(['a', 'b']);
      expect(s.extra).toEqual(['slow']);
      // `all` waits for the stalled target it asked.
      let allDone = false;
      void all.then(() => (allDone = true));
      await Promise.resolve();
      expect(allDone).toBe(false);
      s.calls.get('a')!.resolve(1);
      expect((await all).ok.map(([t]) => t)).toEqual(['b', 'a']);
    } finally {
      jest.useRealTimers();
    }
  });

  it('with no targets, settles at once with nothing', async () => {
    const { quorum, all } = gatherStaged([], 0, () => Promise.resolve(1));
    expect(await quorum).toEqual({ ok: [], failed: [] });
    expect(await all).toEqual({ ok: [], failed: [] });
  });
});
