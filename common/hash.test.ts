import { keyHash, partitionOf } from './hash';

/*
 * These values are part of the on-disk layout: a key's partition decides which
 * range of which node's database holds it. If this test fails, stored data would
 * be stranded; do not update the numbers, fix the code.
 */
describe('key hashing (frozen)', () => {
  it('is XXH64 with seed 0 (reference vectors)', () => {
    expect(keyHash(Buffer.from('')).toString(16)).toBe('ef46db3751d8e999');
    expect(keyHash(Buffer.from('a')).toString(16)).toBe('d24ec4f1a98c6e5b');
  });

  it.each([
    ['hello', 163, 419],
    ['user/42', 103, 871],
    ['ключ', 156, 412],
    ['🔑', 1, 769],
  ])('pins the partition of %j', (key, p256, p1024) => {
    expect(partitionOf(Buffer.from(key, 'utf8'), 256)).toBe(p256);
    expect(partitionOf(Buffer.from(key, 'utf8'), 1024)).toBe(p1024);
  });

  it('spreads keys evenly over partitions', () => {
    const counts = new Array<number>(256).fill(0);
    for (let i = 0; i < 256_00; i++) counts[partitionOf(Buffer.from(`key-${i}`), 256)]++;
    // 100 expected per partition; a uniform hash stays well within this band
    expect(Math.min(...counts)).toBeGreaterThan(50);
    expect(Math.max(...counts)).toBeLessThan(150);
  });

  it('rejects a nonsensical partition count', () => {
    expect(() => partitionOf(Buffer.from('a'), 0)).toThrow(RangeError);
    expect(() => partitionOf(Buffer.from('a'), 1.5)).toThrow(RangeError);
  });
});
