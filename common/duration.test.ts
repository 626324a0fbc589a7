import fc from 'fast-check';
import { UsageError } from './cli-options';
import { DURATION_UNITS, formatDuration, parseDuration, type DurationUnit } from './duration';

const flag = '--interval';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['2s', 2000],
    ['1m', 60_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['0.25m', 15_000],
    ['1.001s', 1001],
    ['90s', 90_000],
    ['24h', 86_400_000],
    ['1ms', 1],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text, { flag })).toBe(ms);
  });

  it.each([
    ['', 'not a number and a unit'],
    ['abc', 'not a number and a unit'],
    ['1.5x', 'not a number and a unit'],
    ['-1s', 'not a number and a unit'],
    ['+1s', 'not a number and a unit'],
    [' 1s', 'not a number and a unit'],
    ['1s ', 'not a number and a unit'],
    ['1 s', 'not a number and a unit'],
    ['1S', 'not a number and a unit'],
    ['1m30s', 'not a number and a unit'],
    ['.5s', 'not a number and a unit'],
    ['1.s', 'not a number and a unit'],
    ['1e3ms', 'not a number and a unit'],
    ['Infinitys', 'not a number and a unit'],
    ['60', 'a unit is required'],
    ['1.5', 'a unit is required'],
    ['0.5ms', 'not a whole number of milliseconds'],
    ['0s', 'out of range'],
    ['25h', 'out of range'],
  ])('refuses %j (%s), naming the flag and the range', (text, why) => {
    expect(() => parseDuration(text, { flag })).toThrow(
      new UsageError(
        `--interval takes a duration from 1ms to 24h, e.g. 500ms, 2s, 1m or 1h; got ${JSON.stringify(text)} (${why})`,
      ),
    );
  });

  it('keeps to the bounds it is given', () => {
    const bounds = { flag: '--timeout', minMs: 100, maxMs: 3_600_000 };
    expect(parseDuration('100ms', bounds)).toBe(100);
    expect(parseDuration('1h', bounds)).toBe(3_600_000);
    expect(() => parseDuration('99ms', bounds)).toThrow(
      /^--timeout takes a duration from 100ms to 1h.*out of range/,
    );
    expect(() => parseDuration('61m', bounds)).toThrow(/out of range/);
  });

  it('reads back what formatDuration writes, for every whole count of every unit', () => {
    const unit = fc.constantFrom(...(Object.keys(DURATION_UNITS) as DurationUnit[]));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10_000 }), unit, (n, u) => {
        const ms = n * DURATION_UNITS[u];
        expect(parseDuration(`${n}${u}`, { flag, maxMs: Number.MAX_SAFE_INTEGER })).toBe(ms);
        expect(parseDuration(formatDuration(ms), { flag, maxMs: Number.MAX_SAFE_INTEGER })).toBe(ms);
      }),
    );
  });

  it('either returns a whole number of ms within bounds or throws UsageError, for any text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 12 }), (text) => {
        let ms: number;
        try {
          ms = parseDuration(text, { flag, minMs: 50, maxMs: 60_000 });
        } catch (err) {
          expect(err).toBeInstanceOf(UsageError);
          return;
        }
        expect(Number.isInteger(ms) && ms >= 50 && ms <= 60_000).toBe(true);
      }),
    );
  });
});

describe('formatDuration', () => {
  it.each([
    [3_600_000, '1h'],
    [7_200_000, '2h'],
    [60_000, '1m'],
    [90_000, '90s'],
    [1000, '1s'],
    [1500, '1500ms'],
    [1, '1ms'],
    [0, '0ms'],
  ])('%d ms is %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });
});
