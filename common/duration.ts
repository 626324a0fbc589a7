import { UsageError } from './cli-options';

/**
 * The one duration syntax of kvstore's command lines: a number and a unit, as the `ms` package
 * writes them: `500ms`, `2s`, `1.5s`, `1m`, `1h`. Strict: the unit is required (a bare `60` meant
 * seconds to kvctl and milliseconds to `ms`, so it is refused rather than guessed), no spaces,
 * no sign, no other units, and the result must be a whole number of milliseconds within bounds.
 */

export const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
export type DurationUnit = keyof typeof DURATION_UNITS;

export interface DurationBounds {
  /** the flag named in the error, e.g. `--interval` */
  readonly flag: string;
  /** smallest accepted, in ms (default 1) */
  readonly minMs?: number;
  /** largest accepted, in ms (default 24h) */
  readonly maxMs?: number;
}

const DEFAULT_MAX_MS = 24 * DURATION_UNITS.h;
const SYNTAX = /^(\d{1,15})(?:\.(\d{1,6}))?(ms|s|m|h)$/;

/** `text` in milliseconds; throws UsageError naming the flag, the accepted range and an example. */
export function parseDuration(text: string, bounds: DurationBounds): number {
  const minMs = bounds.minMs ?? 1;
  const maxMs = bounds.maxMs ?? DEFAULT_MAX_MS;
  const refuse = (why: string): UsageError =>
    new UsageError(
      `${bounds.flag} takes a duration from ${formatDuration(minMs)} to ${formatDuration(maxMs)}, ` +
        `e.g. 500ms, 2s, 1m or 1h; got ${JSON.stringify(text)} (${why})`,
      { flag: bounds.flag, value: text },
    );
  const m = SYNTAX.exec(text);
  if (!m) {
    throw refuse(/^\d+(\.\d+)?$/.test(text) ? 'a unit is required' : 'not a number and a unit');
  }
  const [, whole, fraction = '', unit] = m;
  // Exact decimal arithmetic: 1.001s is 1001 ms, 0.5ms is no whole number of ms.
  const scale = 10n ** BigInt(fraction.length);
  const scaled =
    (BigInt(whole) * scale + BigInt(fraction || '0')) * BigInt(DURATION_UNITS[unit as DurationUnit]);
  if (scaled % scale !== 0n) throw refuse('not a whole number of milliseconds');
  const ms = scaled / scale;
  if (ms < BigInt(minMs) || ms > BigInt(maxMs)) throw refuse('out of range');
  return Number(ms);
}

/** `ms` in the largest unit that writes it exactly: 3600000 → `1h`, 1500 → `1500ms`, 90000 → `90s`. */
export function formatDuration(ms: number): string {
  for (const unit of ['h', 'm', 's'] as const) {
    const size = DURATION_UNITS[unit];
    if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
