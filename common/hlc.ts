import { KvError } from './errors';

/**
 * A hybrid logical clock timestamp plus the id of the writer that issued it.
 * Ordering: wall time, then logical counter, then writer id, so two distinct
 * writers can never produce equal versions and last-writer-wins is total.
 */
export interface Version {
  readonly wall: number;
  readonly logical: number;
  readonly writer: string;
}

/** The part of a version that travels on every message to keep clocks causally merged. */
export interface ClockStamp {
  readonly wall: number;
  readonly logical: number;
}

export const MAX_LOGICAL = 0xffffffff;
export const MAX_WRITER_ID_BYTES = 64;

export function compareVersions(a: Version, b: Version): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1;
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1;
  if (a.writer === b.writer) return 0;
  return a.writer < b.writer ? -1 : 1;
}

/** Text form used in the public API (`version`, `ETag`): `<wall>.<logical>.<writer>`. */
export function formatVersion(v: Version): string {
  return `${v.wall}.${v.logical}.${v.writer}`;
}

export function parseVersion(text: string): Version {
  const m = /^(\d{1,16})\.(\d{1,10})\.(.+)$/.exec(text);
  if (!m) throw new KvError('bad_version', `not a version: ${JSON.stringify(text)}`);
  return { wall: Number(m[1]), logical: Number(m[2]), writer: m[3] };
}

export class ClockDriftError extends KvError {
  constructor(remoteWall: number, localWall: number, maxDriftMs: number) {
    super(
      'clock_drift',
      `remote clock is ${remoteWall - localWall} ms ahead of ours, more than the ${maxDriftMs} ms allowed`,
      { remoteWall, localWall, maxDriftMs },
    );
  }
}

export function validateWriterId(id: string): void {
  if (id.length === 0 || Buffer.byteLength(id) > MAX_WRITER_ID_BYTES || !/^[\x21-\x7e]+$/.test(id)) {
    throw new KvError('bad_writer_id', `writer id must be 1-${MAX_WRITER_ID_BYTES} printable ASCII bytes`, {
      id,
    });
  }
}

/**
 * Hybrid logical clock (Kulkarni et al.): physical milliseconds plus a logical
 * counter that orders events within one millisecond and across skewed clocks.
 * Pure apart from the injected time source, so it is tested exhaustively.
 */
export class HybridLogicalClock {
  private wall = 0;
  private logical = 0;

  constructor(
    readonly writer: string,
    private readonly physicalNow: () => number = Date.now,
    private readonly maxDriftMs = 5 * 60_000,
  ) {
    validateWriterId(writer);
  }

  /** A new version, strictly greater than every version this clock issued or observed. */
  now(): Version {
    const pt = this.physicalNow();
    if (pt > this.wall) {
      this.wall = pt;
      this.logical = 0;
    } else {
      this.tick();
    }
    return { wall: this.wall, logical: this.logical, writer: this.writer };
  }

  stamp(): ClockStamp {
    return { wall: this.wall, logical: this.logical };
  }

  /** Merges a clock seen on a message. Throws ClockDriftError for a peer implausibly far ahead. */
  observe(remote: ClockStamp): void {
    const pt = this.physicalNow();
    if (remote.wall - pt > this.maxDriftMs) throw new ClockDriftError(remote.wall, pt, this.maxDriftMs);
    if (pt > this.wall && pt > remote.wall) {
      this.wall = pt;
      this.logical = 0;
    } else if (remote.wall > this.wall) {
      this.wall = remote.wall;
      this.logical = remote.logical;
      this.tick();
    } else if (remote.wall === this.wall) {
      this.logical = Math.max(this.logical, remote.logical);
      this.tick();
    } else {
      this.tick();
    }
  }

  private tick(): void {
    if (this.logical >= MAX_LOGICAL) {
      // Four billion events in one millisecond cannot happen honestly; advancing wall keeps order.
      this.wall += 1;
      this.logical = 0;
    } else {
      this.logical += 1;
    }
  }
}
