import { X509Certificate } from 'node:crypto';
import { CONSISTENCY_LEVELS, type Consistency } from '../common/consistency';
import { localError } from './client-error';

/**
 * Checks of what a caller hands the client (keys, values, headers, options), so a bad one is
 * refused locally with a message that names it, before anything is sent.
 */

export function isConsistency(v: unknown): v is Consistency {
  return typeof v === 'string' && (CONSISTENCY_LEVELS as readonly string[]).includes(v);
}

export function checkConsistency(v: unknown): Consistency | undefined {
  if (v === undefined) return undefined;
  if (!isConsistency(v)) {
    throw localError(`consistency must be one of ${CONSISTENCY_LEVELS.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * The URL path segment for a key. The whole key is one encoded segment, so `/` inside it survives.
 * `.` and `..` cannot be sent: every WHATWG URL parser (fetch included), and most proxies, resolve
 * them as dot segments before the gateway sees them, so they would address another route.
 */
export function encodeKey(key: unknown): string {
  if (typeof key !== 'string') throw localError(`key must be a string, got ${typeof key}`);
  if (key.length === 0) throw localError('key must not be empty');
  if (key === '.' || key === '..') {
    throw localError(`key ${JSON.stringify(key)} cannot be addressed in a URL path`);
  }
  try {
    return encodeURIComponent(key);
  } catch {
    // encodeURIComponent refuses lone UTF-16 surrogates: such a string has no UTF-8 form.
    throw localError('key is not valid Unicode (it contains a lone surrogate)');
  }
}

/** fetch throws a TypeError that looks like a network failure for a bad header; refuse those up front. */
export function checkHeader(name: string, value: unknown): string {
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name))
    throw localError(`invalid header name ${JSON.stringify(name)}`);
  if (typeof value !== 'string' || !/^[\t\x20-\x7e\x80-\xff]*$/.test(value)) {
    throw localError(`invalid value for header ${name}: only printable Latin-1 characters are allowed`);
  }
  return value;
}

export function checkPositiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw localError(`${name} must be a whole number >= 1, got ${String(v)}`);
  }
  return v;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The `ca` option as PEM bytes; every certificate in it must parse, so a wrong file fails here, not per request. */
export function checkCa(v: unknown): Buffer | undefined {
  if (v === undefined) return undefined;
  let pem: string;
  if (typeof v === 'string') pem = v;
  else if (v instanceof Uint8Array) pem = Buffer.from(v).toString('utf8');
  else throw localError(`ca must be PEM text (a string or a Buffer), got ${typeof v}`);
  const blocks = pem.match(PEM_CERTIFICATE);
  if (!blocks) throw localError('ca is not a PEM certificate: no -----BEGIN CERTIFICATE----- block found');
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block);
    } catch (err) {
      const which = blocks.length > 1 ? ` (certificate ${i + 1} of ${blocks.length})` : '';
      throw localError(
        `ca holds a malformed certificate${which}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  });
  return Buffer.from(pem, 'utf8');
}

export function toBody(value: unknown): Uint8Array {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return value;
  throw localError(`value must be a string or a Uint8Array, got ${typeof value}`);
}
