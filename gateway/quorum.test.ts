import { deferred } from '../common/metadata-store.fixtures';
import { gather } from './quorum';

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
