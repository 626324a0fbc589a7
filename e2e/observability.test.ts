import fs from 'node:fs';
import path from 'node:path';
import { KeyValueStoreClient, KvClientError, type Consistency } from '../client/client';
import { runStatus } from '../client/status-command';
import { startTestCluster, tempDir, type TestCluster } from './cluster-harness';
import { PrometheusServer, prometheusAvailable, type QueryResult } from './prometheus';

/**
 * The shipped dashboards and alert rules against a real Prometheus scraping a
 * real local cluster: every panel query and every alert expression parses and
 * (panels) returns data after a workload that exercises each signal (a node is
 * killed, comes back, hints overflow, anti-entropy repairs); the node-down alert
 * fires. Plus static checks of the dashboard JSON.
 */

const ROOT = path.resolve(__dirname, '..');
const DASHBOARD_DIR = path.join(ROOT, 'charts', 'kvstore', 'dashboards');
const RULES_FILE = path.join(ROOT, 'charts', 'kvstore', 'rules', 'kvstore-alerts.yaml');

// ---- the dashboards, as plain data ----

interface Target {
  refId: string;
  expr: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
  gridPos: { x: number; y: number; w: number; h: number };
}
interface TemplateVar {
  name: string;
  type: string;
  query?: string | { query: string };
  datasource?: { type: string; uid: string };
}
interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: TemplateVar[] };
}

function loadDashboards(): { file: string; dashboard: Dashboard }[] {
  return fs
    .readdirSync(DASHBOARD_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({
      file,
      dashboard: JSON.parse(fs.readFileSync(path.join(DASHBOARD_DIR, file), 'utf8')) as Dashboard,
    }));
}

function allPanels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

interface PanelQuery {
  dashboard: string;
  panel: string;
  refId: string;
  expr: string;
}

function panelQueries(dashboards: { dashboard: Dashboard }[]): PanelQuery[] {
  return dashboards.flatMap(({ dashboard }) =>
    allPanels(dashboard).flatMap((p) =>
      (p.targets ?? []).map((t) => ({
        dashboard: dashboard.uid,
        panel: p.title,
        refId: t.refId,
        expr: t.expr,
      })),
    ),
  );
}

/** Alert expressions from the rules file. Our own file's layout, so no YAML parser: `expr:` plain or folded. */
function alertRules(): { alert: string; expr: string }[] {
  const lines = fs.readFileSync(RULES_FILE, 'utf8').split('\n');
  const rules: { alert: string; expr: string }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const alert = /^\s*- alert: (\S+)/.exec(lines[i]);
    if (!alert) continue;
    let j = i + 1;
    while (j < lines.length && !/^\s*expr:/.test(lines[j])) j++;
    const m = /^(\s*)expr:\s*(.*)$/.exec(lines[j]);
    if (!m) throw new Error(`${alert[1]}: no expr`);
    let expr = m[2];
    if (expr === '>-' || expr === '|') {
      const parts: string[] = [];
      for (
        j = j + 1;
        j < lines.length && (lines[j].trim() === '' || lines[j].search(/\S/) > m[1].length);
        j++
      )
        parts.push(lines[j].trim());
      expr = parts.join(' ');
    }
    rules.push({ alert: alert[1], expr });
  }
  return rules;
}

/** What Grafana does to a query before sending it, for our variables. */
function substitute(expr: string, cluster: string): string {
  return expr
    .replaceAll('$__rate_interval', '30s')
    .replaceAll('$namespace', '.*')
    .replaceAll('$cluster', cluster)
    .replaceAll('$node', '.*')
    .replaceAll('$gateway', '.*');
}

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'le',
  'inf',
  'nan',
]);

/** Metric names a PromQL expression reads: identifiers outside label matchers, strings and ranges, not functions. */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?/g)) {
    const word = m[0].replace(/\s*\($/, '');
    if (m[1] !== undefined || PROMQL_WORDS.has(word.toLowerCase())) continue; // a function call or keyword
    if (/^\d/.test(word)) continue;
    names.add(word);
  }
  return [...names];
}

/** Metric names a /metrics page declares (histograms as their _bucket, _sum and _count series). */
function exportedNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(m[1] + s);
    else if (m[2] === 'summary') for (const s of ['', '_sum', '_count']) out.add(m[1] + s);
    else out.add(m[1]);
  }
  return out;
}

function nonEmpty(r: QueryResult): boolean {
  return r.resultType === 'scalar' || r.resultType === 'string' ? true : (r.result as unknown[]).length > 0;
}

// ---- static checks: no cluster needed ----

describe('dashboards (static)', () => {
  const dashboards = loadDashboards();

  it('ships the overview, nodes and gateway dashboards', () => {
    expect(dashboards.map((d) => d.dashboard.uid).sort()).toEqual([
      'kvstore-gateway',
      'kvstore-nodes',
      'kvstore-overview',
    ]);
  });

  it.each(dashboards.map((d) => [d.file, d.dashboard] as const))('%s is valid Grafana JSON', (_file, d) => {
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(typeof d.title).toBe('string');
    const panels = allPanels(d);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => Number.isInteger(id) && id > 0)).toBe(true);
    const vars = new Map(d.templating.list.map((v) => [v.name, v]));
    expect(vars.get('datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.get('namespace')?.type).toBe('query');
    expect(vars.get('cluster')?.type).toBe('query');
    for (const v of d.templating.list.filter((t) => t.type === 'query')) {
      expect(v.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' });
    }
    for (const p of panels.filter((x) => x.type !== 'row' && x.type !== 'text')) {
      expect(p.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets?.length).toBeGreaterThan(0);
      for (const t of p.targets ?? []) {
        // Every query is scoped to the selected namespace and cluster, so one Grafana serves many clusters.
        for (const name of metricNames(t.expr)) {
          expect(t.expr).toMatch(
            new RegExp(`${name}\\{[^}]*namespace=~"\\$namespace", cluster=~"\\$cluster"`),
          );
        }
      }
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    }
  });

  it('reads metric names out of PromQL', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le, op) (rate(kvstore_a_bucket{x=~"a|b"}[5m]))) / on (node) kvstore_b or vector(0)',
      ).sort(),
    ).toEqual(['kvstore_a_bucket', 'kvstore_b']);
  });
});

// ---- against a real Prometheus and cluster ----

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A few concurrent clients doing puts, gets (some absent), deletes, and some writes at consistency all. */
async function load(
  url: string,
  ms: number,
  opts: { consistencyAll?: boolean; keyPrefix: string },
): Promise<number> {
  const client = new KeyValueStoreClient({ url, timeoutMs: 5000 });
  const until = Date.now() + ms;
  let ops = 0;
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; Date.now() < until; i++) {
      const key = `${opts.keyPrefix}-${(w * 7919 + i) % 300}`;
      const consistency: Consistency | undefined = opts.consistencyAll && i % 5 === 0 ? 'all' : undefined;
      try {
        await client.putEntry(key, `value-${i}-${'x'.repeat(i % 64)}`, { consistency });
        await client.getBytes(key);
        await client.getBytes(`${opts.keyPrefix}-absent-${i % 10}`);
        if (i % 4 === 0) await client.deleteEntry(`${opts.keyPrefix}-${(w * 7919 + i + 150) % 300}`);
      } catch (err) {
        // 503 at consistency all while a node is down is what this phase is for.
        if (!(err instanceof KvClientError) || err.code !== 'unavailable') throw err;
      }
      ops++;
    }
  };
  await Promise.all([0, 1, 2, 3].map(worker));
  return ops;
}

// CI installs it (e2e/ensure-test-tools.sh) and must run this suite; elsewhere a missing binary skips it, loudly.
const canRun = prometheusAvailable() || process.env.CI === 'true';
if (!canRun) {
  process.stderr.write('observability e2e: prometheus is not on PATH; run bash e2e/ensure-test-tools.sh\n');
}

(canRun ? describe : describe.skip)('dashboards and alerts against a real Prometheus', () => {
  let tc: TestCluster;
  let prom: PrometheusServer;
  let dir: string;
  let promStartedAt = 0;
  const dashboards = loadDashboards();
  const nodeArgs = [
    // Short enough that a pass, a purge and a replay all happen within the test.
    '--anti-entropy-interval-ms',
    '2000',
    '--hint-replay-interval-ms',
    '300',
    '--tombstone-grace-ms',
    '1000',
    // Small so hints overflow while a node is down: the dropped-hints signal and anti-entropy repairs.
    '--max-hint-bytes',
    '4096',
  ];

  beforeAll(async () => {
    dir = tempDir('observability');
    tc = await startTestCluster({ partitionCount: 16, nodeArgs, env: { LOG_LEVEL: 'warn' } });
    const nodes = tc.cluster.nodeIds();
    // A copy of the shipped rules with every `for:` at 1 s, so alerts fire within the test (expressions unchanged).
    const rules = path.join(dir, 'kvstore-alerts-fast.yaml');
    fs.writeFileSync(rules, fs.readFileSync(RULES_FILE, 'utf8').replace(/^(\s*)for: \S+$/gm, '$1for: 1s'));
    promStartedAt = Date.now();
    prom = await PrometheusServer.start({
      dir,
      scrapeIntervalSeconds: 1,
      ruleFiles: [rules],
      jobs: [
        { job: 'kvstore-gateway', targets: [new URL(tc.url).host] },
        { job: 'kvstore-node', targets: nodes.map((id) => new URL(tc.cluster.adminUrl(id)).host) },
      ],
    });
    // Prometheus applies a new scrape config after a few seconds (its discovery updates are batched):
    // wait for the first scrape of every target, or phase 1 below would go unrecorded.
    const scraping = await prom.waitFor(async () => {
      const targets = await prom.targets();
      return targets.length === nodes.length + 1 && targets.every((t) => t.health === 'up');
    }, 20_000);
    if (!scraping)
      throw new Error(`prometheus does not scrape every target:\n${JSON.stringify(await prom.targets())}`);
  }, 60_000);

  afterAll(async () => {
    await prom?.stop();
    await tc?.stop(true);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it('every panel has data and every alert parses; node down fires', async () => {
    const cluster = tc.cluster.cluster;
    // Phase 1: all up.
    await load(tc.url, 5000, { keyPrefix: 'a' });
    // Phase 2: n3 killed; writes miss it (hints, overflow), consistency all fails.
    await tc.cluster.signal('n3', 'SIGKILL');
    const phase2 = load(tc.url, 6000, { keyPrefix: 'b', consistencyAll: true });
    const fired = await prom.waitFor(
      async () =>
        (await prom.alerts()).some(
          (a) => a.labels.alertname === 'KvstoreNodeDown' && a.labels.node === 'n3' && a.state === 'firing',
        ),
      20_000,
    );
    expect(fired).toBe(true);
    await phase2;

    // kvctl status sees the same: n3 down, its partitions under-replicated.
    const out: string[] = [];
    const code = await runStatus(['status', '--url', tc.url], {
      stdout: { write: (s: string) => out.push(s) },
      stderr: { write: (s: string) => out.push(s) },
      env: {},
    });
    expect(code).toBe(1);
    expect(out.join('')).toMatch(/^n3 .* down /m);
    expect(out.join('')).toMatch(/partitions under-replicated: \d+ of 16/);

    // Phase 3: n3 back; hints replay, anti-entropy and read repair bring it up to date.
    await tc.cluster.startProcess('n3');
    await load(tc.url, 5000, { keyPrefix: 'b' });
    await sleep(3000);

    const problems: string[] = [];
    for (const q of panelQueries(dashboards)) {
      const expr = substitute(q.expr, cluster);
      try {
        if (!nonEmpty(await prom.query(expr)))
          problems.push(`${q.dashboard} / ${q.panel} [${q.refId}]: no data: ${expr}`);
      } catch (err) {
        problems.push(`${q.dashboard} / ${q.panel} [${q.refId}]: ${(err as Error).message}: ${expr}`);
      }
    }
    // Prometheus loaded every rule of the file (a rule that does not parse fails the whole file).
    expect((await prom.alertRuleNames()).sort()).toEqual(
      alertRules()
        .map((r) => r.alert)
        .sort(),
    );
    for (const r of alertRules()) {
      try {
        await prom.query(r.expr);
      } catch (err) {
        problems.push(`alert ${r.alert}: ${(err as Error).message}`);
      }
    }
    // Template variable queries are label_values(...) calls Grafana runs itself; their selector must parse.
    for (const { dashboard } of dashboards) {
      for (const v of dashboard.templating.list) {
        const q = typeof v.query === 'string' ? v.query : v.query?.query;
        const m = q ? /^label_values\((.*), *\w+\)$/.exec(q) : null;
        if (v.type === 'query' && !m)
          problems.push(`${dashboard.uid} variable ${v.name}: not label_values(): ${q}`);
        if (m) {
          const r = await prom.query(`count(${substitute(m[1], cluster)})`);
          if (!nonEmpty(r)) problems.push(`${dashboard.uid} variable ${v.name}: no series for ${m[1]}`);
        }
      }
    }
    expect(problems).toEqual([]);

    if (process.env.KVSTORE_PANEL_DUMP)
      await dumpPanels(prom, cluster, process.env.KVSTORE_PANEL_DUMP, promStartedAt);
  }, 90_000);

  it('no query names a metric that no component exports', async () => {
    const gw = await (await fetch(`${tc.url}/metrics`)).text();
    const node = await (await fetch(`${tc.cluster.adminUrl('n1')}/metrics`)).text();
    const exported = new Set([...exportedNames(gw), ...exportedNames(node)]);
    const stored = new Set(await prom.metricNames());
    const used = [
      ...panelQueries(dashboards).map((q) => ({ where: `${q.dashboard} / ${q.panel}`, expr: q.expr })),
      ...alertRules().map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })),
    ];
    const unknown = used.flatMap(({ where, expr }) =>
      metricNames(expr)
        .filter((n) => !exported.has(n))
        .map((n) => `${where}: ${n}`),
    );
    expect(unknown).toEqual([]);
    // And Prometheus really stored each of them (the scrape worked, names survive the exposition format).
    const notStored = [...new Set(used.flatMap((u) => metricNames(u.expr)))].filter((n) => !stored.has(n));
    expect(notStored).toEqual([]);
    // The catalogue names every metric exported (runtime metrics once, with <c> for the component).
    const catalogue = fs.readFileSync(path.join(ROOT, 'docs', 'metrics.md'), 'utf8');
    const families = [...`${gw}\n${node}`.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
    const undocumented = families.filter((f) => {
      const generic = f.replace(/^kvstore_(?:gateway|node)_(?=process_|nodejs_)/, 'kvstore_<c>_');
      return !catalogue.includes(`\`${f}\``) && !catalogue.includes(`\`${generic}\``);
    });
    expect(undocumented).toEqual([]);
    // Bounded cardinality: no label value looks like one of the test's keys.
    expect(`${gw}\n${node}`).not.toMatch(/="(?:a|b)-\d+"/);
  });
});

/** Range data of the main overview and node panels, for docs/render-panels.py. */
async function dumpPanels(
  prom: PrometheusServer,
  cluster: string,
  file: string,
  startMs: number,
): Promise<void> {
  const end = Date.now() / 1000;
  const start = startMs / 1000;
  const wanted = [
    ['kvstore-overview', 'Request rate by operation'],
    ['kvstore-overview', 'Latency p99 by operation'],
    ['kvstore-overview', 'Errors by operation and status'],
    ['kvstore-gateway', 'Replica connections'],
    ['kvstore-nodes', 'Hints pending'],
    ['kvstore-overview', 'Stored records by node'],
  ];
  const panels = [];
  for (const [uid, title] of wanted) {
    const d = loadDashboards().find((x) => x.dashboard.uid === uid)?.dashboard;
    const p = d && allPanels(d).find((x) => x.title === title);
    if (!p) continue;
    const series = [];
    for (const t of p.targets ?? []) {
      // A short rate window: the whole run is under a minute, and the picture should show its phases.
      const expr = substitute(t.expr, cluster).replaceAll('[30s]', '[5s]');
      for (const s of await prom.queryRange(expr, start, end, 1)) {
        series.push({ legend: t.legendFormat ?? '', metric: s.metric, values: s.values });
      }
    }
    panels.push({
      dashboard: uid,
      title,
      unit: (p as { fieldConfig?: { defaults?: { unit?: string } } }).fieldConfig?.defaults?.unit,
      series,
    });
  }
  fs.writeFileSync(file, JSON.stringify({ start, end, panels }));
}
