import { ApiError } from './api-error';
import { renderError, toApiError } from './error-render';

describe('renderError', () => {
  it('renders the JSON body and the headers each status carries', () => {
    const header = (err: ApiError, name: string): string | undefined => {
      const h = renderError(err).headers;
      const i = h.findIndex((n, j) => j % 2 === 0 && n === name);
      return i === -1 ? undefined : h[i + 1];
    };
    const unauthorised = new ApiError(401, 'unauthorized', 'no key');
    expect(renderError(unauthorised)).toMatchObject({
      status: 401,
      body: '{"error":{"code":"unauthorized","message":"no key"}}',
    });
    expect(header(unauthorised, 'WWW-Authenticate')).toBe('Bearer realm="kvstore"');
    expect(header(unauthorised, 'Content-Type')).toBe('application/json; charset=utf-8');
    expect(header(unauthorised, 'Retry-After')).toBeUndefined();
    expect(header(new ApiError(503, 'unavailable', 'x'), 'Retry-After')).toBe('1');
    expect(header(new ApiError(429, 'rate_limited', 'x', { retryAfterMs: 2500 }), 'Retry-After')).toBe('3');
    expect(header(new ApiError(400, 'bad_request', 'x'), 'Retry-After')).toBeUndefined();
  });
});

describe('toApiError', () => {
  it.each([
    [{ type: 'entity.too.large', status: 413 }, 413, 'payload_too_large'],
    [{ type: 'entity.parse.failed', status: 400 }, 400, 'bad_request'],
    [
      { type: 'encoding.unsupported', status: 415, message: 'unsupported content encoding "br"' },
      415,
      'unsupported_media_type',
    ],
    [{ status: 404, message: 'gone' }, 404, 'not_found'],
    [new Error('a bug'), 500, 'internal'],
  ])('maps %j to %i %s', (err, status, code) => {
    const e = toApiError(err);
    expect([e.status, e.apiCode]).toEqual([status, code]);
  });

  it('keeps an ApiError as it is', () => {
    const err = new ApiError(403, 'forbidden', 'no');
    expect(toApiError(err)).toBe(err);
  });
});
