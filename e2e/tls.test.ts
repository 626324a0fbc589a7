import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import tls from 'node:tls';
import { KeyValueStoreClient, KvClientError } from '../client';
import { startTestCluster, type TestCluster } from './cluster-harness';
import {
  certificateDir,
  issueServerCertificate,
  makeTestCa,
  type ServerCertificate,
  type TestCa,
} from './test-certificates';
import { waitFor } from './wait-for';

/**
 * TLS on the public listener: a real local cluster whose gateway serves HTTPS
 * with a throwaway CA's certificate; the client and kvctl trust it with `ca` /
 * `--ca`, everyone else is refused; renewed files are picked up while serving.
 */
jest.setTimeout(120_000);

const KVCTL = path.resolve(__dirname, '..', 'dist', 'kvctl', 'main.js');
const GATEWAY = path.resolve(__dirname, '..', 'dist', 'gateway', 'main.js');
/** short, so rotation shows within a test; the gateway's default is 30 s */
const RELOAD_MS = 100;

interface Exit {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a dist/ entry point with node; never rejects, the exit status is in the result. */
function runNode(args: string[], env: Record<string, string> = {}): Promise<Exit> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { env: { ...process.env, KVSTORE_URL: '', KVSTORE_CA: '', ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function rejection(p: Promise<unknown>): Promise<KvClientError> {
  const err: unknown = await p.then(
    () => new Error('expected a rejection'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KvClientError);
  return err as KvClientError;
}

/** Replaces the served files the way a Secret update does: new content under the same paths, each renamed in. */
function install(cert: ServerCertificate, into: { certFile: string; keyFile: string }): void {
  for (const [from, to] of [
    [cert.keyFile, into.keyFile],
    [cert.certFile, into.certFile],
  ] as const) {
    fs.copyFileSync(from, `${to}.tmp`);
    fs.renameSync(`${to}.tmp`, to);
  }
}

let dir: string;
let ca1: TestCa;
let ca2: TestCa;
let other: TestCa;
let served: { certFile: string; keyFile: string };
let tc: TestCluster;

beforeAll(async () => {
  dir = certificateDir();
  ca1 = makeTestCa(dir, 'ca1');
  ca2 = makeTestCa(dir, 'ca2');
  other = makeTestCa(dir, 'other-ca');
  // The paths the gateway is given; rotation writes new content under them.
  served = { certFile: path.join(dir, 'tls.crt'), keyFile: path.join(dir, 'tls.key') };
  install(issueServerCertificate(ca1, dir, 'server1'), served);
  tc = await startTestCluster({ tls: served, gatewayArgs: ['--tls-reload-ms', String(RELOAD_MS)] });
});

afterAll(async () => {
  await tc?.stop(true);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('the gateway serves HTTPS', () => {
  it('is reached at an https URL by a client given the CA', async () => {
    expect(tc.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const kv = new KeyValueStoreClient({ url: tc.url, ca: fs.readFileSync(ca1.certFile) });
    try {
      await kv.put('tls/k', 'over tls');
      expect(await kv.get('tls/k')).toBe('over tls');
      expect((await kv.cluster()).nodes).toHaveLength(3);
    } finally {
      await kv.close();
    }
  });

  it('refuses a client without the CA, or with another CA, as a TLS verification failure', async () => {
    const noCa = await rejection(new KeyValueStoreClient(tc.url).get('tls/k'));
    expect(noCa.code).toBe('tls_verification_failed');
    expect(noCa.message).toMatch(/TLS verification failed/);
    const wrong = new KeyValueStoreClient({ url: tc.url, ca: fs.readFileSync(other.certFile) });
    const wrongCa = await rejection(wrong.get('tls/k'));
    expect(wrongCa.code).toBe('tls_verification_failed');
    expect(wrongCa.status).toBeUndefined();
  });

  it('checks the host name: a certificate for 127.0.0.1 and localhost answers on localhost too', async () => {
    const kv = new KeyValueStoreClient({
      url: tc.url.replace('127.0.0.1', 'localhost'),
      ca: fs.readFileSync(ca1.certFile, 'utf8'),
    });
    try {
      expect(await kv.get('tls/k')).toBe('over tls');
    } finally {
      await kv.close();
    }
  });

  it('does not serve data over plain http on the TLS port', async () => {
    const answer = await new Promise<{ status?: number; body: string; error?: string }>((resolve) => {
      const req = http.get(`http://127.0.0.1:${tc.port}/v1/kv/tls/k`, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, body }));
        res.on('error', (err) => resolve({ status: res.statusCode, body, error: err.message }));
      });
      req.on('error', (err) => resolve({ body: '', error: err.message }));
    });
    expect(answer.body).not.toContain('over tls');
    if (answer.status !== undefined) expect(answer.status).toBeGreaterThanOrEqual(400);
    // The client names a plain-http attempt as unreachable, not as data.
    const plain = await rejection(new KeyValueStoreClient(`http://127.0.0.1:${tc.port}`).get('tls/k'));
    expect(plain.code).not.toBe('not_found');
  });

  it('refuses a client that offers only TLS 1.1 or older, with a protocol version alert', async () => {
    const code = await new Promise<string>((resolve) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port: tc.port,
        ca: fs.readFileSync(ca1.certFile),
        minVersion: 'TLSv1',
        maxVersion: 'TLSv1.1',
        // Lets this client offer the old versions at all; the server's refusal is what is checked.
        ciphers: 'DEFAULT@SECLEVEL=0',
      });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve(`connected with ${String(socket.getProtocol())}`);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    expect(code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
  });
});

describe('kvctl --ca', () => {
  it('puts and gets over https with --ca, and with $KVSTORE_CA', async () => {
    const put = await runNode([KVCTL, '--url', tc.url, '--ca', ca1.certFile, 'put', 'tls/cli', 'cli value']);
    expect(put).toMatchObject({ code: 0, stderr: '' });
    const get = await runNode([KVCTL, '--url', tc.url, '--ca', ca1.certFile, 'get', 'tls/cli']);
    expect(get).toEqual({ code: 0, stdout: 'cli value', stderr: '' });
    const env = await runNode([KVCTL, 'get', 'tls/cli'], { KVSTORE_URL: tc.url, KVSTORE_CA: ca1.certFile });
    expect(env).toEqual({ code: 0, stdout: 'cli value', stderr: '' });
  });

  it('runs the gateway subcommands over https: cluster, status, repair', async () => {
    const cluster = await runNode([KVCTL, '--url', tc.url, '--ca', ca1.certFile, 'cluster', '--json']);
    expect(cluster.code).toBe(0);
    expect((JSON.parse(cluster.stdout) as { nodes: unknown[] }).nodes).toHaveLength(3);
    const status = await runNode([KVCTL, '--url', tc.url, '--ca', ca1.certFile, 'status', '--json']);
    expect(status.stderr).toBe('');
    expect([0, 1]).toContain(status.code);
    const repair = await runNode([KVCTL, '--url', tc.url, '--ca', ca1.certFile, 'repair']);
    expect(repair).toMatchObject({ code: 0 });
    expect(repair.stdout).toMatch(/repair started on 3 of 3 nodes/);
  });

  it('fails readably, exit 3, without --ca', async () => {
    const r = await runNode([KVCTL, '--url', tc.url, 'get', 'tls/cli']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^kvctl: tls_verification_failed: TLS verification failed for https:\/\//);
    expect(r.stderr).toMatch(/--ca FILE/);
    const status = await runNode([KVCTL, '--url', tc.url, 'status']);
    expect(status.code).toBe(3);
    expect(status.stderr).toMatch(/tls_verification_failed/);
  });

  it('refuses an unreadable or non-PEM --ca file as a usage error, exit 2', async () => {
    const missing = path.join(dir, 'no-such-ca.pem');
    const r = await runNode([KVCTL, '--url', tc.url, '--ca', missing, 'get', 'tls/cli']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`kvctl: usage: --ca ${missing}: cannot read it (ENOENT)`);
    const notPem = await runNode([KVCTL, '--url', tc.url, '--ca', served.keyFile, 'status']);
    expect(notPem.code).toBe(2);
    expect(notPem.stderr).toMatch(/not a PEM certificate/);
  });
});

describe('the gateway command line', () => {
  it('wants --tls-cert and --tls-key together, and a pair that matches: else exit 2 before starting', async () => {
    const base = [GATEWAY, '--port', '0', '--no-auth', '--metadata-file', path.join(dir, 'none.json')];
    const onlyCert = await runNode([...base, '--tls-cert', served.certFile]);
    expect(onlyCert.code).toBe(2);
    expect(onlyCert.stderr).toMatch(/--tls-cert and --tls-key go together/);
    const reloadAlone = await runNode([...base, '--tls-reload-ms', '100']);
    expect(reloadAlone.code).toBe(2);
    const mismatched = await runNode([
      ...base,
      '--tls-cert',
      served.certFile,
      '--tls-key',
      issueServerCertificate(ca1, dir, 'unrelated').keyFile,
    ]);
    expect(mismatched.code).toBe(2);
    expect(mismatched.stderr).toMatch(/is not the private key of/);
    const missing = await runNode([
      ...base,
      '--tls-cert',
      path.join(dir, 'nope.crt'),
      '--tls-key',
      served.keyFile,
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the TLS certificate file/);
  });
});

describe('the local launcher', () => {
  it('sees its gateway ready with a CA-signed certificate that names only the public host', async () => {
    const publicOnly = issueServerCertificate(ca1, dir, 'public-only', 'DNS:kv.example.com');
    const small = await startTestCluster({
      nodes: 1,
      replicationFactor: 1,
      partitionCount: 8,
      tls: { certFile: publicOnly.certFile, keyFile: publicOnly.keyFile },
    });
    try {
      expect(small.url).toMatch(/^https:/);
      // Clients still check the name: 127.0.0.1 is not one the certificate lists.
      const kv = new KeyValueStoreClient({ url: small.url, ca: fs.readFileSync(ca1.certFile) });
      const err = await rejection(kv.get('k'));
      expect(err.code).toBe('tls_verification_failed');
      expect(err.message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID.*not for this host/);
    } finally {
      await small.stop(true);
    }
  });
});

describe('certificate rotation', () => {
  it('serves a renewed certificate from a new CA without a restart, and keeps it when a bad pair follows', async () => {
    const gatewayPid = tc.cluster.pid('gateway');
    install(issueServerCertificate(ca2, dir, 'server2'), served);
    // Each attempt is a new connection (a failed handshake leaves none), so it sees the certificate now served.
    await waitFor('the gateway serves the certificate of the new CA', async () => {
      const kv = new KeyValueStoreClient({ url: tc.url, ca: fs.readFileSync(ca2.certFile) });
      try {
        return (await kv.get('tls/k')) === 'over tls';
      } catch (err) {
        if (err instanceof KvClientError && err.code === 'tls_verification_failed') return false;
        throw err;
      } finally {
        await kv.close();
      }
    });
    expect(tc.cluster.pid('gateway')).toBe(gatewayPid);
    const oldCa = await rejection(
      new KeyValueStoreClient({ url: tc.url, ca: fs.readFileSync(ca1.certFile) }).get('tls/k'),
    );
    expect(oldCa.code).toBe('tls_verification_failed');

    // A renewal gone wrong (the key of another certificate): logged, and the pair in use stays.
    const log = path.join(tc.cluster.logDir, 'gateway.log');
    fs.copyFileSync(issueServerCertificate(ca1, dir, 'server3').keyFile, served.keyFile);
    await waitFor('the gateway logs the refused pair', async () =>
      fs.readFileSync(log, 'utf8').includes('TLS certificate not reloaded'),
    );
    const kv = new KeyValueStoreClient({ url: tc.url, ca: fs.readFileSync(ca2.certFile) });
    try {
      expect(await kv.get('tls/k')).toBe('over tls');
    } finally {
      await kv.close();
    }
  });
});
