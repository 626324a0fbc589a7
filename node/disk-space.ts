/**
 * Disk space as the node's write path sees it (docs/design.md, "Disk space"). LMDB's file never
 * shrinks: pages freed by deletes and overwrites are reused by later writes, so the room a write
 * has is the filesystem's free bytes plus the file's reusable pages. Below the watermark the node
 * refuses writes that grow the data before LMDB meets ENOSPC mid-commit, and keeps serving reads.
 */

/** What the node measures: one statfs of the data directory's filesystem and LMDB's page counts. */
export interface DiskSample {
  readonly fsSizeBytes: number;
  /** free to an unprivileged writer (statfs bavail) */
  readonly fsFreeBytes: number;
  /** the LMDB file's size on disk */
  readonly fileBytes: number;
  /** bytes of the file's pages in use by some database (the rest is reusable) */
  readonly usedBytes: number;
}

export interface DiskWatermark {
  /** refuse growing writes with less than this much room */
  readonly minFreeBytes: number;
  /** ... or with less than this fraction of the filesystem's size; the larger of the two applies */
  readonly minFreeRatio: number;
  /** refuse growing writes once the data uses this many bytes (etcd's backend quota); 0: no quota */
  readonly quotaBytes: number;
}

export const DEFAULT_DISK_WATERMARK: DiskWatermark = {
  minFreeBytes: 64 * 1024 * 1024,
  minFreeRatio: 0.05,
  quotaBytes: 0,
};

/** Pressure ends only this far above the watermark, so a node does not flap around it. */
export const RELEASE_MARGIN = 0.2;

export interface DiskState {
  /** room for new data: free filesystem bytes plus LMDB's reusable pages */
  readonly availableBytes: number;
  /** the watermark in bytes for this filesystem */
  readonly thresholdBytes: number;
  readonly usedBytes: number;
  /** growing writes are refused; deletes still go through above `floorBytes` */
  readonly pressure: boolean;
  /** why, when under pressure */
  readonly reason?: string;
  /** below this much room even deletes are refused: LMDB must never reach ENOSPC mid-commit */
  readonly floorBytes: number;
}

/** The state for `sample`, given whether the node was under pressure before (hysteresis). */
export function assessDisk(sample: DiskSample, w: DiskWatermark, wasPressured: boolean): DiskState {
  const reusable = Math.max(0, sample.fileBytes - sample.usedBytes);
  const availableBytes = Math.max(0, sample.fsFreeBytes) + reusable;
  const thresholdBytes = Math.max(w.minFreeBytes, Math.ceil(w.minFreeRatio * sample.fsSizeBytes));
  const floorBytes = Math.ceil(thresholdBytes / 4);
  const release = wasPressured ? 1 + RELEASE_MARGIN : 1;
  const base = { availableBytes, thresholdBytes, usedBytes: sample.usedBytes, floorBytes };
  if (availableBytes < thresholdBytes * release) {
    return {
      ...base,
      pressure: true,
      reason: `${mib(availableBytes)} free on the data volume, under the watermark of ${mib(thresholdBytes)}`,
    };
  }
  if (w.quotaBytes > 0 && sample.usedBytes >= w.quotaBytes * (wasPressured ? 1 - RELEASE_MARGIN / 4 : 1)) {
    return {
      ...base,
      pressure: true,
      reason: `the data uses ${mib(sample.usedBytes)}, at its quota of ${mib(w.quotaBytes)}`,
    };
  }
  return { ...base, pressure: false };
}

/**
 * Whether a write of `bytes` may go in now, with `spent` bytes admitted since the state was
 * measured: growing writes need the room to stay above the watermark, deletes (`shrinking`) above
 * the floor. LMDB copies every page a transaction touches, so the write itself needs about twice
 * its bytes until it commits; what stays is about its bytes.
 */
export function admits(state: DiskState, spent: number, bytes: number, shrinking: boolean): boolean {
  const after = state.availableBytes - spent - 2 * bytes;
  if (shrinking) return after >= state.floorBytes;
  return !state.pressure && after >= state.thresholdBytes;
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}
