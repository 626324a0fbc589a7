import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BROKEN_PEM, CA_PEM } from '../client/ca.fixtures';
import { argsOf } from './kvctl.fixtures';
import { runKvctl } from './main';
import { readCaFile } from './options';

/**
 * kvctl's `--ca FILE` / $KVSTORE_CA, checked locally: nothing here opens a connection
 * (e2e/tls.test.ts talks to a real HTTPS gateway).
 */

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

describe('kvctl --ca', () => {
  const env = {};

  it('is a global option of every command, defaulting to $KVSTORE_CA', () => {
    expect(argsOf('get', ['--ca', caFile, 'get', 'k'], env).caFile).toBe(caFile);
    expect(argsOf('get', ['get', 'k', '--ca', caFile], env).caFile).toBe(caFile);
    expect(argsOf('get', ['get', 'k'], { KVSTORE_CA: caFile }).caFile).toBe(caFile);
    expect(argsOf('get', ['--ca', 'flag.pem', 'get', 'k'], { KVSTORE_CA: caFile }).caFile).toBe('flag.pem');
    expect(argsOf('get', ['get', 'k'], { KVSTORE_CA: '' })).not.toHaveProperty('caFile');
    expect(argsOf('status', ['--ca', caFile, 'status'], env).caFile).toBe(caFile);
    expect(argsOf('repair', ['repair', '--ca', caFile], env).caFile).toBe(caFile);
    expect(argsOf('scale', ['scale', '--nodes', '4', '--ca', caFile], env).caFile).toBe(caFile);
    expect(argsOf('scale', ['scale', '--nodes', '4'], { KVSTORE_CA: caFile }).caFile).toBe(caFile);
    expect(argsOf('verify', ['--ca', caFile, 'verify', '--ops', '1'], env).caFile).toBe(caFile);
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
    ['status', runKvctl, ['--url', 'https://127.0.0.1:9', 'status']],
    ['repair', runKvctl, ['--url', 'https://127.0.0.1:9', 'repair']],
    ['scale', runKvctl, ['scale', '--admin-url', 'https://127.0.0.1:9', '--nodes', '4']],
    ['verify', runKvctl, ['--url', 'https://127.0.0.1:9', 'verify', '--ops', '1']],
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
