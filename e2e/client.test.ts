import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { KeyValueStoreClient, KvClientError } from '../client';
import pino from 'pino';
import { IDENTITY_HEADER } from '../common/version';
import { RunnerAdminServer } from '../local/admin-server';
import { adminPort } from '../local/node-ports';
import { startTestCluster, type TestCluster } from './cluster-harness';

/** The TypeScript client and the kvctl binary against a real local cluster. */
jest.setTimeout(60_000);

const run = promisify(execFile);
const KVCTL = path.resolve(__dirname, '..', 'dist', 'kvctl', 'main.js');

let tc: TestCluster;

/** The built kvctl with `input` on its stdin: its exit code and output. */
function kvctlWithInput(
  args: string[],
  input: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [KVCTL, '--url', tc.url, ...args], (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code, stdout, stderr });
    });
    child.stdin?.end(input);
  });
}

// A batch body limit of 64 KiB (default 16 MiB), so a test can go over it cheaply.
const MAX_BATCH_BYTES = 64 * 1024;

beforeAll(async () => {
  tc = await startTestCluster({ gatewayArgs: ['--max-batch-bytes', String(MAX_BATCH_BYTES)] });
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

  it('stores a content type with the value and gives it back', async () => {
    const kv = new KeyValueStoreClient(tc.url);
    await kv.putEntry('client/doc', JSON.stringify({ a: 1 }), { contentType: 'application/json' });
    expect(await kv.getEntry('client/doc')).toMatchObject({ contentType: 'application/json' });
    await kv.putEntry('client/raw', Buffer.from([1, 2]));
    expect((await kv.getEntry('client/raw'))?.contentType).toBe('application/octet-stream');
    await expect(kv.putEntry('client/doc', 'x', { contentType: 'not a type' })).rejects.toMatchObject({
      code: 'bad_request',
    });
    expect((await kv.getEntry('client/doc'))?.value.toString()).toBe('{"a":1}');
    // kvctl put --content-type, the built binary.
    await run(process.execPath, [
      KVCTL,
      '--url',
      tc.url,
      'put',
      'client/csv',
      'a,b',
      '--content-type',
      'text/csv',
    ]);
    expect(await kv.getEntry('client/csv')).toMatchObject({ contentType: 'text/csv' });
  });

  it('runs a batch: results in order, values as bytes, each operation its own status', async () => {
    const kv = new KeyValueStoreClient({ url: tc.url, consistency: 'all' });
    const results = await kv.batch([
      { op: 'put', key: 'client/b1', value: 'one', contentType: 'text/plain' },
      { op: 'put', key: 'client/b2', value: Buffer.from([0, 1, 2]), ttlSeconds: 600 },
      { op: 'get', key: 'client/b1' },
      { op: 'get', key: 'client/none' },
      { op: 'put', key: '', value: 'x' },
    ]);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 404, 400]);
    expect(results[2]).toMatchObject({ key: 'client/b1', contentType: 'text/plain' });
    expect(results[2]?.value?.toString()).toBe('one');
    expect(results[4]?.error?.message).toMatch(/^operations\[4\]: /);
    expect((await kv.getBytes('client/b2'))?.equals(Buffer.from([0, 1, 2]))).toBe(true);
  });

  it("refuses a batch over the gateway's --max-batch-bytes with payload_too_large, storing none of it", async () => {
    const kv = new KeyValueStoreClient({ url: tc.url, consistency: 'all' });
    // 60 KiB of values, about 80 KiB once base64 in JSON: over the limit, though each value is small.
    const puts = Array.from({ length: 20 }, (_, i) => ({
      op: 'put' as const,
      key: `client/big/${i}`,
      value: Buffer.alloc(3 * 1024, i),
    }));
    const err = await kv.batch(puts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KvClientError);
    expect(err).toMatchObject({ status: 413, code: 'payload_too_large' });
    for (const p of puts) expect(await kv.getBytes(p.key)).toBeNull();
    // Under it, the same operations go through.
    expect((await kv.batch(puts.slice(0, 10))).map((r) => r.status)).toEqual(Array(10).fill(200));
  });

  it('lists keys in byte order as an async iterator, a page at a time, and one page with its cursor', async () => {
    const kv = new KeyValueStoreClient({ url: tc.url, consistency: 'all' });
    const keys = Array.from({ length: 25 }, (_, i) => `client/ls/${String(i).padStart(2, '0')}`);
    const puts = keys.map((key) => ({
      op: 'put' as const,
      key,
      value: `v${key}`,
      contentType: 'text/plain',
    }));
    expect((await kv.batch(puts)).every((r) => r.status === 200)).toBe(true);
    await kv.delete('client/ls/07');
    const listed = [];
    for await (const e of kv.list({ prefix: 'client/ls/', pageSize: 4 })) listed.push(e);
    expect(listed.map((e) => e.key)).toEqual(keys.filter((k) => k !== 'client/ls/07'));
    expect(listed[0]).toEqual({
      key: keys[0],
      version: (await kv.getEntry(keys[0]))?.version,
      value: Buffer.from(`v${keys[0]}`),
      contentType: 'text/plain',
    });
    const page = await kv.listPage({ start: keys[3], end: keys[6], keysOnly: true });
    expect(page.entries.map((e) => [e.key, e.value])).toEqual([
      [keys[3], undefined],
      [keys[4], undefined],
      [keys[5], undefined],
    ]);
    expect(page.cursor).toBeUndefined();
    const first = await kv.listPage({ prefix: 'client/ls/', pageSize: 2 });
    expect(first.cursor).toEqual(expect.any(String));
    const second = await kv.listPage({ prefix: 'client/ls/', pageSize: 2, cursor: first.cursor });
    expect(second.entries.map((e) => e.key)).toEqual(keys.slice(2, 4));
    await expect(kv.listPage({ prefix: 'a', start: 'b' })).rejects.toMatchObject({ status: 400 });
  });

  it('kvctl ls prints keys, values, or JSON lines, paged, up to --limit', async () => {
    const kv = new KeyValueStoreClient({ url: tc.url, consistency: 'all' });
    for (const [k, v] of [
      ['cli/ls/a', 'alpha'],
      ['cli/ls/b', 'beta'],
      ['cli/ls/c', 'gamma'],
    ])
      await kv.put(k, v);
    await kv.put('cli/ls/bin', Buffer.from([0xff, 0x00]));
    const plain = await kvctlWithInput(['ls', 'cli/ls/'], '');
    expect([plain.code, plain.stdout]).toEqual([0, 'cli/ls/a\ncli/ls/b\ncli/ls/bin\ncli/ls/c\n']);
    const values = await kvctlWithInput(['ls', 'cli/ls/', '--values', '--limit', '3'], '');
    expect(values.stdout).toBe('cli/ls/a\t"alpha"\ncli/ls/b\t"beta"\ncli/ls/bin\tbase64:/wA=\n');
    const json = await kvctlWithInput(
      ['ls', '--start', 'cli/ls/b', '--end', 'cli/ls/c', '--values', '-o', 'json'],
      '',
    );
    expect(
      json.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual([
      {
        key: 'cli/ls/b',
        version: expect.any(String),
        value: 'beta',
        contentType: 'application/octet-stream',
      },
      {
        key: 'cli/ls/bin',
        version: expect.any(String),
        valueBase64: '/wA=',
        contentType: 'application/octet-stream',
      },
    ]);
    const both = await kvctlWithInput(['ls', 'cli/', '--start', 'a'], '');
    expect([both.code, both.stderr]).toEqual([2, expect.stringMatching(/PREFIX or --start\/--end/)]);
  });

  it('kvctl batch reads JSON lines, prints one result a line, exits 3 when one failed', async () => {
    const lines = [
      { op: 'put', key: 'cli/b1', value: 'text', contentType: 'text/plain' },
      { op: 'put', key: 'cli/b2', valueBase64: Buffer.from([9, 9]).toString('base64') },
      { op: 'get', key: 'cli/b1' },
      { op: 'get', key: 'cli/absent' },
    ];
    const input = lines.map((l) => JSON.stringify(l)).join('\n');
    const ok = await kvctlWithInput(['batch', '-o', 'json'], input);
    expect(ok.code).toBe(0);
    const out = ok.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { index: number; status: number; valueBase64?: string });
    expect(out.map((r) => [r.index, r.status])).toEqual([
      [0, 200],
      [1, 200],
      [2, 200],
      [3, 404],
    ]);
    expect(Buffer.from(out[2]?.valueBase64 ?? '', 'base64').toString()).toBe('text');
    const failing = await kvctlWithInput(['batch', '-'], `${JSON.stringify({ op: 'delete', key: '' })}\n`);
    expect(failing.code).toBe(3);
    expect(failing.stdout).toMatch(/^0\t400\t\tbad_request: operations\[0\]/);
    // A bad line is a usage error, and nothing is sent.
    const bad = await kvctlWithInput(
      ['batch'],
      `${JSON.stringify({ op: 'put', key: 'cli/b3', value: 'x' })}\nnot json\n`,
    );
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringMatching(/line 2: not JSON/)]);
    expect(await new KeyValueStoreClient(tc.url).get('cli/b3')).toBeNull();
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

/** A plain node:http server, not kvstore: 404 for everything, as a wrong port often answers. */
async function startPlain404(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('no such thing\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe('the client checks it talks to a kvstore gateway', () => {
  const rejection = (p: Promise<unknown>): Promise<KvClientError> =>
    p.then(
      () => {
        throw new Error('expected a rejection');
      },
      (e: unknown) => e as KvClientError,
    );

  it('works against the real gateway, which names itself', async () => {
    const res = await fetch(`${tc.url}/v1/kv/client/none`);
    expect(res.headers.get(IDENTITY_HEADER)).toMatch(/^gateway\/\d+\.\d+\.\d+/);
    expect(await new KeyValueStoreClient(tc.url).get('client/none')).toBeNull();
  });

  it('reports a server that is not kvstore as not_kvstore, not as a missing key', async () => {
    const plain = await startPlain404();
    try {
      const err = await rejection(new KeyValueStoreClient(plain.url).get('k'));
      expect(err.code).toBe('not_kvstore');
      expect(err.status).toBe(404);
      expect(err.message).toBe(
        `the server at ${plain.url} is not a kvstore gateway: it answered HTTP 404 without the x-kvstore header kvstore sends; check the URL`,
      );
      // A probe says "down" for a gateway that does not answer, but a wrong address is an error.
      const probe = await rejection(new KeyValueStoreClient(plain.url).ready());
      expect(probe.code).toBe('not_kvstore');
    } finally {
      await plain.close();
    }
  });

  it("names the kvstore component that answered: a node's admin port", async () => {
    const nodeAdmin = `http://127.0.0.1:${adminPort(tc.port, 1)}`;
    const res = await fetch(`${nodeAdmin}/healthz`);
    expect(res.headers.get(IDENTITY_HEADER)).toMatch(/^node\//);
    const err = await rejection(new KeyValueStoreClient(nodeAdmin).get('k'));
    expect(err.code).toBe('not_kvstore');
    expect(err.message).toMatch(
      new RegExp(
        `^the server at ${nodeAdmin} is a kvstore node admin endpoint \\(x-kvstore: node/[^)]+\\), not a kvstore gateway`,
      ),
    );
  });

  it("names the launcher's admin port, and the launcher's routes expect it", async () => {
    const launcher = new RunnerAdminServer(pino({ level: 'silent' }));
    const { port } = await launcher.listen('127.0.0.1', 0);
    const url = `http://127.0.0.1:${port}`;
    try {
      const err = await rejection(new KeyValueStoreClient(url).cluster());
      expect(err.code).toBe('not_kvstore');
      expect(err.message).toMatch(
        /is the kvstore launcher admin endpoint \(npm start\) .*not a kvstore gateway/,
      );
      // scale goes to the launcher: from it, a 503 (no cluster attached) is the launcher's own answer.
      const unattached = await rejection(new KeyValueStoreClient(url).rebalanceStatus());
      expect(unattached.status).toBe(503);
      // and the gateway is not the launcher
      const wrong = await rejection(new KeyValueStoreClient(tc.url).rebalanceStatus());
      expect(wrong.message).toMatch(/is a kvstore gateway .*not the kvstore launcher admin endpoint/);
    } finally {
      await launcher.close();
    }
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

  it('says a wrong --url is not a gateway, exit 3', async () => {
    const nodeAdmin = `http://127.0.0.1:${adminPort(tc.port, 2)}`;
    const res = await run(process.execPath, [KVCTL, '--url', nodeAdmin, 'get', 'k']).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((res as { code: number }).code).toBe(3);
    expect((res as { stderr: string }).stderr).toMatch(
      /^kvctl: not_kvstore: the server at .* is a kvstore node admin endpoint/,
    );
  });

  it('exits 3 with a clear message when the gateway refuses', async () => {
    const res = await kvctl('put', 'k'.repeat(1025), 'v').catch((e: { code: number; stderr: Buffer }) => e);
    expect((res as { code: number }).code).toBe(3);
    expect((res as { stderr: Buffer }).stderr.toString()).toMatch(/kvctl: payload_too_large/);
  });
});
