import fc from 'fast-check';
import { admits, assessDisk, RELEASE_MARGIN, type DiskSample, type DiskWatermark } from './disk-space';

const MiB = 1024 * 1024;
const W: DiskWatermark = { minFreeBytes: 8 * MiB, minFreeRatio: 0.05, quotaBytes: 0 };
const sample = (s: Partial<DiskSample>): DiskSample => ({
  fsSizeBytes: 1000 * MiB,
  fsFreeBytes: 500 * MiB,
  fileBytes: 100 * MiB,
  usedBytes: 100 * MiB,
  ...s,
});

describe('assessDisk', () => {
  it('counts LMDB pages it can reuse as room, not only the free bytes of the filesystem', () => {
    const s = assessDisk(
      sample({ fsFreeBytes: 10 * MiB, fileBytes: 300 * MiB, usedBytes: 100 * MiB }),
      W,
      false,
    );
    expect(s.availableBytes).toBe(210 * MiB);
    expect(s.pressure).toBe(false);
  });

  it('the watermark is the larger of the bytes and the share of the filesystem', () => {
    expect(assessDisk(sample({}), W, false).thresholdBytes).toBe(50 * MiB);
    expect(assessDisk(sample({ fsSizeBytes: 40 * MiB }), W, false).thresholdBytes).toBe(8 * MiB);
  });

  it('is under pressure below the watermark, and leaves it only a margin above (no flapping)', () => {
    const below = assessDisk(sample({ fsFreeBytes: 49 * MiB }), W, false);
    expect(below.pressure).toBe(true);
    expect(below.reason).toMatch(/49\.0 MiB free on the data volume, under the watermark of 50\.0 MiB/);
    // Just above the watermark: out when it was not in, still in when it was.
    const just = sample({ fsFreeBytes: 51 * MiB });
    expect(assessDisk(just, W, false).pressure).toBe(false);
    expect(assessDisk(just, W, true).pressure).toBe(true);
    expect(assessDisk(sample({ fsFreeBytes: 50 * MiB * (1 + RELEASE_MARGIN) + 1 }), W, true).pressure).toBe(
      false,
    );
  });

  it('a quota on the data (etcd-style) puts it under pressure however free the disk is', () => {
    const q = { ...W, quotaBytes: 100 * MiB };
    expect(assessDisk(sample({ usedBytes: 100 * MiB, fileBytes: 100 * MiB }), q, false)).toMatchObject({
      pressure: true,
      reason: 'the data uses 100.0 MiB, at its quota of 100.0 MiB',
    });
    expect(assessDisk(sample({ usedBytes: 99 * MiB, fileBytes: 99 * MiB }), q, false).pressure).toBe(false);
  });
});

describe('admits', () => {
  it('refuses a growing write that would pass the watermark; lets deletes through down to the floor', () => {
    const s = assessDisk(sample({ fsFreeBytes: 60 * MiB }), W, false);
    expect(admits(s, 0, 4 * MiB, false)).toBe(true);
    expect(admits(s, 0, 6 * MiB, false)).toBe(false);
    // What was admitted since the sample counts too.
    expect(admits(s, 9 * MiB, 1 * MiB, false)).toBe(false);
    const full = assessDisk(sample({ fsFreeBytes: 20 * MiB }), W, false);
    expect(full.pressure).toBe(true);
    expect(admits(full, 0, 1, false)).toBe(false);
    expect(admits(full, 0, 1 * MiB, true)).toBe(true);
    expect(admits(full, 0, 4 * MiB, true)).toBe(false);
  });

  it('for any state: admits nothing growing under pressure, and nothing at all that crosses the floor', () => {
    fc.assert(
      fc.property(
        fc.record({
          fsSizeBytes: fc.integer({ min: MiB, max: 10_000 * MiB }),
          fsFreeBytes: fc.integer({ min: 0, max: 10_000 * MiB }),
          fileBytes: fc.integer({ min: 0, max: 1000 * MiB }),
          usedBytes: fc.integer({ min: 0, max: 1000 * MiB }),
        }),
        fc.boolean(),
        fc.integer({ min: 0, max: 100 * MiB }),
        fc.integer({ min: 0, max: 100 * MiB }),
        fc.boolean(),
        (s, was, spent, bytes, shrinking) => {
          const state = assessDisk(s, W, was);
          const ok = admits(state, spent, bytes, shrinking);
          if (state.pressure && !shrinking) expect(ok).toBe(false);
          if (ok) expect(state.availableBytes - spent - 2 * bytes).toBeGreaterThanOrEqual(state.floorBytes);
          if (ok && !shrinking)
            expect(state.availableBytes - spent - 2 * bytes).toBeGreaterThanOrEqual(state.thresholdBytes);
        },
      ),
    );
  });
});
