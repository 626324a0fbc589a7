import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { UsageError } from './cli-options';
import { errorMessage } from './errors';

/**
 * The cluster's internal credential: one shared token that every node, gateway and
 * map owner holds (on Kubernetes a Secret `<cluster>-internal-token`, key `token`,
 * mounted as a file). A node's internal API serves only connections that present
 * it, so reaching a node's port is not enough to read or write data.
 *
 * The value may hold several tokens, one per line: a process presents the first and
 * its node accepts any of them. That is how the token is rotated without a moment
 * where two processes refuse each other: add the new token as a second line and
 * restart everything, move it to the first line and restart, drop the old line and
 * restart.
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

/** Enough for a rotation (old and new) with room to spare; more is a mistake. */
export const MAX_INTERNAL_TOKENS = 4;

export interface InternalTokens {
  /** what this process presents to nodes: the first token */
  readonly present: string;
  /** what its own internal API accepts: every token, the first included */
  readonly accepted: readonly string[];
}

/**
 * The tokens as configured: one per line, each trimmed (a Secret file often ends in a
 * newline) and at least the minimum length; blank lines are ignored.
 */
export function parseInternalTokens(raw: string, source: string): InternalTokens {
  const tokens = raw
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  if (tokens.length === 0) {
    throw new InternalTokenError(`the internal token from ${source} is empty`, source);
  }
  if (tokens.length > MAX_INTERNAL_TOKENS) {
    throw new InternalTokenError(
      `${source} holds ${tokens.length} internal tokens; at most ${MAX_INTERNAL_TOKENS} (the current one first, then the next)`,
      source,
    );
  }
  tokens.forEach((token, i) => {
    if (token.length < MIN_INTERNAL_TOKEN_LENGTH) {
      throw new InternalTokenError(
        `the internal token${tokens.length > 1 ? ` on line ${i + 1}` : ''} from ${source} has ${token.length} characters; it needs at least ${MIN_INTERNAL_TOKEN_LENGTH}`,
        source,
      );
    }
  });
  return { present: tokens[0], accepted: tokens };
}

export function readInternalTokenFile(file: string): string {
  return readInternalTokensFile(file).present;
}

function readInternalTokensFile(file: string): InternalTokens {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InternalTokenError(`cannot read the internal token file ${file}: ${errorMessage(err)}`, file);
  }
  return parseInternalTokens(raw, file);
}

/**
 * The token a process runs with: the file named by `--internal-token-file` when given,
 * else `KVSTORE_INTERNAL_TOKEN`, else none (the internal API is then unauthenticated).
 */
export function loadInternalToken(opts: {
  readonly file?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
}): string | undefined {
  return loadInternalTokens(opts)?.present;
}

/** As loadInternalToken, with every token a node accepts (see the rotation above). */
export function loadInternalTokens(opts: {
  readonly file?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
}): InternalTokens | undefined {
  if (opts.file !== undefined) return readInternalTokensFile(opts.file);
  const fromEnv = (opts.env ?? process.env)[INTERNAL_TOKEN_ENV];
  if (fromEnv === undefined || fromEnv === '') return undefined;
  return parseInternalTokens(fromEnv, `$${INTERNAL_TOKEN_ENV}`);
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
  private readonly expected: readonly Buffer[];

  /** `tokens`: the one token, or every token accepted during a rotation. */
  constructor(tokens: string | readonly string[]) {
    this.expected = (typeof tokens === 'string' ? [tokens] : tokens).map(digest);
  }

  matches(presented: unknown): boolean {
    if (typeof presented !== 'string') return false;
    const d = digest(presented);
    // Every expected token is compared, whichever matches: the time says nothing about which.
    let found = false;
    for (const e of this.expected) if (timingSafeEqual(d, e)) found = true;
    return found;
  }
}
