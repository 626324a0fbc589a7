import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { KvError } from './errors';
import { prefixRange, rangeWithin, type KeyRange } from './key-range';

/**
 * The gateway's API keys: the key file's format, its strict validation, and
 * what a presented bearer token may do. Pure: no I/O (api-key-file.ts reads
 * and re-reads the file).
 *
 *   { "keys": [ { "id": "team-a-writer", "sha256": "<64 hex>", "role": "readwrite", "prefix": "team-a/" } ] }
 *
 * Tokens are 32 random bytes (see newToken), so a plain SHA-256 of the token
 * is as hard to reverse as the token is to guess; a slow password hash would
 * only cost CPU on every request.
 */

export const ROLES = ['read', 'readwrite', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** What a route needs: `open` needs no key, `any` any valid key, the others a role that covers them. */
export type Access = 'open' | 'any' | 'read' | 'write' | 'admin';

/** Why a request was refused; the label values of kvstore_gateway_auth_failures_total. */
export const AUTH_FAILURE_REASONS = ['missing', 'invalid', 'role', 'prefix'] as const;
export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

/** Who is asking: a key from the file, or everyone when auth is off (keyId undefined). */
export interface Principal {
  readonly keyId: string | undefined;
  readonly role: Role;
  /** every key the principal touches starts with these bytes */
  readonly prefix: Buffer | undefined;
}

/** The principal of a gateway running with --no-auth. */
export const UNAUTHENTICATED_ADMIN: Principal = { keyId: undefined, role: 'admin', prefix: undefined };

export const TOKEN_PREFIX = 'kvs_';
/** A presented token longer than this is not one of ours; refused without hashing it. */
export const MAX_TOKEN_LENGTH = 512;

export class ApiKeyFileError extends KvError {
  constructor(message: string, context: Record<string, unknown> = {}) {
    super('bad_key_file', message, context);
  }
}

const entrySchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9._:@-]{1,128}$/, 'must be 1 to 128 of A-Z a-z 0-9 . _ : @ -'),
    sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex digits (the SHA-256 of the token)'),
    role: z.enum(ROLES),
    prefix: z.string().min(1, 'must not be empty (leave it out for no prefix)').max(1024).optional(),
  })
  .strict();

const fileSchema = z.object({ keys: z.array(z.unknown()) }).strict();

export interface ApiKeyEntry {
  readonly id: string;
  readonly sha256: string;
  readonly role: Role;
  readonly prefix?: string;
}

interface StoredKey {
  readonly principal: Principal;
  readonly hash: Buffer;
}

/** The SHA-256 of a token as the key file stores it: 64 lowercase hex digits. */
/** A new token: 32 random bytes, base64url, after a prefix that makes it recognisable (e.g. to secret scanners). */
export function newToken(random: (n: number) => Buffer = randomBytes): string {
  return `${TOKEN_PREFIX}${random(32).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const field = issue.path.length > 0 ? issue.path.join('.') : 'entry';
  return `${field}: ${issue.message}`;
}

/** An immutable set of API keys, parsed from the key file's text. */
export class ApiKeySet {
  private constructor(private readonly keys: readonly StoredKey[]) {}

  static readonly EMPTY = new ApiKeySet([]);

  /** Parses and validates the key file; throws ApiKeyFileError naming the file and the entry at fault. */
  static parse(text: string, source = 'the key file'): ApiKeySet {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new ApiKeyFileError(`${source} is not valid JSON (${(err as Error).message})`, { source });
    }
    const top = fileSchema.safeParse(json);
    if (!top.success) {
      throw new ApiKeyFileError(
        `${source} must be a JSON object { "keys": [ ... ] } and nothing else: ${top.error.issues.map(describeIssue).join('; ')}`,
        { source },
      );
    }
    const entries: ApiKeyEntry[] = top.data.keys.map((raw, i) => {
      const parsed = entrySchema.safeParse(raw);
      if (parsed.success) return parsed.data;
      const id =
        typeof raw === 'object' && raw !== null && typeof (raw as { id?: unknown }).id === 'string'
          ? ` (id ${JSON.stringify((raw as { id: string }).id)})`
          : '';
      throw new ApiKeyFileError(
        `${source}: keys[${i}]${id}: ${parsed.error.issues.map(describeIssue).join('; ')}`,
        { source, entry: i },
      );
    });
    return ApiKeySet.fromEntries(entries, source);
  }

  /** Builds the set from validated entries; refuses duplicate ids or hashes and admin keys with a prefix. */
  static fromEntries(entries: readonly ApiKeyEntry[], source = 'the key file'): ApiKeySet {
    const ids = new Set<string>();
    const hashes = new Map<string, string>();
    const keys = entries.map((e, i): StoredKey => {
      const at = `${source}: keys[${i}] (id ${JSON.stringify(e.id)})`;
      if (ids.has(e.id)) throw new ApiKeyFileError(`${at}: the id is used twice`, { source, entry: i });
      ids.add(e.id);
      const hex = e.sha256.toLowerCase();
      const other = hashes.get(hex);
      if (other !== undefined) {
        throw new ApiKeyFileError(`${at}: has the same sha256 as ${JSON.stringify(other)}`, {
          source,
          entry: i,
        });
      }
      hashes.set(hex, e.id);
      if (e.role === 'admin' && e.prefix !== undefined) {
        throw new ApiKeyFileError(`${at}: an admin key is cluster-wide and may not have a prefix`, {
          source,
          entry: i,
        });
      }
      return {
        principal: {
          keyId: e.id,
          role: e.role,
          prefix: e.prefix === undefined ? undefined : Buffer.from(e.prefix, 'utf8'),
        },
        hash: Buffer.from(hex, 'hex'),
      };
    });
    return new ApiKeySet(keys);
  }

  get size(): number {
    return this.keys.length;
  }

  ids(): string[] {
    return this.keys.map((k) => k.principal.keyId ?? '');
  }

  /**
   * The key a token belongs to, or undefined. The token's hash is compared with
   * every stored hash, with no early exit, so the time taken does not say which
   * (or whether any) stored key was close.
   */
  verify(token: string): Principal | undefined {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return undefined;
    const presented = createHash('sha256').update(token, 'utf8').digest();
    let found: Principal | undefined;
    for (const k of this.keys) {
      const same = timingSafeEqual(presented, k.hash);
      if (same && found === undefined) found = k.principal;
    }
    return found;
  }
}

/** The outcome of authenticating a request: the principal, or a 401 with its reason. */
export type Authentication =
  | { readonly ok: true; readonly principal: Principal }
  | { readonly ok: false; readonly reason: 'missing' | 'invalid' };

// RFC 6750's b64token: what a bearer token may contain.
const BEARER_RE = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** Who an `Authorization` header names: `Bearer <token>` with a token from `keys`. */
export function authenticate(keys: ApiKeySet, header: string | string[] | undefined): Authentication {
  if (header === undefined || header === '') return { ok: false, reason: 'missing' };
  if (typeof header !== 'string') return { ok: false, reason: 'invalid' };
  const m = BEARER_RE.exec(header);
  if (!m) return { ok: false, reason: 'invalid' };
  const principal = keys.verify(m[1]);
  return principal ? { ok: true, principal } : { ok: false, reason: 'invalid' };
}

/** Whether a role covers what a route needs (the prefix is checked separately, per key). */
export function roleAllows(role: Role, access: Access): boolean {
  switch (access) {
    case 'open':
    case 'any':
      return true;
    case 'read':
      return true;
    case 'write':
      return role === 'readwrite' || role === 'admin';
    case 'admin':
      return role === 'admin';
  }
}

/** Whether a principal may touch this key: byte-wise, the key starts with its prefix. */
export function prefixAllows(principal: Principal, key: Uint8Array): boolean {
  const p = principal.prefix;
  if (p === undefined) return true;
  return key.length >= p.length && Buffer.compare(p, key.subarray(0, p.length)) === 0;
}

/** Whether a principal may list `range`: all of it lies inside its prefix (a listing is refused, not clamped). */
export function rangeAllowed(principal: Principal, range: KeyRange): boolean {
  const p = principal.prefix;
  return p === undefined || rangeWithin(range, prefixRange(p));
}

/**
 * What a public API route needs, from its method and the request's pathname as
 * express's router matches it (`req.path`: an absolute-form target such as
 * `POST http://host/put` is routed by its path, so it must be classified by it
 * too). Only the health and metrics routes are open; anything unrecognised
 * needs at least a valid key, so a route added later is closed until it is
 * classified here. Express matches routes case-insensitively and with a
 * trailing slash, so the path is compared the same way.
 */
export function requiredAccess(method: string | undefined, pathname: string): Access {
  const q = pathname.indexOf('?');
  let path = (q === -1 ? pathname : pathname.slice(0, q)).toLowerCase();
  // Not a path: never open, and nothing below may be mistaken for a weaker route.
  if (!path.startsWith('/')) return 'admin';
  if (!path.startsWith('/v1/kv/')) path = path.replace(/(.)\/+$/, '$1');
  const reading = method === 'GET' || method === 'HEAD';
  if (path === '/healthz' || path === '/readyz' || path === '/metrics' || path === '/openapi.json')
    return reading ? 'open' : 'any';
  if (path === '/v1/cluster') return 'any';
  // A batch needs a key that may read; each write in it is checked against the key's role on its own.
  if (path === '/v1/batch') return method === 'POST' ? 'read' : 'any';
  if (path === '/v1/admin' || path.startsWith('/v1/admin/')) return 'admin';
  const data =
    path === '/v1/kv' ||
    path.startsWith('/v1/kv/') ||
    path === '/get' ||
    path === '/put' ||
    path === '/delete';
  if (!data) return 'any';
  if (reading) return 'read';
  if (method === 'PUT' || method === 'POST' || method === 'DELETE') return 'write';
  return 'any';
}
