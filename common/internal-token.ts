import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { UsageError } from './cli-options';
import { errorMessage } from './errors';

/**
 * The cluster's internal credential: one shared token that every node, gateway and
 * map owner holds (on Kubernetes a Secret `<cluster>-internal-token`, key `token`,
 * mounted as a file). A node's internal API serves only connections that present
 * it, so reaching a node's port is not enough to read or write data.
 */

/** Alternative to `--internal-token-file`: the token itself (e.g. from a Secret's env var). */
export const INTERNAL_TOKEN_ENV = 'KVSTORE_INTERNAL_TOKEN';
/** Shorter tokens are refused: 32 characters is 128 bits of hex, the least worth having. */
export const MIN_INTERNAL_TOKEN_LENGTH = 32;

/** A token that is missing, unreadable or too weak: a startup error that names its source. */
export class InternalTokenError extends UsageError {
  constructor(
    message: string,
    readonly source: string,
  ) {
    super(message);
  }
}

/** The token as configured: trimmed (a Secret file often ends in a newline), at least the minimum length. */
export function validateInternalToken(raw: string, source: string): string {
  const token = raw.trim();
  if (token.length < MIN_INTERNAL_TOKEN_LENGTH) {
    throw new InternalTokenError(
      `the internal token from ${source} has ${token.length} characters; it needs at least ${MIN_INTERNAL_TOKEN_LENGTH}`,
      source,
    );
  }
  return token;
}

export function readInternalTokenFile(file: string): string {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InternalTokenError(`cannot read the internal token file ${file}: ${errorMessage(err)}`, file);
  }
  return validateInternalToken(raw, file);
}

/**
 * The token a process runs with: the file named by `--internal-token-file` when given,
 * else `KVSTORE_INTERNAL_TOKEN`, else none (the internal API is then unauthenticated).
 */
export function loadInternalToken(opts: {
  readonly file?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
}): string | undefined {
  if (opts.file !== undefined) return readInternalTokenFile(opts.file);
  const fromEnv = (opts.env ?? process.env)[INTERNAL_TOKEN_ENV];
  if (fromEnv === undefined || fromEnv === '') return undefined;
  return validateInternalToken(fromEnv, `$${INTERNAL_TOKEN_ENV}`);
}

/** 32 random bytes as hex: 64 characters. */
export function generateInternalToken(): string {
  return randomBytes(32).toString('hex');
}

/**
 * Reads the token file, creating it (mode 0600, a fresh random token) when absent. Created
 * exclusively, so two launchers racing on one data directory end up with the same token.
 */
export function ensureInternalTokenFile(file: string): string {
  try {
    fs.writeFileSync(file, `${generateInternalToken()}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new InternalTokenError(
        `cannot create the internal token file ${file}: ${errorMessage(err)}`,
        file,
      );
    }
  }
  return readInternalTokenFile(file);
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * Checks presented tokens against the configured one. Digests, not the strings, are
 * compared: equal length whatever was sent, so timingSafeEqual leaks neither content
 * nor length, and the plain token is not kept by the checker.
 */
export class InternalTokenVerifier {
  private readonly expected: Buffer;

  constructor(token: string) {
    this.expected = digest(token);
  }

  matches(presented: unknown): boolean {
    if (typeof presented !== 'string') return false;
    return timingSafeEqual(digest(presented), this.expected);
  }
}
