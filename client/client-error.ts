/**
 * Every failure of the client. Branch on `code`:
 * - the gateway's own codes (`bad_request`, `unauthorized`, `forbidden`, `not_found`, `payload_too_large`,
 *   `rate_limited`, `unavailable`, `not_ready`, ...), with `status` set;
 * - `bad_request` with `status` undefined: refused locally, nothing was sent;
 * - `tls_verification_failed`: the server's certificate is not trusted (wrong or missing `ca`, a name it
 *   is not for, expired); nothing was sent. `tls_error`: the TLS handshake failed otherwise (e.g. an
 *   https URL for a plain http port);
 * - `unreachable`, `timeout`, `aborted`: the request got no answer (a write may or may not have been applied);
 * - `bad_response`: the server answered something that is not the gateway's API.
 * - `not_kvstore`: the server is not the kvstore component asked for (no `X-Kvstore` header, or another
 *   component's: a node admin port, the launcher's): the URL is wrong. `status` is the reply's.
 */
export class KvClientError extends Error {
  readonly status: number | undefined;
  readonly code: string;
  readonly method: string | undefined;
  readonly url: string | undefined;
  /** The gateway's `X-Request-Id` for this request, to find it in the server logs. */
  readonly requestId: string | undefined;
  /** From `Retry-After` on 429/503: when it is worth trying again. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    code: string,
    message: string,
    details: {
      status?: number;
      method?: string;
      url?: string;
      requestId?: string;
      retryAfterSeconds?: number;
      cause?: unknown;
    } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'KvClientError';
    this.code = code;
    this.status = details.status;
    this.method = details.method;
    this.url = details.url;
    this.requestId = details.requestId;
    this.retryAfterSeconds = details.retryAfterSeconds;
  }
}
/** The request a KvClientError is about: the third argument of its constructor. */
export type ErrorContext = ConstructorParameters<typeof KvClientError>[2];

/** A refusal before anything was sent: `bad_request` with no status. */
export function localError(message: string): KvClientError {
  return new KvClientError('bad_request', message);
}
