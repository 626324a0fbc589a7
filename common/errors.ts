/**
 * Typed errors shared by every component. Each carries a stable machine-readable
 * code and the context needed to act on it, so callers branch on `code`, never on
 * message text.
 */
export class KvError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly context: Readonly<Record<string, unknown>> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Input from outside the system that cannot be accepted; maps to HTTP 400/413. */
export class ValidationError extends KvError {
  constructor(
    message: string,
    readonly status: 400 | 413 = 400,
    context: Record<string, unknown> = {},
  ) {
    super(status === 413 ? 'payload_too_large' : 'bad_request', message, context);
  }
}

/** A stored or transmitted structure that fails to decode: a bug or corruption, never user input. */
export class CorruptDataError extends KvError {
  constructor(message: string, context: Record<string, unknown> = {}) {
    super('corrupt_data', message, context);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
