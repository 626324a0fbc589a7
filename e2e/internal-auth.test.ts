import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { partitionOf } from '../common/hash';
import { HybridLogicalClock } from '../common/hlc';
import { MIN_INTERNAL_TOKEN_LENGTH } from '../common/internal-token';
import { decodeRecord, encodeRecord } from '../common/record';
import { RpcClient, RpcError } from '../common/rpc-client';
import { startTestCluster, tempDir, type TestCluster } from './cluster-harness';
import { scrapeSum } from './metrics-scrape';
import { waitFor } from './wait-for';

/**
 * The internal node API on a real local cluster requires the cluster's internal token:
 * reaching a node's port is not enough to read data. The launcher made the token (in the
 * data directory) and gave it to every node, the gateway and its rebalancer, so the
 * cluster's own traffic works while an outsider's requests are refused.
 */
jest.setTimeout(120_000);

const DIST = path.resolve(__dirname, '..', 'dist');

let tc: TestCluster;

beforeAll(async () => {
  tc = await startTestCluster({ nodes: 3, partitionCount: 16 });
});

afterAll(async () => {
  await tc?.stop(true);
});

const kvUrl = (key: string): string => `${tc.url}/v1/kv/${encodeURIComponent(key)}`;

function rpc(nodeId: string, token: string | undefined): RpcClient {
  const node = tc.cluster.map.nodes.find((n) => n.id === nodeId);
  if (!node) throw new Error(`no node ${nodeId}`);
  return new RpcClient({
    nodeId,
    address: node.address,
    clock: new HybridLogicalClock('e2e-outsider'),
    epoch: () => tc.cluster.map.epoch,
    timeoutMs: 5000,
    token,
  });
}

function keyRef(key: string): { p: number; k: Buffer } {
  const k = Buffer.from(key, 'utf8');
  return { p: partitionOf(k, tc.cluster.map.partitionCount), k };
}

/** The sum of a node's series of `name` whose labels include `labels`. */
function metric(nodeId: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return scrapeSum(tc.cluster.adminUrl(nodeId), name, labels);
}

const SECRET_KEY = 'payroll/alice';
/** The node the outsider probes (a replica of SECRET_KEY before the cluster grows). */
let probed = '';

test('the launcher keeps one token per data directory, readable only by its owner', () => {
  const stat = fs.statSync(tc.cluster.internalTokenFile);
  expect(stat.mode & 0o777).toBe(0o600);
  expect(fs.readFileSync(tc.cluster.internalTokenFile, 'utf8').trim()).toBe(tc.cluster.internalToken);
  expect(tc.cluster.internalToken).toMatch(/^[0-9a-f]{64}$/);
});

test('a caller without the token, or with a wrong one, gets unauthorized and no data; the token gets the record', async () => {
  const key = SECRET_KEY;
  const put = await fetch(kvUrl(key), {
    method: 'PUT',
    body: 'salary=secret',
    headers: { 'X-Consistency': 'all' },
  });
  expect(put.status).toBe(200);
  const replica = tc.cluster.map.partitions[keyRef(key).p][0];
  probed = replica;
  const before = await metric(replica, 'kvstore_node_rpc_auth_failures_total', { reason: 'missing_token' });
  const wrongToken = `${'0'.repeat(63)}1`;

  for (const token of [undefined, wrongToken]) {
    const outsider = rpc(replica, token);
    try {
      const err = await outsider.call({ op: 'read', items: [keyRef(key)] }).then(
        (reply) => reply,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RpcError);
      expect((err as RpcError).failure).toBe('remote');
      expect((err as RpcError).remote?.code).toBe('unauthorized');
      expect(JSON.stringify(err)).not.toContain('secret');
      // Writes are refused the same way: nothing is stored (checked with the token below).
      const forged = encodeRecord({
        version: { wall: Date.now() + 1000, logical: 0, writer: 'e2e-outsider' },
        value: Buffer.from('salary=0'),
        tombstone: false,
      });
      const write = await outsider
        .call({ op: 'write', items: [{ ...keyRef(key), r: forged }] })
        .catch((e: unknown) => e);
      expect((write as RpcError).remote?.code).toBe('unauthorized');
    } finally {
      outsider.close();
    }
  }

  const insider = rpc(replica, tc.cluster.internalToken);
  try {
    const { records } = await insider.call({ op: 'read', items: [keyRef(key)] });
    expect(records[0]).not.toBeNull();
    expect(decodeRecord(records[0] as Buffer).value.toString()).toBe('salary=secret');
  } finally {
    insider.close();
  }

  expect(
    await metric(replica, 'kvstore_node_rpc_auth_failures_total', { reason: 'missing_token' }),
  ).toBeGreaterThan(before);
  expect(
    await metric(replica, 'kvstore_node_rpc_auth_failures_total', { reason: 'wrong_token' }),
  ).toBeGreaterThan(0);
  // Logged at warn with the peer's address, never the token it sent.
  const logFile = path.join(tc.cluster.logDir, `${replica}.log`);
  await waitFor('the refusal in the node log', () =>
    fs.readFileSync(logFile, 'utf8').includes('"reason":"wrong_token"'),
  );
  const logText = fs.readFileSync(logFile, 'utf8');
  const refused = logText.split('\n').filter((l) => l.includes('rpc connection refused'));
  expect(refused.length).toBeGreaterThanOrEqual(2);
  for (const l of refused) {
    expect(JSON.parse(l)).toEqual(
      expect.objectContaining({ level: 'warn', peer: expect.stringMatching(/^127\.0\.0\.1:/) }),
    );
  }
  expect(logText).not.toContain(wrongToken);
  expect(logText).not.toContain(tc.cluster.internalToken);
});

test("the cluster's own traffic carries the token: quorum writes and reads, and a partition move", async () => {
  const keys = Array.from({ length: 40 }, (_, i) => `own-${i}`);
  for (const key of keys) {
    const res = await fetch(kvUrl(key), {
      method: 'PUT',
      body: `v-${key}`,
      headers: { 'X-Consistency': 'all' },
    });
    expect(res.status).toBe(200);
  }
  for (const key of keys) {
    const res = await fetch(kvUrl(key), { headers: { 'X-Consistency': 'all' } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(`v-${key}`);
  }

  // n4 joins: it streams partitions from the others (node to node) while the launcher's
  // rebalancer asks every node for its progress and hash trees; all of it needs the token.
  await tc.cluster.scale(4);
  await tc.cluster.idle();
  const map = tc.cluster.map;
  expect(map.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3', 'n4']);
  expect(map.moves).toEqual([]);
  const onN4 = keys.filter((key) => map.partitions[keyRef(key).p].includes('n4'));
  expect(onN4.length).toBeGreaterThan(0);
  const n4 = rpc('n4', tc.cluster.internalToken);
  try {
    const { records } = await n4.call({ op: 'read', items: onN4.map(keyRef) });
    expect(records.map((r) => r && decodeRecord(r).value.toString())).toEqual(onN4.map((k) => `v-${k}`));
  } finally {
    n4.close();
  }
  for (const key of keys) {
    const res = await fetch(kvUrl(key));
    expect(await res.text()).toBe(`v-${key}`);
  }
  // None of that traffic was ever refused: the only failures are the outsider's, on the node it probed.
  for (const id of ['n1', 'n2', 'n3', 'n4'].filter((n) => n !== probed)) {
    expect(await metric(id, 'kvstore_node_rpc_auth_failures_total')).toBe(0);
  }
});

test.each([
  ['node', ['--id', 'nx', '--data-dir', 'data']],
  ['gateway', ['--port', '0', '--no-auth']],
])('a token file shorter than the minimum stops a %s at start with a clear error', async (which, flags) => {
  const dir = tempDir('short-token');
  try {
    const file = path.join(dir, 'token');
    fs.writeFileSync(file, 'too-short\n');
    const child = spawn(
      process.execPath,
      [
        path.join(DIST, which, 'main.js'),
        ...flags.map((f) => (f === 'data' ? path.join(dir, 'data') : f)),
        '--metadata-file',
        path.join(dir, 'map.json'),
        '--internal-token-file',
        file,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain(file);
    expect(stderr).toContain(`at least ${MIN_INTERNAL_TOKEN_LENGTH}`);
    expect(stderr).not.toContain('too-short');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
