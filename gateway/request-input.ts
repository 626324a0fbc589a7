import { CONSISTENCY_LEVELS, type Consistency } from '../common/consistency';
import { isValidContentType, MAX_CONTENT_TYPE_BYTES } from '../common/record';
import { MAX_TTL_SECONDS } from '../common/rest-api';
import { ApiError } from './api-error';

/**
 * Everything the gateway takes from a client is parsed here, before any replica
 * is contacted, so a bad request is refused whole and changes nothing.
 */

export interface InputLimits {
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  /** the JSON body of POST /v1/batch (DEFAULT_MAX_BATCH_BYTES when absent) */
  readonly maxBatchBytes?: number;
}

/** A batch body's limit by default: 16 MiB, a dozen 1 MiB values in base64 or 1000 small ones many times over. */
export const DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024;

export const DEFAULT_LIMITS: InputLimits = { maxKeyBytes: 1024, maxValueBytes: 1024 * 1024 };

export function parseKey(raw: unknown, limits: InputLimits): Buffer {
  if (typeof raw !== 'string') throw new ApiError(400, 'bad_request', 'key must be a single string');
  if (raw.length === 0) throw new ApiError(400, 'bad_request', 'key must not be empty');
  const key = Buffer.from(raw, 'utf8');
  if (key.length > limits.maxKeyBytes) {
    throw new ApiError(
      413,
      'payload_too_large',
      `key is ${key.length} bytes; the limit is ${limits.maxKeyBytes}`,
    );
  }
  return key;
}

/** The key of a `/v1/kv/{key}` URL: everything after the prefix, percent-decoded, query excluded. */
export function keyFromKvPath(originalUrl: string, prefix: string, limits: InputLimits): Buffer {
  const q = originalUrl.indexOf('?');
  const path = q === -1 ? originalUrl : originalUrl.slice(0, q);
  if (!path.startsWith(prefix)) throw new ApiError(400, 'bad_request', `key path must start with ${prefix}`);
  let decoded: string;
  try {
    decoded = decodeURIComponent(path.slice(prefix.length));
  } catch {
    throw new ApiError(400, 'bad_request', 'key is not valid percent-encoded UTF-8');
  }
  return parseKey(decoded, limits);
}

export function parseConsistency(header: string | string[] | undefined): Consistency {
  if (header === undefined) return 'quorum';
  const v = Array.isArray(header) ? header.join(',') : header.trim().toLowerCase();
  if ((CONSISTENCY_LEVELS as readonly string[]).includes(v)) return v as Consistency;
  throw new ApiError(400, 'bad_request', `X-Consistency must be one of ${CONSISTENCY_LEVELS.join(', ')}`);
}

export function parseTtl(raw: unknown): number | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !/^\d{1,10}$/.test(raw)) {
    throw new ApiError(400, 'bad_request', 'ttl must be a whole number of seconds');
  }
  const ttl = Number(raw);
  if (ttl < 1 || ttl > MAX_TTL_SECONDS) {
    throw new ApiError(400, 'bad_request', `ttl must be between 1 and ${MAX_TTL_SECONDS} seconds`);
  }
  return ttl;
}

/** A media type as RFC 9110 (8.3.1) writes it: type/subtype and parameters, tokens or quoted strings. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const QUOTED = '"(?:[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]|\\\\[\\x20-\\x7e])*"';
const MEDIA_TYPE_RE = new RegExp(`^${TOKEN}/${TOKEN}(?: *; *(?:${TOKEN}=(?:${TOKEN}|${QUOTED}))?)*$`);

/** What a value without a stored content type is served as, so it is not stored. */
export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

/**
 * The Content-Type of a PUT, kept with the record as sent (trimmed): undefined when absent or the
 * default. 400 unless it is a media type of at most MAX_CONTENT_TYPE_BYTES printable ASCII bytes.
 */
/** `raw` (trimmed) is a media type a record can keep. */
export function isAcceptedContentType(raw: string): boolean {
  const type = raw.trim();
  return isValidContentType(type) && MEDIA_TYPE_RE.test(type);
}

export function parseContentType(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const type = raw.trim();
  if (!isAcceptedContentType(type)) {
    throw new ApiError(
      400,
      'bad_request',
      `Content-Type must be a media type (type/subtype[; name=value]) of at most ${MAX_CONTENT_TYPE_BYTES} printable ASCII bytes`,
    );
  }
  return type.toLowerCase() === DEFAULT_CONTENT_TYPE ? undefined : type;
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** A caller's X-Request-Id is kept when it is safe to log and forward; otherwise we make one. */
export function acceptRequestId(header: string | string[] | undefined, make: () => string): string {
  return typeof header === 'string' && REQUEST_ID_RE.test(header) ? header : make();
}
