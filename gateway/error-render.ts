import { ApiError } from './api-error';
import { JSON_CONTENT_TYPE, type ApiResult } from './api-request';
import { WWW_AUTHENTICATE } from './authoriser';
import { retryAfterHeader } from './rate-limit';

/**
 * The one rendering of an error, whichever adapter answers: the status, `{ error: { code, message } }`,
 * Retry-After on 429 and 503 (whole seconds: the error's `retryAfterMs` context when it has one, e.g. from
 * the rate limiter, else 1) and the Bearer challenge on 401.
 */
export function renderError(err: ApiError): ApiResult {
  const headers: string[] = [];
  if (err.apiCode === 'rate_limited' || err.status === 503)
    headers.push('Retry-After', retryAfterHeader(err));
  if (err.status === 401) headers.push('WWW-Authenticate', WWW_AUTHENTICATE);
  headers.push('Content-Type', JSON_CONTENT_TYPE);
  return { status: err.status, headers, body: JSON.stringify(err.toBody()) };
}

/** Maps anything thrown in a handler, including body-parser's errors, to the API's error shape. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string } | null;
  switch (e?.type) {
    case 'entity.too.large':
      return new ApiError(413, 'payload_too_large', 'request body is larger than the limit');
    case 'entity.parse.failed':
      return new ApiError(400, 'bad_request', 'body is not valid JSON');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new ApiError(415, 'unsupported_media_type', e.message ?? 'unsupported encoding');
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
      return new ApiError(400, 'bad_request', e.message ?? 'malformed request body');
  }
  const status = e?.status ?? e?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ApiError(status, status === 404 ? 'not_found' : 'bad_request', e?.message ?? 'bad request');
  }
  return new ApiError(500, 'internal', 'internal error');
}

/** An error nobody meant for the client (a bug, a library's failure): logged in full, answered as 500. */
export function isUnexpected(err: unknown, apiErr: ApiError): boolean {
  return apiErr.status >= 500 && !(err instanceof ApiError);
}
