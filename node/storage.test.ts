import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Storage, storageKey } from './storage';
import type { KvRecord } from '../common/record';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kv-storage-'));
}

const rec = (wall: number, value: string, writer = 'g1', tombstone = false): KvRecord => ({
  version: { wall, logical: 0, writer },
  value: Buffer.from(value),
  tombstone,
});

describe('Storage (real LMDB on disk)', () => {
  let dir: string;
  beforeEach(() => {
    dir = tmpDir();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('stores, reads back and keeps the higher version only', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const key = Buffer.from('user/42');
    expect(await s.applyRecord(7, key, rec(100, 'a'))).toBe(true);
    expect(await s.applyRecord(7, key, rec(90, 'older'))).toBe(false);
    expect(await s.applyRecord(7, key, rec(100, 'a'))).toBe(false);
    expect(await s.applyRecord(7, key, rec(110, '', 'g1', true))).toBe(true);
    const got = s.get(7, key);
    expect(got?.tombstone).toBe(true);
    expect(got?.version.wall).toBe(110);
    expect(s.get(8, key)).toBeUndefined();
    await s.close();
  });

  it('keeps every acknowledged write across close and reopen', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        s.applyRecord(i % 16, Buffer.from(`k${i}`), rec(1000 + i, `v${i}`)),
      ),
    );
    expect(s.stats().keys).toBe(500);
    await s.close();
    const again = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    for (let i = 0; i < 500; i++) {
      expect(again.get(i % 16, Buffer.from(`k${i}`))?.value.toString()).toBe(`v${i}`);
    }
    await again.close();
  });

  it('applies a mixed batch item by item under the merge rule', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    await s.applyRecord(1, Buffer.from('a'), rec(50, 'a50'));
    const { encodeRecord } = await import('../common/record');
    const res = await s.apply([
      { partition: 1, key: Buffer.from('a'), record: encodeRecord(rec(40, 'a40')) },
      { partition: 1, key: Buffer.from('b'), record: encodeRecord(rec(40, 'b40')) },
      { partition: 1, key: Buffer.from('a'), record: encodeRecord(rec(60, 'a60')) },
    ]);
    expect(res).toEqual([false, true, true]);
    expect(s.get(1, Buffer.from('a'))?.value.toString()).toBe('a60');
    await s.close();
  });

  it('refuses a data directory that belongs to another node', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    await s.close();
    expect(() => Storage.open(dir, { nodeId: 'n2', cluster: 'c' })).toThrow(/belongs to node n1/);
  });

  it('accepts the largest key the gateway allows and rejects empty keys', async () => {
    const s = Storage.open(dir, { nodeId: 'n1', cluster: 'c' });
    const big = Buffer.alloc(1976, 0x61);
    expect(await s.applyRecord(3, big, rec(1, 'x'))).toBe(true);
    expect(s.get(3, big)?.value.toString()).toBe('x');
    expect(() => storageKey(3, Buffer.alloc(0))).toThrow(/cannot be stored/);
    expect(() => storageKey(70000, Buffer.from('a'))).toThrow(/out of range/);
    await s.close();
  });
});
