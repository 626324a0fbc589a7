import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { markdown, parseBenchArgs, runBench } from '../bench/run';
import { markdown as startupMarkdown, parseStartupArgs, runStartupBench } from '../bench/startup';

/**
 * The benchmark in CI size: a second per workload against the minimal server
 * and a one-node kvstore. It checks that the harness starts systems, drives
 * load, and reports; never a timing (CI machines are too noisy for that).
 */
jest.setTimeout(60_000);

test('npm run bench runs end to end and reports every workload', async () => {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-bench-smoke-'));
  try {
    const opts = parseBenchArgs([
      '--systems',
      'minimal,kvstore-rf1',
      '--duration',
      '1',
      '--warmup',
      '0',
      '--keys',
      '200',
      '--concurrency',
      '4',
      '--list-page',
      '64',
      '--work-dir',
      workDir,
    ]);
    if (!opts) throw new Error('no options');
    const lines: string[] = [];
    const report = await runBench(opts, (l) => lines.push(l));
    for (const system of ['minimal node:http', 'kvstore 1 node RF 1']) {
      for (const workload of ['preload', 'get', 'put', 'mixed']) {
        const row = report.results.find((r) => r.system === system && r.workload === workload);
        expect(row).toBeDefined();
        expect(row?.ops).toBeGreaterThan(0);
        expect(row?.errors).toBe(0);
        expect(row?.latencyUs.p99).toBeGreaterThan(0);
      }
    }
    expect(report.ratios['kvstore 1 node RF 1 / minimal node:http']).toHaveLength(3);
    // CPU per operation by process, read from /proc (this suite runs on Linux).
    const get = report.results.find((r) => r.system === 'kvstore 1 node RF 1' && r.workload === 'get');
    expect(Object.keys(get?.cpuUsPerOp ?? {}).sort()).toEqual(['gateway', 'generator', 'nodes']);
    expect(get?.cpuUsPerOp?.generator).toBeGreaterThan(0);
    // The listing walks all 200 keys in pages of 64, each walk complete; the minimal server lists nothing.
    expect(report.lists.map((l) => [l.system, l.pageSize, l.incomplete])).toEqual([
      ['kvstore 1 node RF 1', 64, 0],
    ]);
    expect(report.lists[0]?.walks).toBeGreaterThan(0);
    const md = markdown(report);
    expect(md).toContain('### Listing every key');
    expect(md).toContain('| kvstore 1 node RF 1 | ours | get |');
    expect(md).toContain('ops/s');
    expect(md).toContain('| kvstore 1 node RF 1 | get | uniform |');
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
});

test('npm run bench:startup preloads a node, restarts it and reports its start and disk use', async () => {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-bench-startup-smoke-'));
  try {
    const opts = parseStartupArgs(['--keys', '2000', '--runs', '1', '--work-dir', workDir]);
    if (!opts) throw new Error('no options');
    const report = await runStartupBench(opts, () => undefined, 'bench:startup smoke');
    expect(report.runs).toHaveLength(1);
    // The restarted node serves every record it was given.
    expect(report.runs[0].storedKeys).toBe(2000);
    expect(report.runs[0].readyMs).toBeGreaterThan(0);
    // Served a read after ready, and built its hash trees (in the background) before the bench stopped it.
    expect(report.runs[0].firstReadMs).toBeGreaterThanOrEqual(report.runs[0].readyMs);
    expect(report.runs[0].hashTreeBuildMs).toBeGreaterThanOrEqual(0);
    expect(report.disk.rawBytes).toBeGreaterThan(0);
    expect(report.disk.ratio).toBeGreaterThan(0);
    expect(startupMarkdown(report)).toContain('disk / raw');
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
});
