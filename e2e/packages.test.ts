import { execFile } from 'node:child_process';
import { builtinModules } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { startTestCluster, tempDir, type TestCluster } from './cluster-harness';

/**
 * The packages as a user gets them: what `npm pack` would publish, and the packed client and kvctl
 * installed into an empty folder, used against a running cluster.
 */
jest.setTimeout(180_000);

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..');
const PACKAGES = ['client', 'kvctl', 'server'] as const;
type PackageDir = (typeof PACKAGES)[number];

interface PackageJson {
  readonly name: string;
  readonly main: string;
  readonly types: string;
  readonly bin?: Record<string, string>;
  readonly dependencies?: Record<string, string>;
}

interface PackReport {
  readonly filename: string;
  readonly files: readonly { readonly path: string }[];
}

function manifest(dir: PackageDir): PackageJson {
  return JSON.parse(fs.readFileSync(path.join(ROOT, 'packages', dir, 'package.json'), 'utf8')) as PackageJson;
}

/**
 * npm run by the test, not as a script of `npm test`: npm's own npm_* variables (the repository
 * as local prefix among them) would leak into an install meant to happen in an empty folder.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const kept = /^npm_config_(cache|registry|userconfig|cafile|proxy|https_proxy|noproxy|strict_ssl)$/i;
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) || kept.test(k)));
}

async function npm(args: readonly string[], cwd: string): Promise<string> {
  const { stdout } = await run('npm', [...args], { cwd, env: npmEnv(), maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** `npm pack --json` of one workspace; scripts off, since beforeAll has just built every package. */
async function pack(dir: PackageDir, extra: readonly string[]): Promise<PackReport> {
  const out = await npm(['pack', '--json', '--ignore-scripts', ...extra], path.join(ROOT, 'packages', dir));
  const reports = JSON.parse(out) as PackReport[];
  return reports[0];
}

/** The module names a compiled file loads: `require("x")`, and tsc's form of `import('x')`. */
function requiredModules(js: string): string[] {
  return [...js.matchAll(/\brequire\((['"])([^'"]+)\1\)/g)].map((m) => m[2]);
}

function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

const builtins = new Set(builtinModules);

beforeAll(async () => {
  await npm(['run', 'build:packages', '--silent'], ROOT);
});

describe.each(PACKAGES)('npm pack of packages/%s', (dir) => {
  let report: PackReport;
  const pkg = manifest(dir);

  beforeAll(async () => {
    report = await pack(dir, ['--dry-run']);
  });

  it('lists only the built output, its package.json and README', () => {
    const files = report.files.map((f) => f.path);
    const unexpected = files.filter(
      (f) => !/^dist\/.+\.(js|d\.ts|js\.map)$/.test(f) && f !== 'package.json' && f !== 'README.md',
    );
    expect(unexpected).toEqual([]);
    const strays = files.filter((f) => /\.test\.|\.fixtures\.|(^|\/)(e2e|\.ci|bench)\//.test(f));
    expect(strays).toEqual([]);
    for (const entry of [pkg.main, pkg.types, ...Object.values(pkg.bin ?? {})]) {
      expect(files).toContain(entry);
    }
  });

  it('declares every package its code loads at run time', () => {
    const declared = new Set(Object.keys(pkg.dependencies ?? {}));
    const undeclared = new Set<string>();
    for (const f of report.files.filter((file) => file.path.endsWith('.js'))) {
      const js = fs.readFileSync(path.join(ROOT, 'packages', dir, f.path), 'utf8');
      for (const m of requiredModules(js)) {
        if (m.startsWith('.') || m.startsWith('node:') || builtins.has(m)) continue;
        if (!declared.has(packageOf(m))) undeclared.add(`${packageOf(m)} (${f.path})`);
      }
    }
    expect([...undeclared]).toEqual([]);
  });
});

describe('the packed client and kvctl, installed into an empty folder', () => {
  let tc: TestCluster;
  let app: string;
  let tarballs: string;

  beforeAll(async () => {
    tarballs = tempDir('tarballs');
    app = tempDir('app');
    const files: string[] = [];
    for (const dir of ['client', 'kvctl'] as const) {
      const r = await pack(dir, ['--pack-destination', tarballs]);
      files.push(path.join(tarballs, r.filename));
    }
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
    await npm(['install', '--prefer-offline', '--no-audit', '--no-fund', ...files], app);
    tc = await startTestCluster();
  });

  afterAll(async () => {
    await tc?.stop(true);
    for (const d of [app, tarballs]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it('brings none of the servers’ dependencies', () => {
    const installed = fs.readdirSync(path.join(app, 'node_modules'));
    for (const server of ['lmdb', 'express', 'ioredis', 'pino', '@kubernetes', 'prom-client']) {
      expect(installed).not.toContain(server);
    }
  });

  it('puts and gets a key with require("@kvstore/client"); the installed kvctl reads it back', async () => {
    const script = [
      "const { KeyValueStoreClient } = require('@kvstore/client');",
      '(async () => {',
      '  const kv = new KeyValueStoreClient(process.argv[2]);',
      "  await kv.put('packages/greeting', 'hello from the package');",
      "  process.stdout.write(String(await kv.get('packages/greeting')));",
      '})().catch((err) => { console.error(err); process.exit(1); });',
    ].join('\n');
    fs.writeFileSync(path.join(app, 'use-client.js'), script);
    const used = await run(process.execPath, ['use-client.js', tc.url], { cwd: app });
    expect(used.stdout).toBe('hello from the package');

    const kvctl = path.join(app, 'node_modules', '.bin', 'kvctl');
    const got = await run(kvctl, ['--url', tc.url, 'get', 'packages/greeting'], { cwd: app });
    expect(got.stdout).toBe('hello from the package');
  });

  it('types a strict TypeScript program against the installed client', async () => {
    fs.writeFileSync(
      path.join(app, 'typed.ts'),
      [
        "import { KeyValueStoreClient, type ClusterInfo, type Consistency } from '@kvstore/client';",
        "const level: Consistency = 'quorum';",
        'const kv = new KeyValueStoreClient({ url: process.argv[2], consistency: level });',
        'export const nodes: Promise<ClusterInfo> = kv.cluster();',
      ].join('\n'),
    );
    // The repository's compiler and Node.js types; the package's own .d.ts files, checked too.
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const typeRoots = path.join(ROOT, 'node_modules', '@types');
    const args = ['--noEmit', '--strict', '--skipLibCheck', 'false', '--module', 'node16'];
    const checked = await run(
      process.execPath,
      [tsc, ...args, '--typeRoots', typeRoots, '--types', 'node', 'typed.ts'],
      {
        cwd: app,
      },
    ).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? String(err) }));
    expect(checked.stdout).toBe('');
  });
});
