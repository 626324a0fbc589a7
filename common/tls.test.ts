import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from './cli-options';
import { loadTlsPair, TlsConfigError, tlsFromFlags } from './tls';

/** The flag rules and file errors; serving, renewal and refused pairs run against real certificates in e2e/tls.test.ts. */
describe('gateway TLS flags', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-gateway-tls-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('is off with neither file', () => {
    expect(tlsFromFlags(undefined, undefined, undefined)).toBeUndefined();
  });

  it.each([
    ['a cert without a key', 'c.pem', undefined, undefined, /--tls-cert and --tls-key go together/],
    ['a key without a cert', undefined, 'k.pem', undefined, /--tls-cert and --tls-key go together/],
    ['an empty path', '', 'k.pem', undefined, /--tls-cert and --tls-key go together/],
    ['a reload interval without TLS', undefined, undefined, 100, /--tls-reload-ms needs --tls-cert/],
  ])('refuses %s as a usage error', (_what, cert, key, reloadMs, message) => {
    expect(() => tlsFromFlags(cert, key, reloadMs)).toThrow(UsageError);
    expect(() => tlsFromFlags(cert, key, reloadMs)).toThrow(message);
  });

  it('names the file it cannot read or parse', () => {
    const missing = path.join(dir, 'missing.crt');
    expect(() => tlsFromFlags(missing, missing, undefined)).toThrow(
      new RegExp(`cannot read the TLS certificate file ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
    );
    const junk = path.join(dir, 'junk.crt');
    fs.writeFileSync(junk, 'not pem');
    const err: unknown = (() => {
      try {
        loadTlsPair({ certFile: junk, keyFile: junk });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(TlsConfigError);
    expect((err as TlsConfigError).code).toBe('tls_config');
    expect((err as TlsConfigError).message).toMatch(/junk\.crt is not a PEM certificate/);
  });
});
