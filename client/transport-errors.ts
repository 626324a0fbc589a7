import { KvClientError } from './client-error';

/**
 * A fetch that got no answer, as a KvClientError: timeout, abort, unreachable, and the TLS
 * failures told apart (an untrusted certificate, a wrong host name, expired dates, a handshake
 * with a port that does not speak TLS), each with a hint at the fix.
 */

/** OpenSSL's and Node's codes for a peer certificate that does not verify. */
const TLS_VERIFY_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const TLS_UNTRUSTED_HINT =
  "the server's certificate is not signed by a trusted CA: give the CA that signed it as the client's ca (kvctl: --ca FILE)";
const TLS_NAME_HINT =
  'the certificate is not for this host: use a URL with a host name or IP address it lists';
const TLS_DATES_HINT =
  "the certificate is outside its validity period: renew it, or check this machine's clock";
const TLS_VERIFY_HINTS: Readonly<Record<string, string>> = {
  ERR_TLS_CERT_ALTNAME_INVALID: TLS_NAME_HINT,
  HOSTNAME_MISMATCH: TLS_NAME_HINT,
  CERT_HAS_EXPIRED: TLS_DATES_HINT,
  CERT_NOT_YET_VALID: TLS_DATES_HINT,
};

/** A TLS failure as a KvClientError, or undefined when `inner` is not one. */
function tlsError(
  inner: unknown,
  cause: unknown,
  ctx: { method: string; url: string },
): KvClientError | undefined {
  if (!isErrorLike(inner)) return undefined;
  const code = typeof inner.code === 'string' ? inner.code : '';
  if (TLS_VERIFY_CODES.has(code)) {
    return new KvClientError(
      'tls_verification_failed',
      `TLS verification failed for ${ctx.url}: ${inner.message} (${code}); ${TLS_VERIFY_HINTS[code] ?? TLS_UNTRUSTED_HINT}`,
      { ...ctx, cause },
    );
  }
  if (code.startsWith('ERR_SSL_') || code === 'EPROTO' || code.startsWith('ERR_TLS_')) {
    return new KvClientError(
      'tls_error',
      `TLS handshake with ${ctx.url} failed: ${inner.message} (${code}); does the server speak https on that port?`,
      { ...ctx, cause },
    );
  }
  return undefined;
}

/**
 * An Error from any realm: errors raised inside Node (sockets, TLS) fail `instanceof Error` where the
 * caller's globals are another context's (a vm, jest), so their shape is what is checked.
 */
function isErrorLike(v: unknown): v is { name: string; message: string; code?: unknown; cause?: unknown } {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { message?: unknown }).message === 'string' &&
    typeof (v as { name?: unknown }).name === 'string'
  );
}

export function transportError(
  cause: unknown,
  timeout: AbortSignal,
  timeoutMs: number,
  ctx: { method: string; url: string },
): KvClientError {
  const name = isErrorLike(cause) ? cause.name : '';
  if (name === 'TimeoutError' || (name === 'AbortError' && timeout.aborted)) {
    return new KvClientError('timeout', `${ctx.method} ${ctx.url}: no answer within ${timeoutMs} ms`, {
      ...ctx,
      cause,
    });
  }
  if (name === 'AbortError')
    return new KvClientError('aborted', `${ctx.method} ${ctx.url}: aborted`, { ...ctx, cause });
  // fetch reports every connection-level failure as TypeError('fetch failed') with the system error as cause.
  const inner = isErrorLike(cause) ? cause.cause : undefined;
  const tls = tlsError(inner, cause, ctx);
  if (tls) return tls;
  const detail = isErrorLike(inner)
    ? typeof inner.code === 'string'
      ? inner.code
      : inner.message
    : isErrorLike(cause)
      ? cause.message
      : String(cause);
  return new KvClientError('unreachable', `cannot reach ${ctx.url}: ${detail}`, { ...ctx, cause });
}
