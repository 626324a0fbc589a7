import { inRange, prefixEnd, prefixRange, rangeWithin, type KeyRange } from './key-range';

const b = (...bytes: number[]): Buffer => Buffer.from(bytes);
const s = (text: string): Buffer => Buffer.from(text);

describe('prefixEnd', () => {
  test.each([
    [b(0x61), b(0x62)],
    [b(0x61, 0x62), b(0x61, 0x63)],
    [b(0x61, 0xff), b(0x62)],
    [b(0x61, 0xff, 0xff), b(0x62)],
    [b(0x00), b(0x01)],
    [b(0xfe, 0xff), b(0xff)],
  ])('%j -> %j', (prefix, end) => {
    expect(prefixEnd(prefix)).toEqual(end);
  });

  test('no end for the empty prefix or one of 0xff bytes alone', () => {
    expect(prefixEnd(b())).toBeUndefined();
    expect(prefixEnd(b(0xff, 0xff))).toBeUndefined();
  });

  test('does not change its argument', () => {
    const p = s('ab');
    prefixEnd(p);
    expect(p).toEqual(s('ab'));
  });

  // Exhaustive over every key of up to two bytes from a small alphabet: a key is in the prefix's range
  // exactly when it starts with the prefix.
  test('the range of a prefix holds exactly the keys that start with it', () => {
    const alphabet = [0x00, 0x01, 0x7f, 0xfe, 0xff];
    const keys: Buffer[] = [b()];
    for (const x of alphabet) keys.push(b(x));
    for (const x of alphabet) for (const y of alphabet) keys.push(b(x, y));
    const threeByte = keys
      .filter((k) => k.length === 2)
      .flatMap((k) => alphabet.map((z) => Buffer.concat([k, b(z)])));
    const all = [...keys, ...threeByte].filter((k) => k.length > 0);
    for (const prefix of keys) {
      const range = prefixRange(prefix);
      for (const key of all) {
        const starts = key.length >= prefix.length && key.subarray(0, prefix.length).equals(prefix);
        expect([prefix, key, inRange(range, key)]).toEqual([prefix, key, starts]);
      }
    }
  });
});

describe('rangeWithin', () => {
  const users: KeyRange = prefixRange(s('users/'));
  test.each<[string, KeyRange, boolean]>([
    ['the same range', users, true],
    ['a longer prefix', prefixRange(s('users/a')), true],
    ['start and end inside', { start: s('users/a'), end: s('users/m') }, true],
    ['no end', { start: s('users/a') }, false],
    ['end past the prefix', { start: s('users/a'), end: s('usert') }, false],
    ['start before the prefix', { start: s('user'), end: s('users/b') }, false],
    ['a shorter prefix', prefixRange(s('user')), false],
    ['everything', { start: b() }, false],
    ['starting at the end', { start: s('users0'), end: s('users0') }, false],
  ])('%s', (_name, inner, within) => {
    expect(rangeWithin(inner, users)).toBe(within);
  });

  test('everything lies within the whole key space', () => {
    expect(rangeWithin({ start: b() }, { start: b() })).toBe(true);
    expect(rangeWithin({ start: s('a'), end: s('b') }, { start: b() })).toBe(true);
  });
});
