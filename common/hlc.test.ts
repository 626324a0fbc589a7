import fc from 'fast-check';
import {
  ClockDriftError,
  compareVersions,
  formatVersion,
  HybridLogicalClock,
  parseVersion,
  type Version,
} from './hlc';

function clockAt(times: number[], writer = 'w1'): HybridLogicalClock {
  let i = 0;
  return new HybridLogicalClock(writer, () => times[Math.min(i++, times.length - 1)]);
}

describe('HybridLogicalClock', () => {
  it('follows physical time when it moves forward', () => {
    const c = clockAt([100, 200]);
    expect(c.now()).toEqual({ wall: 100, logical: 0, writer: 'w1' });
    expect(c.now()).toEqual({ wall: 200, logical: 0, writer: 'w1' });
  });

  it('counts logically within one millisecond and when physical time goes backwards', () => {
    const c = clockAt([100, 100, 90, 100, 101]);
    expect(c.now()).toMatchObject({ wall: 100, logical: 0 });
    expect(c.now()).toMatchObject({ wall: 100, logical: 1 });
    expect(c.now()).toMatchObject({ wall: 100, logical: 2 });
    expect(c.now()).toMatchObject({ wall: 100, logical: 3 });
    expect(c.now()).toMatchObject({ wall: 101, logical: 0 });
  });

  it('moves past a remote clock that is ahead, so causally later writes get higher versions', () => {
    const c = clockAt([100]);
    c.observe({ wall: 500, logical: 7 });
    expect(c.now()).toMatchObject({ wall: 500, logical: 9 });
  });

  it('refuses a remote clock implausibly far ahead', () => {
    const c = new HybridLogicalClock('w1', () => 1000, 60_000);
    expect(() => c.observe({ wall: 1000 + 60_001, logical: 0 })).toThrow(ClockDriftError);
    expect(() => c.observe({ wall: 1000 + 59_999, logical: 0 })).not.toThrow();
  });

  it('issues strictly increasing versions under any interleaving of reads of time and observed clocks', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('now' as const), pt: fc.integer({ min: 0, max: 1000 }) }),
            fc.record({
              kind: fc.constant('observe' as const),
              pt: fc.integer({ min: 0, max: 1000 }),
              wall: fc.integer({ min: 0, max: 1200 }),
              logical: fc.integer({ min: 0, max: 5 }),
            }),
          ),
          { maxLength: 200 },
        ),
        (events) => {
          let pt = 0;
          const c = new HybridLogicalClock('w1', () => pt, 10_000);
          let last: Version | undefined;
          let maxSeen = { wall: 0, logical: 0 };
          for (const e of events) {
            pt = e.pt;
            if (e.kind === 'observe') {
              c.observe({ wall: e.wall, logical: e.logical });
              if (e.wall > maxSeen.wall || (e.wall === maxSeen.wall && e.logical > maxSeen.logical)) {
                maxSeen = { wall: e.wall, logical: e.logical };
              }
            } else {
              const v = c.now();
              if (last) expect(compareVersions(v, last)).toBeGreaterThan(0);
              // every issued version is above every clock observed before it
              expect(v.wall > maxSeen.wall || (v.wall === maxSeen.wall && v.logical > maxSeen.logical)).toBe(
                true,
              );
              // and never behind physical time
              expect(v.wall).toBeGreaterThanOrEqual(pt);
              last = v;
            }
          }
        },
      ),
      { seed: 42, numRuns: 500 },
    );
  });

  it('rejects writer ids that could not be stored', () => {
    expect(() => new HybridLogicalClock('')).toThrow(/writer id/);
    expect(() => new HybridLogicalClock('has space')).toThrow(/writer id/);
    expect(() => new HybridLogicalClock('x'.repeat(65))).toThrow(/writer id/);
  });
});

describe('compareVersions', () => {
  const arb = fc.record({
    wall: fc.integer({ min: 0, max: 5 }),
    logical: fc.integer({ min: 0, max: 3 }),
    writer: fc.constantFrom('a', 'b', 'c'),
  });

  it('is a total order: antisymmetric, transitive, zero only for equal versions', () => {
    fc.assert(
      fc.property(arb, arb, arb, (a, b, c) => {
        expect(Math.sign(compareVersions(a, b)) + Math.sign(compareVersions(b, a))).toBe(0);
        expect(compareVersions(a, b) === 0).toBe(
          a.wall === b.wall && a.logical === b.logical && a.writer === b.writer,
        );
        if (compareVersions(a, b) <= 0 && compareVersions(b, c) <= 0)
          expect(compareVersions(a, c)).toBeLessThanOrEqual(0);
      }),
      { seed: 7, numRuns: 2000 },
    );
  });

  it('orders by wall, then logical, then writer', () => {
    expect(compareVersions({ wall: 2, logical: 0, writer: 'a' }, { wall: 1, logical: 9, writer: 'z' })).toBe(
      1,
    );
    expect(compareVersions({ wall: 1, logical: 1, writer: 'a' }, { wall: 1, logical: 0, writer: 'z' })).toBe(
      1,
    );
    expect(compareVersions({ wall: 1, logical: 0, writer: 'b' }, { wall: 1, logical: 0, writer: 'a' })).toBe(
      1,
    );
  });
});

describe('version text', () => {
  it('round-trips', () => {
    const v = { wall: 1732561234567, logical: 3, writer: 'gw-1.a' };
    expect(formatVersion(v)).toBe('1732561234567.3.gw-1.a');
    expect(parseVersion(formatVersion(v))).toEqual(v);
    expect(() => parseVersion('nope')).toThrow(/not a version/);
  });
});
