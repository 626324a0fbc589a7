import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Throwaway certificates for the TLS suites, made with the `openssl` command
 * (e2e/ensure-test-tools.sh installs it) in a temp dir: a CA, and server
 * certificates it signs for 127.0.0.1 and localhost. Nothing here is a secret:
 * the keys live as long as the test run.
 */

export interface TestCa {
  readonly name: string;
  /** PEM certificate of the CA: what a client passes as `ca` / `--ca` */
  readonly certFile: string;
  readonly keyFile: string;
}

export interface ServerCertificate {
  /** PEM leaf certificate for IP:127.0.0.1 and DNS:localhost, signed by `ca` */
  readonly certFile: string;
  readonly keyFile: string;
  readonly ca: TestCa;
}

export function certificateDir(prefix = 'tls'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `kvstore-${prefix}-`));
}

function openssl(args: readonly string[], cwd: string): void {
  try {
    execFileSync('openssl', [...args], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') {
      throw new Error('the TLS tests need the openssl command on PATH (run bash e2e/ensure-test-tools.sh)');
    }
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() ?? e.message}`, { cause: err });
  }
}

/** A new self-signed CA (P-256 key, valid 2 days) in `dir`, its files named after `name`. */
export function makeTestCa(dir: string, name: string): TestCa {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '2',
      '-subj',
      `/CN=kvstore test ${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return { name, certFile, keyFile };
}

/**
 * A server certificate signed by `ca`, by default for 127.0.0.1 and localhost, as a client verifies it;
 * `subjectAltNames` in openssl's form (`DNS:kv.example.com`) for another.
 */
export function issueServerCertificate(
  ca: TestCa,
  dir: string,
  name: string,
  subjectAltNames = 'IP:127.0.0.1,DNS:localhost',
): ServerCertificate {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(
    ext,
    [
      `subjectAltName=${subjectAltNames}`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      '',
    ].join('\n'),
  );
  openssl(
    [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      csr,
      '-subj',
      '/CN=localhost',
    ],
    dir,
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.certFile,
      '-CAkey',
      ca.keyFile,
      // A random serial, so no serial file is left behind and two certs never share one.
      '-set_serial',
      `0x${Date.now().toString(16)}${Math.floor(Math.random() * 0xffffff).toString(16)}`,
      '-days',
      '2',
      '-extfile',
      ext,
      '-out',
      certFile,
    ],
    dir,
  );
  return { certFile, keyFile, ca };
}
