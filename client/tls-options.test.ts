import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KeyValueStoreClient, KvClientError } from './index';
import { readCaFile } from './kvctl-command';
import { parseKvctlArgs, runKvctl } from './kvctl';
import { parseRepairArgs, runRepair } from './repair-command';
import { parseScaleArgs, runScale } from './scale-command';
import { parseStatusArgs, runStatus } from './status-command';
import { parseVerifyArgs, runVerify } from './verify-command';

/**
 * The `ca` option of the client and kvctl's `--ca FILE` / $KVSTORE_CA, checked locally:
 * nothing here opens a connection (e2e/tls.test.ts talks to a real HTTPS gateway).
 */

/** A throwaway self-signed CA certificate (public half only), parsed, never trusted by anything. */
const CA_PEM = `-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUTY7QTwSJR7UmZzQY97CsdcptD84wCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUa3ZzdG9yZSB1bml0IHRlc3QgQ0EwHhcNMjYxMTI2MDM0ODIx
WhcNMjYxMTI3MDM0ODIxWjAfMR0wGwYDVQQDDBRrdnN0b3JlIHVuaXQgdGVzdCBD
QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDKC1len9PQPCs7KbDZiXSSBhmk3
qlCuOrwLLey2wc1JabDtvjo+hN62Mx25TxmLKBJ8t/aP/V5jF/1TxermdjWjUzBR
MB0GA1UdDgQWBBRgImY8pbgOb5eT8JKjWoSXm+DPjjAfBgNVHSMEGDAWgBRgImY8
pbgOb5eT8JKjWoSXm+DPjjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCIDkrghspqW8wJ3QHxE10kclD2CI5jIRFepeshF2XRALdAiEA+D4M8BGuIaJc
0ZVCYmoah81ET06YaKVd2ugKKca9/Mg=
-----END CERTIFICATE-----
`;
const BROKEN_PEM = '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n';

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

let dir: string;
let caFile: string;
let notPemFile: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-ca-options-'));
  caFile = path.join(dir, 'ca.pem');
  fs.writeFileSync(caFile, CA_PEM);
  notPemFile = path.join(dir, 'key.pem');
  fs.writeFileSync(notPemFile, '-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n');
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

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

describe('kvctl --ca', () => {
  const env = {};

  it('is a global option of every command, defaulting to $KVSTORE_CA', () => {
    expect(parseKvctlArgs(['--ca', caFile, 'get', 'k'], env).caFile).toBe(caFile);
    expect(parseKvctlArgs(['get', 'k', '--ca', caFile], env).caFile).toBe(caFile);
    expect(parseKvctlArgs(['get', 'k'], { KVSTORE_CA: caFile }).caFile).toBe(caFile);
    expect(parseKvctlArgs(['--ca', 'flag.pem', 'get', 'k'], { KVSTORE_CA: caFile }).caFile).toBe('flag.pem');
    expect(parseKvctlArgs(['get', 'k'], { KVSTORE_CA: '' })).not.toHaveProperty('caFile');
    expect(parseStatusArgs(['--ca', caFile, 'status'], env).caFile).toBe(caFile);
    expect(parseRepairArgs(['repair', '--ca', caFile], env).caFile).toBe(caFile);
    expect(parseScaleArgs(['scale', '--nodes', '4', '--ca', caFile], env).caFile).toBe(caFile);
    expect(parseScaleArgs(['scale', '--nodes', '4'], { KVSTORE_CA: caFile }).caFile).toBe(caFile);
    expect(parseVerifyArgs(['--ca', caFile, 'verify', '--ops', '1'], env).caFile).toBe(caFile);
  });

  it('reads the file as PEM, and names it when it cannot be used', () => {
    expect(readCaFile(caFile)?.toString('utf8')).toBe(CA_PEM);
    expect(readCaFile(undefined)).toBeUndefined();
    expect(() => readCaFile(path.join(dir, 'missing.pem'))).toThrow(
      /--ca .*missing\.pem: cannot read it \(ENOENT\)/,
    );
    expect(() => readCaFile(dir)).toThrow(/cannot read it \(EISDIR\)/);
    expect(() => readCaFile(notPemFile)).toThrow(/key\.pem: not a PEM certificate/);
  });

  type Runner = (
    argv: string[],
    io: {
      stdout: { write(c: string): unknown };
      stderr: { write(c: string): unknown };
      env: Record<string, string>;
    },
  ) => Promise<number>;
  const runners: [string, Runner, string[]][] = [
    [
      'get',
      (argv, io) => runKvctl(argv, { ...io, stdin: (async function* () {})() }),
      ['--url', 'https://127.0.0.1:9', 'get', 'k'],
    ],
    ['status', runStatus, ['--url', 'https://127.0.0.1:9', 'status']],
    ['repair', runRepair, ['--url', 'https://127.0.0.1:9', 'repair']],
    ['scale', runScale, ['--admin-url', 'https://127.0.0.1:9', 'scale', '--nodes', '4']],
    ['verify', runVerify, ['--url', 'https://127.0.0.1:9', 'verify', '--ops', '1']],
  ];

  it.each(runners)(
    '%s: an unreadable or non-PEM file is a usage error, exit 2, nothing sent',
    async (_n, run, argv) => {
      for (const [file, message] of [
        [path.join(dir, 'missing.pem'), /cannot read it \(ENOENT\)/],
        [notPemFile, /not a PEM certificate/],
      ] as const) {
        let stdout = '';
        let stderr = '';
        const code = await run([...argv, '--ca', file], {
          stdout: { write: (c: string) => (stdout += c) },
          stderr: { write: (c: string) => (stderr += c) },
          env: {},
        });
        expect(code).toBe(2);
        expect(stdout).toBe('');
        expect(stderr).toMatch(/^kvctl: usage: --ca /);
        expect(stderr).toMatch(message);
      }
    },
  );

  it('a malformed certificate in the file is refused by the client: exit 2', async () => {
    const broken = path.join(dir, 'broken.pem');
    fs.writeFileSync(broken, BROKEN_PEM);
    let stderr = '';
    const code = await runKvctl(['--url', 'https://127.0.0.1:9', '--ca', broken, 'get', 'k'], {
      stdout: { write: () => undefined },
      stderr: { write: (c: string) => (stderr += c) },
      stdin: (async function* () {})(),
      env: {},
    });
    expect(code).toBe(2);
    expect(stderr).toMatch(/kvctl: bad_request: ca holds a malformed certificate/);
  });
});
