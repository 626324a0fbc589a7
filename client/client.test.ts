import { KeyValueStoreClient, KvClientError, encodeKey, parseClusterInfo, type ClusterInfo } from './index';

/**
 * Local validation only. Port 9 is on fetch's blocked-port list, so even a check that failed to
 * stop a call opens no connection: it would show up as `unreachable`, not as the local error.
 */
const URL = 'http://127.0.0.1:9';

async function localError(p: Promise<unknown>): Promise<KvClientError> {
  const err: unknown = await p.then(
    () => new Error('expected a rejection'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KvClientError);
  const kvErr = err as KvClientError;
  expect(kvErr.status).toBeUndefined();
  expect(kvErr.code).toBe('bad_request');
  return kvErr;
}

function constructorError(arg: unknown): KvClientError {
  try {
    new KeyValueStoreClient(arg as string);
  } catch (err) {
    expect(err).toBeInstanceOf(KvClientError);
    expect((err as KvClientError).code).toBe('bad_request');
    return err as KvClientError;
  }
  throw new Error(`expected the constructor to refuse ${JSON.stringify(arg)}`);
}

describe('KeyValueStoreClient constructor', () => {
  it('accepts a URL string or options, keeping a path prefix and dropping a trailing slash', () => {
    expect(new KeyValueStoreClient('http://127.0.0.1:3000').url).toBe('http://127.0.0.1:3000');
    expect(new KeyValueStoreClient('http://127.0.0.1:3000/').url).toBe('http://127.0.0.1:3000');
    expect(new KeyValueStoreClient({ url: 'https://kv.example.com/store/' }).url).toBe(
      'https://kv.example.com/store',
    );
    expect(
      new KeyValueStoreClient({
        url: URL,
        consistency: 'all',
        timeoutMs: 500,
        token: 'tok',
        headers: { 'x-tenant': 'a' },
      }).url,
    ).toBe(URL);
  });

  it.each([
    ['not a url', 'invalid url'],
    ['ftp://host/', 'http: or https:'],
    ['http://user:pw@host/', 'user name or password'],
    ['http://host/?a=1', 'query or fragment'],
  ])('refuses the url %j', (url, fragment) => {
    expect(constructorError(url).message).toContain(fragment);
  });

  it('refuses a missing url, bad consistency, timeout, token and headers', () => {
    constructorError(undefined);
    constructorError({});
    constructorError({ url: URL, consistency: 'strong' });
    constructorError({ url: URL, timeoutMs: 0 });
    constructorError({ url: URL, timeoutMs: 1.5 });
    constructorError({ url: URL, token: '' });
    constructorError({ url: URL, token: 'a\r\nX-Injected: 1' });
    constructorError({ url: URL, headers: { 'bad name': 'v' } });
    constructorError({ url: URL, headers: { 'x-ok': 'line\nbreak' } });
  });
});

describe('encodeKey', () => {
  it('encodes the whole key as one path segment', () => {
    expect(encodeKey('a/b/c')).toBe('a%2Fb%2Fc');
    expect(encodeKey('a b?c#d%')).toBe('a%20b%3Fc%23d%25');
    expect(encodeKey('ключ')).toBe('%D0%BA%D0%BB%D1%8E%D1%87');
    expect(encodeKey('.hidden')).toBe('.hidden');
    expect(decodeURIComponent(encodeKey('a/../b'))).toBe('a/../b');
  });

  it('refuses keys that cannot be sent', () => {
    expect(() => encodeKey('')).toThrow('must not be empty');
    expect(() => encodeKey('.')).toThrow('cannot be addressed');
    expect(() => encodeKey('..')).toThrow('cannot be addressed');
    expect(() => encodeKey('a\uD800')).toThrow('lone surrogate');
    expect(() => encodeKey(42)).toThrow('key must be a string');
  });
});

describe('data calls refuse bad input without a network call', () => {
  const client = new KeyValueStoreClient(URL);
  const notAString = 7 as unknown as string;

  it.each([
    ['get', () => client.get('')],
    ['getBytes', () => client.getBytes('')],
    ['getEntry', () => client.getEntry('')],
    ['put', () => client.put('', 'v')],
    ['putEntry', () => client.putEntry('', 'v')],
    ['delete', () => client.delete('')],
    ['deleteEntry', () => client.deleteEntry('')],
  ])('%s refuses an empty key', async (_name, call) => {
    expect((await localError(call())).message).toBe('key must not be empty');
  });

  it.each([
    ['get', () => client.get(notAString)],
    ['getEntry', () => client.getEntry(notAString)],
    ['put', () => client.put(notAString, 'v')],
    ['delete', () => client.delete(notAString)],
  ])('%s refuses a key that is not a string', async (_name, call) => {
    expect((await localError(call())).message).toBe('key must be a string, got number');
  });

  it('refuses a value that is neither a string nor bytes', async () => {
    await localError(client.put('k', 5 as unknown as string));
    await localError(client.putEntry('k', null as unknown as string));
  });

  it.each([0, -1, 1.5, Number.NaN, Infinity])('refuses ttlSeconds %p', async (ttl) => {
    expect((await localError(client.putEntry('k', 'v', { ttlSeconds: ttl }))).message).toContain(
      'ttlSeconds',
    );
  });

  it('refuses a bad consistency or request id per call', async () => {
    const strong = { consistency: 'strong' as unknown as 'one' };
    expect((await localError(client.get('k', strong))).message).toContain('one, quorum, all');
    await localError(client.deleteEntry('k', strong));
    await localError(client.putEntry('k', 'v', { requestId: 'a\nb' }));
  });
});

describe('KvClientError', () => {
  it('carries the code, status and request context', () => {
    const cause = new Error('inner');
    const err = new KvClientError('unavailable', 'not enough replicas', {
      status: 503,
      method: 'PUT',
      url: 'http://h/v1/kv/k',
      requestId: 'r1',
      retryAfterSeconds: 1,
      cause,
    });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('KvClientError');
    expect(err).toMatchObject({
      code: 'unavailable',
      status: 503,
      method: 'PUT',
      url: 'http://h/v1/kv/k',
      requestId: 'r1',
      retryAfterSeconds: 1,
      message: 'not enough replicas',
    });
    expect(err.cause).toBe(cause);
  });
});

describe('parseClusterInfo', () => {
  const info: ClusterInfo = {
    cluster: 'c1',
    epoch: 3,
    partitionCount: 2,
    replicationFactor: 2,
    nodes: [
      { id: 'n1', address: '127.0.0.1:7001', zone: 'a', status: 'up', partitions: 2 },
      { id: 'n2', address: '127.0.0.1:7002', status: 'down', partitions: 2 },
    ],
    partitions: [
      ['n1', 'n2'],
      ['n2', 'n1'],
    ],
    moves: [{ partition: 1, from: 'n2', to: 'n3' }],
  };

  it('accepts the gateway shape', () => {
    expect(parseClusterInfo(JSON.parse(JSON.stringify(info)))).toEqual(info);
  });

  it.each([
    ['not an object', []],
    ['no epoch', { ...info, epoch: undefined }],
    ['bad node status', { ...info, nodes: [{ ...info.nodes[0], status: 'maybe' }] }],
    ['bad partition', { ...info, partitions: [[1]] }],
    ['bad move', { ...info, moves: [{ partition: 'x', from: 'a', to: 'b' }] }],
  ])('refuses %s as bad_response', (_what, body) => {
    expect(() => parseClusterInfo(body)).toThrow(expect.objectContaining({ code: 'bad_response' }));
  });
});
