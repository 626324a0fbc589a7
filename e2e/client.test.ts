import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { KeyValueStoreClient, KvClientError } from '../client';
import { startTestCluster, type TestCluster } from './cluster-harness';

/** The TypeScript client and the kvctl binary against a real local cluster. */
jest.setTimeout(60_000);

const run = promisify(execFile);
const KVCTL = path.resolve(__dirname, '..', 'dist', 'kvctl', 'main.js');

let tc: TestCluster;

beforeAll(async () => {
  tc = await startTestCluster();
});

afterAll(async () => {
  await tc?.stop(true);
});

describe('KeyValueStoreClient', () => {
  it('mirrors the original client: get, put, delete', async () => {
    const kv = new KeyValueStoreClient(tc.url);
    expect(await kv.get('client/none')).toBeNull();
    await kv.put('client/k', 'héllo wörld');
    expect(await kv.get('client/k')).toBe('héllo wörld');
    await kv.delete('client/k');
    expect(await kv.get('client/k')).toBeNull();
  });

  it('reads and writes bytes with versions, ttl and consistency', async () => {
    const kv = new KeyValueStoreClient({ url: tc.url, consistency: 'all' });
    const bytes = Buffer.from([0, 255, 1, 254, 10, 13]);
    const w = await kv.putEntry('client/bytes', bytes, { ttlSeconds: 3600 });
    const e = await kv.getEntry('client/bytes');
    expect(e?.value.equals(bytes)).toBe(true);
    expect(e?.version).toBe(w.version);
    const d = await kv.deleteEntry('client/bytes');
    expect(d.key).toBe('client/bytes');
    const info = await kv.cluster();
    expect(info.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3']);
    expect(await kv.health()).toBe(true);
  });

  it('surfaces server errors as typed KvClientError', async () => {
    const kv = new KeyValueStoreClient(tc.url);
    const err = await kv.put('x'.repeat(2000), 'v').catch((e: unknown) => e);
    // the client may refuse locally or the server answers 413; either way a typed error
    expect(err).toBeInstanceOf(KvClientError);
    const tooBig = await kv.put('client/big', Buffer.alloc(1024 * 1024 + 1)).catch((e: unknown) => e);
    expect(tooBig).toBeInstanceOf(KvClientError);
    expect((tooBig as KvClientError).status).toBe(413);
    const unreachable = new KeyValueStoreClient({ url: 'http://127.0.0.1:1', timeoutMs: 2000 });
    const down = await unreachable.get('k').catch((e: unknown) => e);
    expect((down as KvClientError).code).toBe('unreachable');
  });
});

describe('kvctl', () => {
  const kvctl = (...args: string[]) =>
    run(process.execPath, [KVCTL, '--url', tc.url, ...args], { encoding: 'buffer' });

  it('puts, gets, deletes and shows the cluster', async () => {
    const put = await kvctl('put', 'cli/key', 'cli value');
    expect(put.stdout.toString()).toMatch(/^\d+\.\d+\.gw-local\s*$/);
    const get = await kvctl('get', 'cli/key');
    expect(get.stdout.toString()).toBe('cli value');
    const cluster = await kvctl('cluster');
    expect(cluster.stdout.toString()).toMatch(/n1/);
    expect(cluster.stdout.toString()).toMatch(/epoch/i);
    const json = JSON.parse((await kvctl('cluster', '--json')).stdout.toString()) as { nodes: unknown[] };
    expect(json.nodes).toHaveLength(3);
    await kvctl('delete', 'cli/key');
    const missing = await kvctl('get', 'cli/key').catch((e: { code: number; stderr: Buffer }) => e);
    expect((missing as { code: number }).code).toBe(1);
  });

  it('reads a binary value from stdin and writes it back byte for byte', async () => {
    const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) % 256));
    await new Promise<void>((resolve, reject) => {
      const child = execFile(process.execPath, [KVCTL, '--url', tc.url, 'put', 'cli/bin', '-'], (err) =>
        err ? reject(err) : resolve(),
      );
      child.stdin?.end(bytes);
    });
    const get = await kvctl('get', 'cli/bin');
    expect(get.stdout.equals(bytes)).toBe(true);
  });

  it('exits 3 with a clear message when the gateway refuses', async () => {
    const res = await kvctl('put', 'k'.repeat(1025), 'v').catch((e: { code: number; stderr: Buffer }) => e);
    expect((res as { code: number }).code).toBe(3);
    expect((res as { stderr: Buffer }).stderr.toString()).toMatch(/kvctl: payload_too_large/);
  });
});
