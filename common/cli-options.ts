import { KvError } from './errors';

/** Command-line values are checked once at start-up, with a message that names the flag. */
export class UsageError extends KvError {
  constructor(
    message: string,
    context: Readonly<Record<string, unknown>> = {},
    options?: { cause?: unknown },
  ) {
    super('usage', message, context, options);
  }
}

export function intOption(
  name: string,
  raw: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  return intValue(`--${name}`, raw, fallback, min, max);
}

/** As intOption, with the message naming `source` (`--port`, or `KVSTORE_PORT` when the environment set it). */
export function intValue(
  source: string,
  raw: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw))
    throw new UsageError(`${source} must be a whole number, got ${JSON.stringify(raw)}`, { source });
  const n = Number(raw);
  if (n < min || n > max)
    throw new UsageError(`${source} must be between ${min} and ${max}, got ${n}`, { source });
  return n;
}

export function requiredOption(name: string, raw: string | undefined): string {
  if (raw === undefined || raw === '') throw new UsageError(`--${name} is required`);
  return raw;
}

/** Runs a process entry point: usage errors print one line and exit 2; anything else is logged and exits 1. */
export function runMain(name: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`${name}: ${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(
      `${name}: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  });
}
