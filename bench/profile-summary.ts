import fs from 'node:fs';
import path from 'node:path';

/**
 * Summarises a V8 .cpuprofile: self time per function (file:line), the same
 * numbers a flame graph's "self" column shows, as a short markdown table.
 */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface FunctionCost {
  readonly name: string;
  readonly where: string;
  readonly selfMs: number;
  readonly selfShare: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly totalMs: number;
  /** share of samples not idle: how busy the process was */
  readonly busyShare: number;
  readonly top: FunctionCost[];
  /** self time by package or area (node internals, express, lmdb, ours...) */
  readonly byArea: { area: string; selfShare: number }[];
}

export function summariseProfile(file: string, topN = 15): ProfileSummary {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  // Self time per node from samples and time deltas (hitCount ignores the varying interval).
  const selfUs = new Map<number, number>();
  const samples = prof.samples ?? [];
  const deltas = prof.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const d = deltas[i + 1] ?? 0;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + d);
  }
  let total = 0;
  let idle = 0;
  const perFn = new Map<string, { name: string; where: string; us: number }>();
  const perArea = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    total += us;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') {
      idle += us;
      continue;
    }
    const where = shortUrl(n.callFrame.url, n.callFrame.lineNumber);
    const key = `${name} ${where}`;
    const e = perFn.get(key) ?? { name, where, us: 0 };
    e.us += us;
    perFn.set(key, e);
    const area = areaOf(n.callFrame.url, name);
    perArea.set(area, (perArea.get(area) ?? 0) + us);
  }
  const busy = total - idle;
  const top = [...perFn.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({
      name: e.name,
      where: e.where,
      selfMs: Math.round(e.us / 1000),
      selfShare: share(e.us, busy),
    }));
  const byArea = [...perArea.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([area, us]) => ({ area, selfShare: share(us, busy) }));
  return {
    file: path.basename(file),
    totalMs: Math.round(total / 1000),
    busyShare: share(busy, total),
    top,
    byArea,
  };
}

function share(part: number, whole: number): number {
  return whole > 0 ? Math.round((part / whole) * 1000) / 10 : 0;
}

function shortUrl(url: string, line: number): string {
  if (!url) return '(native)';
  const nm = url.lastIndexOf('node_modules/');
  const s =
    nm >= 0
      ? url.slice(nm + 'node_modules/'.length)
      : url.replace(/^.*\/dist\//, '').replace(/^file:\/\//, '');
  return `${s}:${line + 1}`;
}

function areaOf(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native / V8 builtins)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const m = /\/dist\/([^/]+)\//.exec(url);
  return m ? `kvstore ${m[1]}/` : url;
}

export function profileMarkdown(s: ProfileSummary): string {
  return [
    `**${s.file}**: ${s.totalMs} ms profiled, ${s.busyShare}% busy (not idle).`,
    '',
    '| self % of busy | function | where |',
    '|--:|---|---|',
    ...s.top.map((f) => `| ${f.selfShare} | \`${f.name}\` | ${f.where} |`),
    '',
    'By area: ' +
      s.byArea
        .slice(0, 10)
        .map((a) => `${a.area} ${a.selfShare}%`)
        .join(', '),
  ].join('\n');
}

if (require.main === module) {
  for (const f of process.argv.slice(2)) process.stdout.write(`${profileMarkdown(summariseProfile(f))}\n\n`);
}
