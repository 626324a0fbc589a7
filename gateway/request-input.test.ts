import { ApiError } from './api-error';
import {
  acceptRequestId,
  DEFAULT_LIMITS,
  keyFromKvPath,
  parseConsistency,
  parseKey,
  parseTtl,
} from './request-input';

const P = '/v1/kv/';

function apiError(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error('expected an ApiError');
}

describe('keyFromKvPath', () => {
  it('takes everything after the prefix, percent-decoded, without the query', () => {
    expect(keyFromKvPath('/v1/kv/a/b/c', P, DEFAULT_LIMITS).toString()).toBe('a/b/c');
    expect(keyFromKvPath('/v1/kv/a%2Fb?ttl=5', P, DEFAULT_LIMITS).toString()).toBe('a/b');
    expect(keyFromKvPath('/v1/kv/%E2%82%AC%20x', P, DEFAULT_LIMITS).toString()).toBe('€ x');
  });
  it('refuses empty keys, bad encodings and oversized keys with the right status', () => {
    expect(apiError(() => keyFromKvPath('/v1/kv/', P, DEFAULT_LIMITS)).status).toBe(400);
    expect(apiError(() => keyFromKvPath('/v1/kv/%zz', P, DEFAULT_LIMITS)).status).toBe(400);
    expect(apiError(() => keyFromKvPath('/v1/kv/%FF', P, DEFAULT_LIMITS)).message).toMatch(
      /percent-encoded UTF-8/,
    );
    expect(apiError(() => keyFromKvPath('/v1/kv/' + 'a'.repeat(1025), P, DEFAULT_LIMITS)).status).toBe(413);
    expect(keyFromKvPath('/v1/kv/' + 'a'.repeat(1024), P, DEFAULT_LIMITS).length).toBe(1024);
    // the limit counts bytes, not characters
    expect(apiError(() => keyFromKvPath('/v1/kv/' + '%C3%A9'.repeat(513), P, DEFAULT_LIMITS)).status).toBe(
      413,
    );
  });
});

describe('parseKey', () => {
  it('accepts a single string only', () => {
    expect(parseKey('k', DEFAULT_LIMITS).toString()).toBe('k');
    expect(apiError(() => parseKey(['a', 'b'], DEFAULT_LIMITS)).status).toBe(400);
    expect(apiError(() => parseKey(undefined, DEFAULT_LIMITS)).status).toBe(400);
    expect(apiError(() => parseKey('', DEFAULT_LIMITS)).status).toBe(400);
  });
});

describe('parseConsistency', () => {
  it('defaults to quorum and accepts the three levels in any case', () => {
    expect(parseConsistency(undefined)).toBe('quorum');
    expect(parseConsistency('ONE')).toBe('one');
    expect(parseConsistency(' all ')).toBe('all');
    expect(apiError(() => parseConsistency('two')).status).toBe(400);
    expect(apiError(() => parseConsistency(['one', 'all'])).status).toBe(400);
  });
});

describe('parseTtl', () => {
  it('accepts whole seconds in range', () => {
    expect(parseTtl(undefined)).toBeUndefined();
    expect(parseTtl('60')).toBe(60);
    for (const bad of ['0', '-1', '1.5', 'abc', '', '99999999999', ['1']]) {
      expect(apiError(() => parseTtl(bad)).status).toBe(400);
    }
  });
});

describe('acceptRequestId', () => {
  it('keeps safe ids and replaces unsafe ones', () => {
    expect(acceptRequestId('abc-123', () => 'new')).toBe('abc-123');
    expect(acceptRequestId('bad id\n', () => 'new')).toBe('new');
    expect(acceptRequestId(undefined, () => 'new')).toBe('new');
    expect(acceptRequestId('x'.repeat(200), () => 'new')).toBe('new');
  });
});
