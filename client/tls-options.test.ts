import { BROKEN_PEM, CA_PEM } from './ca.fixtures';
import { KeyValueStoreClient, KvClientError } from './index';

/**
 * The client's `ca` option, checked locally (kvctl/ca-option.test.ts: kvctl's `--ca FILE`):
 * nothing here opens a connection (e2e/tls.test.ts talks to a real HTTPS gateway).
 */

function constructorError(ca: unknown): KvClientError {
  try {
    new KeyValueStoreClient({ url: 'https://127.0.0.1:9', ca: ca as string });
  } catch (err) {
    expect(err).toBeInstanceOf(KvClientError);
    expect((err as KvClientError).code).toBe('bad_request');
    expect((err as KvClientError).status).toBeUndefined();
    return err as KvClientError;
  }
  throw new Error(`expected the constructor to refuse ca ${String(ca)}`);
}

describe('KeyValueStoreClient ca option', () => {
  it('accepts PEM text as a string or a Buffer, one certificate or a bundle', async () => {
    for (const ca of [CA_PEM, Buffer.from(CA_PEM), `${CA_PEM}${CA_PEM}`]) {
      const kv = new KeyValueStoreClient({ url: 'https://kv.example.com', ca });
      expect(kv.url).toBe('https://kv.example.com');
      await kv.close();
    }
  });

  it('accepts a ca with an http URL, where it is not used', async () => {
    const kv = new KeyValueStoreClient({ url: 'http://127.0.0.1:3100', ca: CA_PEM });
    await expect(kv.close()).resolves.toBeUndefined();
  });

  it.each([
    ['a number', 42, /ca must be PEM text/],
    ['an object', { pem: CA_PEM }, /ca must be PEM text/],
    ['empty text', '', /ca is not a PEM certificate/],
    ['a file path instead of its content', '/etc/ssl/ca.pem', /ca is not a PEM certificate/],
    ['a private key', '-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----', /not a PEM certificate/],
    ['a block that does not parse', BROKEN_PEM, /ca holds a malformed certificate/],
  ])('refuses %s with a local bad_request', (_what, ca, message) => {
    expect(constructorError(ca).message).toMatch(message);
  });

  it('says which certificate of a bundle is malformed', () => {
    expect(constructorError(`${CA_PEM}${BROKEN_PEM}`).message).toMatch(/certificate 2 of 2/);
  });
});
