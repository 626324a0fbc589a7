import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { partitionOf } from '../common/hash';
import { decodeRecord } from '../common/record';
import type { RepairReport } from '../common/rest-api';
import {
  nodeClient,
  startExtraGateway,
  startTestCluster,
  tempDir,
  type ExtraGateway,
  type TestCluster,
} from './cluster-harness';
import { waitFor } from './wait-for';

/**
 * A rolling upgrade, with real processes of two releases: node n3 and a second gateway run the
 * release before records carried content types (OLD_RELEASE, built here from the repository's
 * history), beside this release's n1, n2 and gateway. The old node must never be sent a record it
 * cannot read, whatever path the record takes (a write, a hint, anti-entropy), the old gateway must
 * read what the new nodes hold, and a client of the new gateway keeps its content types.
 */
jest.setTimeout(300_000);

/** main just before content types: the release a cluster would be upgraded from. */
const OLD_RELEASE = 'c2b67a72b75bf7b18ebe466c86a61d5653a2bb86';
const repoRoot = path.resolve(__dirname, '..');

let oldDir: string;
let tc: TestCluster;
let oldGateway: ExtraGateway | undefined;

/** The old release's server package, compiled with this checkout's dependencies. */
function buildOldRelease(): string {
  const dir = tempDir('old-release');
  try {
    execFileSync('git', ['-C', repoRoot, 'cat-file', '-e', `${OLD_RELEASE}^{commit}`]);
  } catch {
    throw new Error(
      `commit ${OLD_RELEASE} is not in this clone (a shallow clone?): the test needs the release it upgrades from`,
    );
  }
  const tar = execFileSync('git', ['-C', repoRoot, 'archive', '--format=tar', OLD_RELEASE], {
    maxBuffer: 256 * 1024 * 1024,
  });
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(dir, 'node_modules'));
  execFileSync(process.execPath, [
    path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'),
    '-p',
    path.join(dir, 'packages', 'server', 'tsconfig.json'),
  ]);
  return dir;
}

const oldMain = (component: 'node' | 'gateway'): string =>
  path.join(oldDir, 'packages', 'server', 'dist', component, 'main.js');

beforeAll(async () => {
  oldDir = buildOldRelease();
  tc = await startTestCluster({
    nodeMain: { n3: oldMain('node') },
    nodeArgs: ['--anti-entropy-interval-ms', '0'],
  });
  oldGateway = await startExtraGateway(tc, [], 'gw-old', oldMain('gateway'));
});

afterAll(async () => {
  await oldGateway?.stop();
  await tc?.stop(true);
  if (oldDir) fs.rmSync(oldDir, { recursive: true, force: true });
});

async function put(
  base: string,
  key: string,
  body: string,
  headers: Record<string, string>,
): Promise<number> {
  const res = await fetch(`${base}/v1/kv/${key}`, { method: 'PUT', body, headers });
  await res.arrayBuffer();
  return res.status;
}

/** What one node holds for `key`, asked over its internal API as a peer of this release. */
async function heldBy(
  node: string,
  key: string,
): Promise<{ value: string; contentType?: string; version: string } | undefined> {
  const c = nodeClient(tc, node, 'e2e-probe');
  try {
    const k = Buffer.from(key);
    const { records } = await c.call({
      op: 'read',
      items: [{ p: partitionOf(k, tc.cluster.map.partitionCount), k }],
    });
    const raw = records[0];
    if (!raw) return undefined;
    const rec = decodeRecord(raw);
    const v = rec.version;
    return {
      value: rec.value.toString(),
      version: `${v.wall}.${v.logical}.${v.writer}`,
      ...(rec.contentType ? { contentType: rec.contentType } : {}),
    };
  } finally {
    c.close();
  }
}

test('the old node takes writes that carry content types at all, and holds them without the type', async () => {
  // Processes of both releases are what the test says they are.
  const versions = await Promise.all(
    ['n1', 'n3'].map(async (n) =>
      (await fetch(`${tc.cluster.adminUrl(n)}/healthz`)).headers.get('x-kvstore'),
    ),
  );
  expect(versions[0]).toMatch(/^node\//);
  expect(fs.readFileSync(oldMain('node'), 'utf8')).not.toContain('record-format');

  for (let i = 0; i < 20; i++) {
    expect(
      await put(tc.url, `typed-${i}`, `{"i":${i}}`, {
        'Content-Type': 'application/json',
        'X-Consistency': 'all',
      }),
    ).toBe(200);
  }
  for (let i = 0; i < 20; i++) {
    const [n1, n3] = [await heldBy('n1', `typed-${i}`), await heldBy('n3', `typed-${i}`)];
    expect(n1).toEqual({ value: `{"i":${i}}`, contentType: 'application/json', version: n1?.version });
    expect(n3).toEqual({ value: `{"i":${i}}`, version: n1?.version });
  }
});

test('the new gateway answers the content type even when the old node sends the value; the old gateway reads new nodes', async () => {
  for (let i = 0; i < 20; i++) {
    // `all` asks every replica, the old one included, and any of them may send the value.
    const got = await fetch(`${tc.url}/v1/kv/typed-${i}`, { headers: { 'X-Consistency': 'all' } });
    expect([got.status, got.headers.get('content-type'), await got.text()]).toEqual([
      200,
      'application/json',
      `{"i":${i}}`,
    ]);
    const old = await fetch(`${oldGateway?.url}/v1/kv/typed-${i}`, { headers: { 'X-Consistency': 'all' } });
    expect([old.status, await old.text()]).toEqual([200, `{"i":${i}}`]);
  }
  // And the old gateway's writes read back through the new one, typed as bytes.
  expect(await put(oldGateway?.url as string, 'from-old', 'raw', { 'X-Consistency': 'all' })).toBe(200);
  const back = await fetch(`${tc.url}/v1/kv/from-old`);
  expect([back.headers.get('content-type'), await back.text()]).toEqual(['application/octet-stream', 'raw']);
});

test('a hint for the old node and an anti-entropy pass across releases deliver records it can read', async () => {
  await tc.cluster.signal('n3', 'SIGKILL');
  for (let i = 0; i < 10; i++) {
    expect(
      await put(tc.url, `hinted-${i}`, `h${i}`, { 'Content-Type': 'text/plain', 'X-Consistency': 'quorum' }),
    ).toBe(200);
  }
  await tc.cluster.startProcess('n3');
  await waitFor(
    'hints replayed to the old node',
    async () =>
      (await heldBy('n3', 'hinted-9')) !== undefined && (await heldBy('n3', 'hinted-0')) !== undefined,
    60_000,
  );
  for (let i = 0; i < 10; i++) expect((await heldBy('n3', `hinted-${i}`))?.value).toBe(`h${i}`);

  // n3 misses a key altogether; a repair pass (new nodes and the old one comparing trees and
  // exchanging buckets) gives it the key, and finds nothing else to fix (types are not in the trees).
  await tc.cluster.signal('n3', 'SIGKILL');
  expect(await put(tc.url, 'repaired', 'r', { 'Content-Type': 'text/csv', 'X-Consistency': 'quorum' })).toBe(
    200,
  );
  await tc.cluster.startProcess('n3');
  // The hint would deliver it too: the repair must not wait for it, so check the repair's own report.
  const started = await fetch(`${tc.url}/v1/admin/repair`, { method: 'POST' });
  expect(started.status).toBe(202);
  const report = async (): Promise<RepairReport> =>
    (await (await fetch(`${tc.url}/v1/admin/repair`)).json()) as RepairReport;
  await waitFor(
    'the repair pass on every node',
    async () =>
      (await report()).nodes.every((n) => n.repair && !n.repair.running && n.repair.lastFullRepairAt > 0),
    120_000,
  );
  expect((await report()).nodes.map((n) => [n.id, n.repair?.partitionsFailed ?? 0])).toEqual([
    ['n1', 0],
    ['n2', 0],
    ['n3', 0],
  ]);
  expect(await heldBy('n3', 'repaired')).toMatchObject({ value: 'r' });
  expect((await heldBy('n3', 'repaired'))?.contentType).toBeUndefined();
  expect((await heldBy('n1', 'repaired'))?.contentType).toBe('text/csv');
});
