import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { hashToken } from '../common/api-keys';
import { openApiDocument } from '../common/rest-openapi';
import { KVSTORE_VERSION } from '../common/version';
import { alive, startTestCluster, tempDir, type TestCluster } from './cluster-harness';

/**
 * The REST contract checked by a tool we did not write: Schemathesis (PyPI, pinned in
 * e2e/contract/schemathesis.sh) reads the gateway's own GET /openapi.json and sends thousands of
 * generated requests, valid and not, to a running local cluster with auth on, checking every answer
 * against the document (status, content type, headers, body schema), that none is a 5xx, that
 * invalid input is refused, and that undocumented methods get 405 with Allow. A fixed seed and a
 * bounded count keep it repeatable. e2e/contract/schemathesis.toml says which checks are off where.
 */

const execFileP = promisify(execFile);
const ROOT = path.resolve(__dirname, '..');
const TOKEN = 'kvs_contract-admin-000000000000000000000000000000000';
const SEED = 20261207;
const EXAMPLES_PER_OPERATION = 200;

let tc: TestCluster;
let dir: string;
const auth = { authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  dir = tempDir('contract');
  const authFile = path.join(dir, 'keys.json');
  fs.writeFileSync(
    authFile,
    JSON.stringify({ keys: [{ id: 'contract', role: 'admin', sha256: hashToken(TOKEN) }] }),
  );
  tc = await startTestCluster({ authFile, dataDir: path.join(dir, 'data') });
}, 60_000);

afterAll(async () => {
  await tc?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('GET /openapi.json is the committed docs/openapi.json, served without a key', async () => {
  const res = await fetch(`${tc.url}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const served = (await res.json()) as unknown;
  const committed = JSON.parse(fs.readFileSync(path.join(ROOT, 'docs/openapi.json'), 'utf8')) as unknown;
  expect(served).toEqual(committed);
  expect(served).toEqual(openApiDocument(KVSTORE_VERSION));
});

test('Schemathesis finds no 5xx, no answer outside the document, no invalid input accepted', async () => {
  // Keys Schemathesis cannot guess: what it writes and deletes must leave them as they are.
  const control = Array.from({ length: 20 }, (_, i) => [
    `control-${randomUUID()}/${i}`,
    `value ${i} ${randomUUID()}`,
  ]);
  for (const [key, value] of control) {
    const res = await fetch(`${tc.url}/v1/kv/${encodeURIComponent(key)}`, {
      method: 'PUT',
      headers: auth,
      body: value,
    });
    expect(res.status).toBe(200);
  }

  let output: string;
  let failed = false;
  try {
    const run = await execFileP(
      'bash',
      [
        path.join(ROOT, 'e2e/contract/schemathesis.sh'),
        '--no-color',
        '--config-file',
        path.join(ROOT, 'e2e/contract/schemathesis.toml'),
        'run',
        `${tc.url}/openapi.json`,
        '--header',
        `Authorization: Bearer ${TOKEN}`,
        '--seed',
        String(SEED),
        '--max-examples',
        String(EXAMPLES_PER_OPERATION),
        // One worker: hypothesis parses lambda sources with `ast`, whose recursion check is not
        // thread-safe in CPython 3.11 ("AST constructor recursion depth mismatch" at random).
        '--workers',
        '1',
        '--request-timeout',
        '10',
      ],
      { cwd: dir, maxBuffer: 64 * 1024 * 1024, timeout: 300_000 },
    );
    output = run.stdout + run.stderr;
  } catch (err) {
    failed = true;
    const e = err as { stdout?: string; stderr?: string; message: string };
    output = `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`;
  }
  // The whole report when it fails: each failure with the request that reproduces it.
  if (failed || !/No issues found/.test(output)) throw new Error(`Schemathesis found problems:\n${output}`);
  const generated = Number(/(\d+) generated, \1 passed/.exec(output)?.[1] ?? 0);
  expect(generated).toBeGreaterThanOrEqual(2000);

  for (const name of [...tc.cluster.nodeIds(), 'gateway'])
    expect([name, alive(tc.cluster.pid(name))]).toEqual([name, true]);
  for (const [key, value] of control) {
    const res = await fetch(`${tc.url}/v1/kv/${encodeURIComponent(key)}`, { headers: auth });
    expect([key, res.status, await res.text()]).toEqual([key, 200, value]);
  }
}, 360_000);
