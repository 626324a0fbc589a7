import * as hdr from 'hdr-histogram-js';

/** Latency percentiles in microseconds. */
export interface LatencySummary {
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/**
 * An HDR histogram of latencies in microseconds, 1 µs to 60 s at 3 significant
 * digits: fixed memory and constant-time recording whatever the run length.
 */
export class LatencyHistogram {
  private readonly h = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
    // The pure-JS backend: the WebAssembly one needs an async init and buys nothing at these rates.
    useWebAssembly: false,
  });

  record(micros: number): void {
    // Values over the top are clamped rather than thrown: a 60 s stall is already a failed run.
    this.h.recordValue(Math.max(1, Math.min(60_000_000, Math.round(micros))));
  }

  get count(): number {
    return this.h.totalCount;
  }

  summary(): LatencySummary {
    return {
      mean: round(this.h.mean),
      p50: this.h.getValueAtPercentile(50),
      p90: this.h.getValueAtPercentile(90),
      p99: this.h.getValueAtPercentile(99),
      p999: this.h.getValueAtPercentile(99.9),
      max: this.h.maxValue,
    };
  }
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
