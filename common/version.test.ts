import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_IMAGE, KVSTORE_VERSION } from './version';

/*
 * One version for everything a user installs: a release bumps common/version.ts, and this test
 * names every file that was left behind (packages, chart, CRD, image, examples, docs).
 */

const root = path.resolve(__dirname, '..');
const read = (file: string): string => fs.readFileSync(path.join(root, file), 'utf8');

/** Every `kvstore:<version>` image reference in a file. */
function imageTags(file: string): string[] {
  return [...read(file).matchAll(/\bkvstore:(\d+\.\d+\.\d+[\w.+-]*)/g)].map((m) => m[1] ?? '');
}

describe('KVSTORE_VERSION', () => {
  test('is a semantic version', () => {
    expect(KVSTORE_VERSION).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
    expect(DEFAULT_IMAGE).toBe(`kvstore:${KVSTORE_VERSION}`);
  });

  test.each([
    'package.json',
    'packages/client/package.json',
    'packages/kvctl/package.json',
    'packages/server/package.json',
  ])('%s has it', (file) => {
    expect((JSON.parse(read(file)) as { version: string }).version).toBe(KVSTORE_VERSION);
  });

  test("the chart's appVersion and version follow it", () => {
    const chart = read('charts/kvstore/Chart.yaml');
    expect(chart).toMatch(new RegExp(`^appVersion: ${KVSTORE_VERSION.replace(/\./g, '\\.')}$`, 'm'));
    expect(chart).toMatch(new RegExp(`^version: ${KVSTORE_VERSION.replace(/\./g, '\\.')}$`, 'm'));
  });

  test('the Dockerfile labels the image with it', () => {
    expect(read('Dockerfile')).toMatch(
      new RegExp(`^ARG KVSTORE_VERSION=${KVSTORE_VERSION.replace(/\./g, '\\.')}$`, 'm'),
    );
  });

  test.each([
    'crds/kvcluster.yaml',
    'crds/kvcluster-types.ts',
    'charts/kvstore/crds/kvcluster.yaml',
    'charts/kvstore/values.schema.json',
    'charts/kvstore/values.yaml',
    'charts/kvstore/examples/kvcluster.yaml',
    'e2e/kind/run.sh',
    'Dockerfile',
    'README.md',
  ])('every kvstore image named in %s is kvstore:<version>', (file) => {
    const tags = imageTags(file);
    expect(tags.length).toBeGreaterThan(0);
    expect(tags.filter((t) => t !== KVSTORE_VERSION)).toEqual([]);
  });
});
