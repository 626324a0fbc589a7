import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { startTestCluster, type TestCluster } from './cluster-harness';

/**
 * The original design's client (e2e/original-design-client.js, copied unchanged from the design
 * document the project started from), run in a context of its own where the only thing Node gives
 * it is `fetch`: what it stores through POST /put it reads back through GET /get, whatever JSON.
 */

interface OriginalClient {
  get(key: string): Promise<unknown>;
  put(key: string, value: unknown): Promise<unknown>;
  delete(key: string): Promise<unknown>;
}

const source = fs.readFileSync(path.join(__dirname, 'original-design-client.js'), 'utf8');
const OriginalClientClass = vm.runInNewContext(`${source}\nKeyValueStoreClient`, { fetch }) as new (
  url: string,
) => OriginalClient;

let tc: TestCluster;
let client: OriginalClient;

beforeAll(async () => {
  tc = await startTestCluster();
  client = new OriginalClientClass(tc.url);
}, 60_000);

afterAll(async () => {
  await tc?.stop(true);
});

test.each([
  ['a string', 'héllo, world'],
  ['an empty string', ''],
  ['a number', 42.5],
  ['zero', 0],
  ['a boolean', false],
  ['null', null],
  ['an array', [1, 'two', [3], { four: 4 }]],
  ['an object', { name: 'Ada', tags: ['x', 'y'], nested: { ok: true, n: -1 } }],
])('stores %s and reads it back', async (_what, value) => {
  const key = `original/${JSON.stringify(value)}`;
  expect(await client.put(key, value)).toEqual({ success: true });
  expect(await client.get(key)).toEqual({ key, value });
});

test('deletes, after which get answers not found', async () => {
  expect(await client.put('original/gone', { a: 1 })).toEqual({ success: true });
  expect(await client.delete('original/gone')).toEqual({ success: true });
  expect(await client.get('original/gone')).toEqual({
    error: { code: 'not_found', message: 'key not found' },
  });
});

test('a value it stored as a string reads the same through the REST API, typed as text', async () => {
  expect(await client.put('original/text', 'plain')).toEqual({ success: true });
  const res = await fetch(`${tc.url}/v1/kv/original/text`);
  expect([res.status, res.headers.get('content-type'), await res.text()]).toEqual([
    200,
    'text/plain; charset=utf-8',
    'plain',
  ]);
});
