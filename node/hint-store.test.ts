import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { decodeRecord, encodeRecord } from '../common/record';
import type { HintWrite } from '../common/rpc-protocol';
import { HintStore, type HintDropReason } from './hint-store';
import { Storage } from './storage';

/** The hint store on real LMDB in a temp directory, through the node's own Storage environment. */

const log = pino({ level: 'silent' });

function hint(t: string, key: string, value = 'v', p = 3): HintWrite {
  const r = encodeRecord({
    version: { wall: Date.now(), logical: 0, writer: 'gw' },
    value: Buffer.from(value),
    tombstone: false,
  });
  return { t, p, k: Buffer.from(key), r };
}

describe('HintStore (real LMDB on disk)', () => {
  let dir: string;
  let storage: Storage;
  const drops: { target: string; count: number; reason: HintDropReason }[] = [];

  const open = (maxBytes = 1024 * 1024): HintStore =>
    HintStore.open(storage, {
      maxBytes,
      log,
      onDropped: (target, count, reason) => drops.push({ target, count, reason }),
    });

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-hints-'));
    storage = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    drops.length = 0;
  });
  afterEach(async () => {
    await storage.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stores, lists per target in arrival order, and deletes', async () => {
    const s = open();
    expect(await s.add([hint('n2', 'a'), hint('n3', 'x'), hint('n2', 'b')])).toEqual([true, true, true]);
    expect(await s.add([hint('n2', 'c')])).toEqual([true]);
    expect(s.count()).toBe(4);
    expect(s.count('n2')).toBe(3);
    expect(s.targets().sort()).toEqual(['n2', 'n3']);

    const n2 = s.list('n2', 100);
    expect(n2.map((h) => h.k.toString())).toEqual(['a', 'b', 'c']);
    expect(n2.every((h) => h.target === 'n2' && h.p === 3)).toBe(true);
    expect(n2[0].seq).toBeLessThan(n2[1].seq);
    expect(s.list('n3', 100).map((h) => h.k.toString())).toEqual(['x']);
    expect(s.list('n2', 2).map((h) => h.k.toString())).toEqual(['a', 'b']);
    // A byte budget still yields at least one hint.
    expect(s.list('n2', 100, 1)).toHaveLength(1);
    // A target id that is a prefix of another does not see the other's hints.
    await s.add([hint('n22', 'other')]);
    expect(s.list('n2', 100)).toHaveLength(3);

    const bytesBefore = s.bytes();
    expect(await s.remove(n2.slice(0, 2).map((h) => h.id))).toBe(2);
    // Removing again is a no-op: a hint may already be gone (dropped or delivered).
    expect(await s.remove([n2[0].id])).toBe(0);
    expect(s.list('n2', 100).map((h) => h.k.toString())).toEqual(['c']);
    expect(s.count('n2')).toBe(1);
    expect(s.bytes()).toBe(bytesBefore - n2[0].bytes - n2[1].bytes);
    expect(drops).toEqual([]);
  });

  it('keeps hints, counts and bytes across close and reopen, and continues the sequence', async () => {
    const s = open();
    await s.add(Array.from({ length: 50 }, (_, i) => hint(i % 2 ? 'n2' : 'n3', `k${i}`, `value-${i}`)));
    const bytes = s.bytes();
    const lastSeq = s.list('n2', 100).at(-1)?.seq ?? 0;
    await storage.close();

    storage = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const again = open();
    expect(again.count()).toBe(50);
    expect(again.count('n2')).toBe(25);
    expect(again.bytes()).toBe(bytes);
    const n2 = again.list('n2', 100);
    expect(n2.map((h) => h.k.toString())).toEqual(Array.from({ length: 25 }, (_, i) => `k${2 * i + 1}`));
    expect(n2.map((h) => decodeRecord(h.r).value.toString())).toEqual(
      Array.from({ length: 25 }, (_, i) => `value-${2 * i + 1}`),
    );
    // New hints sort after the old ones: the sequence is rebuilt, not restarted.
    await again.add([hint('n2', 'late')]);
    const after = again.list('n2', 100);
    expect(after.at(-1)?.k.toString()).toBe('late');
    expect(after.at(-1)?.seq).toBeGreaterThan(lastSeq);
  });

  it('over its bound drops the globally oldest hints first, counts and reports them', async () => {
    // Every hint below has the same size: 5-byte keys, 100-byte values.
    const key = (prefix: string, i: number): string => `${prefix}${String(i).padStart(2, '0')}`;
    const big = (t: string, k: string): HintWrite => hint(t, k, 'x'.repeat(100));
    const first = open();
    await first.add([big('n2', key('prb', 0))]);
    const size = first.bytes();
    await first.remove(first.list('n2', 1).map((h) => h.id));
    expect(first.bytes()).toBe(0);

    const s = open(size * 10);
    // Interleave targets so "oldest" has to look across targets.
    for (let i = 0; i < 10; i++) {
      expect(await s.add([big(i % 3 === 0 ? 'n3' : 'n2', key('old', i))])).toEqual([true]);
    }
    expect(s.count()).toBe(10);
    expect(s.bytes()).toBe(size * 10);
    expect(drops).toEqual([]);

    // 4 more: the 4 oldest (old00 and old03 for n3, old01 and old02 for n2) go.
    await s.add(Array.from({ length: 4 }, (_, i) => big('n2', key('new', i))));
    expect(s.count()).toBe(10);
    expect(s.bytes()).toBe(size * 10);
    const keys = [...s.list('n2', 100), ...s.list('n3', 100)].map((h) => h.k.toString()).sort();
    expect(keys).toEqual(
      [4, 5, 6, 7, 8, 9]
        .map((i) => key('old', i))
        .concat([0, 1, 2, 3].map((i) => key('new', i)))
        .sort(),
    );
    const dropped = (t: string): number =>
      drops.filter((d) => d.target === t && d.reason === 'overflow').reduce((a, d) => a + d.count, 0);
    expect(dropped('n2')).toBe(2);
    expect(dropped('n3')).toBe(2);

    // A batch bigger than the whole bound keeps its newest items and says which did not survive.
    drops.length = 0;
    const res = await s.add(Array.from({ length: 12 }, (_, i) => big('n3', key('hug', i))));
    expect(res).toEqual([false, false, ...Array.from({ length: 10 }, () => true)]);
    expect(s.count()).toBe(10);
    expect(s.list('n3', 100).map((h) => h.k.toString())).toEqual(
      Array.from({ length: 10 }, (_, i) => key('hug', i + 2)),
    );
    expect(s.count('n2')).toBe(0);
    expect(s.targets()).toEqual(['n3']);
    // n2's 8 and n3's 2 older hints, then 2 of the batch itself.
    expect(dropped('n2')).toBe(8);
    expect(dropped('n3')).toBe(4);

    // One hint larger than the bound is refused outright, and reported.
    drops.length = 0;
    expect(await s.add([hint('n2', 'giant', 'x'.repeat(size * 10))])).toEqual([false]);
    expect(drops).toEqual([{ target: 'n2', count: 1, reason: 'too_large' }]);
    expect(s.count()).toBe(10);

    // Reopened with a smaller bound, the next write brings the store within it.
    await storage.close();
    storage = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const smaller = open(size * 3);
    expect(smaller.count()).toBe(10);
    await smaller.add([big('n3', key('aft', 0))]);
    expect(smaller.list('n3', 100).map((h) => h.k.toString())).toEqual([
      key('hug', 10),
      key('hug', 11),
      key('aft', 0),
    ]);
    expect(smaller.bytes()).toBe(size * 3);
  });

  it('drops every hint of a target that left, and refuses malformed hints before writing', async () => {
    const s = open();
    await s.add([hint('n2', 'a'), hint('n3', 'b'), hint('n2', 'c')]);
    expect(await s.dropTarget('n2', 'target_left')).toBe(2);
    expect(drops).toEqual([{ target: 'n2', count: 2, reason: 'target_left' }]);
    expect(s.count()).toBe(1);
    expect(s.targets()).toEqual(['n3']);

    await expect(s.add([hint('n2', 'ok'), { ...hint('n2', 'bad'), r: Buffer.from('junk') }])).rejects.toThrow(
      /record/,
    );
    await expect(s.add([hint('n2', 'bad-partition', 'v', 70_000)])).rejects.toThrow(/partition/);
    await expect(s.add([{ ...hint('n2', 'x'), k: Buffer.alloc(0) }])).rejects.toThrow(/key/);
    expect(s.count()).toBe(1);
  });
});
