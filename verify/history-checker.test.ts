import fc from 'fast-check';
import {
  checkHistory,
  compareParsedVersions,
  countViolations,
  HistoryInputError,
  parseVersionText,
  type CheckOptions,
  type Violation,
  type ViolationKind,
} from './history-checker';
import type {
  ConsistencyLevel,
  DeleteOp,
  FinalRead,
  GetOp,
  History,
  HistoryOp,
  Outcome,
  PutOp,
} from './history';
import { seededRandom } from '../common/seeded-random';

// ---------------------------------------------------------------------------------------------
// Hand-made histories. Times in ms; versions `<wall>.0.gw`, so v(10) < v(20).

const v = (wall: number, logical = 0, writer = 'gw'): string => `${wall}.${logical}.${writer}`;

interface OpSpec {
  id: number;
  t: [number, number];
  key?: string;
  outcome?: Outcome;
  level?: ConsistencyLevel;
  client?: string;
  timeoutMs?: number;
}

function put(s: OpSpec & { value: string; version?: string }): PutOp {
  const outcome = s.outcome ?? 'ok';
  return {
    id: s.id,
    client: s.client ?? 'c',
    op: 'put',
    key: s.key ?? 'k',
    value: s.value,
    start: s.t[0],
    end: s.t[1],
    outcome,
    ...(s.version !== undefined ? { version: s.version } : {}),
    ...(s.level ? { consistency: s.level } : {}),
    ...(s.timeoutMs !== undefined ? { timeoutMs: s.timeoutMs } : {}),
  };
}

function del(s: OpSpec & { version?: string }): DeleteOp {
  return {
    id: s.id,
    client: s.client ?? 'c',
    op: 'delete',
    key: s.key ?? 'k',
    start: s.t[0],
    end: s.t[1],
    outcome: s.outcome ?? 'ok',
    ...(s.version !== undefined ? { version: s.version } : {}),
    ...(s.level ? { consistency: s.level } : {}),
  };
}

function get(s: OpSpec & { value?: string | null; version?: string }): GetOp {
  const outcome = s.outcome ?? 'ok';
  return {
    id: s.id,
    client: s.client ?? 'c',
    op: 'get',
    key: s.key ?? 'k',
    start: s.t[0],
    end: s.t[1],
    outcome,
    ...(outcome === 'ok' ? { value: s.value ?? null } : {}),
    ...(s.version !== undefined ? { version: s.version } : {}),
    ...(s.level ? { consistency: s.level } : {}),
    ...(s.timeoutMs !== undefined ? { timeoutMs: s.timeoutMs } : {}),
  };
}

function check(ops: HistoryOp[], final: FinalRead[] = [], opts: CheckOptions = {}): Violation[] {
  return [...checkHistory({ ops, final }, opts).violations];
}

function kinds(vs: readonly Violation[]): string[] {
  return vs.map((x) => `${x.kind}@${x.opId ?? x.finalSource}`).sort();
}

describe('versions', () => {
  test('compare numerically: wall, then logical, then writer', () => {
    const c = (a: string, b: string) => compareParsedVersions(parseVersionText(a), parseVersionText(b));
    expect(c('9.0.gw', '10.0.gw')).toBeLessThan(0); // numeric, not text
    expect(c('10.2.gw', '10.10.gw')).toBeLessThan(0);
    expect(c('10.1.a', '10.1.b')).toBeLessThan(0);
    expect(c('10.1.gw-a.b', '10.1.gw-a.b')).toBe(0); // a writer may hold dots
    expect(() => parseVersionText('abc')).toThrow(HistoryInputError);
  });
});

describe('acknowledged writes', () => {
  test('a read after an acknowledged put that returns it: no violation', () => {
    expect(
      check([
        put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
        get({ id: 2, t: [20, 30], value: 'a', version: v(5) }),
      ]),
    ).toEqual([]);
  });

  test('absent after an acknowledged put, nothing to explain it: lost-write naming the put', () => {
    const vs = check([
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      get({ id: 2, t: [20, 30], value: null }),
    ]);
    expect(kinds(vs)).toEqual(['lost-write@2']);
    expect(vs[0].writeId).toBe(1);
    expect(vs[0].message).toMatch(/put "a" #1/);
  });

  test('an older value after a newer acknowledged put: lost-write', () => {
    const vs = check([
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      put({ id: 2, t: [20, 30], value: 'b', version: v(25) }),
      get({ id: 3, t: [40, 50], value: 'a', version: v(5) }),
    ]);
    expect(kinds(vs)).toEqual(['lost-write@3']);
    expect(vs[0].writeId).toBe(2);
  });

  test('a read overlapping the newer put may return either value', () => {
    const ops = [
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      put({ id: 2, t: [20, 30], value: 'b', version: v(25) }),
    ];
    expect(check([...ops, get({ id: 3, t: [25, 50], value: 'a', version: v(5) })])).toEqual([]);
    expect(check([...ops, get({ id: 3, t: [25, 50], value: 'b', version: v(25) })])).toEqual([]);
    // ending exactly when the read starts is not "before": no order is assumed
    expect(check([...ops, get({ id: 3, t: [30, 50], value: 'a', version: v(5) })])).toEqual([]);
  });

  test('concurrent acknowledged puts: last writer wins by version, not by time', () => {
    // 'b' started first but got the higher version: reading 'b' afterwards is right, 'a' is not.
    const ops = [
      put({ id: 1, t: [0, 30], value: 'b', version: v(20) }),
      put({ id: 2, t: [10, 25], value: 'a', version: v(15) }),
    ];
    expect(check([...ops, get({ id: 3, t: [40, 50], value: 'b', version: v(20) })])).toEqual([]);
    expect(kinds(check([...ops, get({ id: 3, t: [40, 50], value: 'a', version: v(15) })]))).toEqual([
      'lost-write@3',
    ]);
  });

  test('an indeterminate put with a higher version explains a later value', () => {
    expect(
      check([
        put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
        put({ id: 2, t: [12, 40], value: 'b', outcome: 'failed' }),
        get({ id: 3, t: [50, 60], value: 'b', version: v(15) }),
      ]),
    ).toEqual([]);
  });

  test('an indeterminate put is never required: reading the acknowledged value after it is fine', () => {
    const vs = check([
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      put({ id: 2, t: [12, 40], value: 'b', outcome: 'timeout' }),
      get({ id: 3, t: [50, 60], value: 'b', version: v(15) }),
      get({ id: 4, t: [70, 80], value: 'a', version: v(5) }),
    ]);
    expect(kinds(vs)).toEqual(['hung@2']);
  });
});

describe('deletes', () => {
  test('an acknowledged delete explains absence; a failed one may too', () => {
    const p = put({ id: 1, t: [0, 10], value: 'a', version: v(5) });
    expect(check([p, del({ id: 2, t: [20, 30], version: v(25) }), get({ id: 3, t: [40, 50] })])).toEqual([]);
    expect(check([p, del({ id: 2, t: [20, 30], outcome: 'failed' }), get({ id: 3, t: [40, 50] })])).toEqual(
      [],
    );
    // a delete still in flight while the read runs may have taken effect first
    expect(check([p, del({ id: 2, t: [20, 80], outcome: 'failed' }), get({ id: 3, t: [40, 50] })])).toEqual(
      [],
    );
  });

  test('a delete that started after the read ended cannot explain absence', () => {
    const vs = check([
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      get({ id: 2, t: [20, 30], value: null }),
      del({ id: 3, t: [40, 50], version: v(45) }),
    ]);
    expect(kinds(vs)).toEqual(['lost-write@2']);
  });

  test('an acknowledged delete older than the acknowledged put cannot explain absence', () => {
    const vs = check([
      del({ id: 1, t: [0, 10], version: v(5) }),
      put({ id: 2, t: [20, 30], value: 'a', version: v(25) }),
      get({ id: 3, t: [40, 50], value: null }),
    ]);
    expect(kinds(vs)).toEqual(['lost-write@3']);
  });

  test('a deleted key that comes back with an older value: resurrected', () => {
    const vs = check([
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      del({ id: 2, t: [20, 30], version: v(25) }),
      get({ id: 3, t: [40, 50], value: 'a', version: v(5) }),
    ]);
    expect(kinds(vs)).toEqual(['resurrected@3']);
    expect(vs[0].writeId).toBe(2);
  });

  test('a put concurrent with the delete and versioned after it may legitimately bring the key back', () => {
    expect(
      check([
        del({ id: 1, t: [20, 30], version: v(25) }),
        put({ id: 2, t: [15, 60], value: 'a', outcome: 'failed' }),
        get({ id: 3, t: [70, 80], value: 'a', version: v(27) }),
      ]),
    ).toEqual([]);
  });

  test('a never-written key reads absent; a delete of an absent key is fine', () => {
    expect(check([get({ id: 1, t: [0, 10] }), del({ id: 2, t: [20, 30], version: v(25) })])).toEqual([]);
    expect(check([del({ id: 2, t: [0, 10], version: v(5) }), get({ id: 3, t: [20, 30] })])).toEqual([]);
  });
});

describe('phantoms', () => {
  test('a value no put wrote', () => {
    expect(kinds(check([get({ id: 1, t: [0, 10], value: 'ghost', version: v(1) })]))).toEqual([
      'phantom-value@1',
    ]);
  });

  test('a value written to another key only', () => {
    const vs = check([
      put({ id: 1, key: 'x', t: [0, 10], value: 'a', version: v(5) }),
      get({ id: 2, key: 'y', t: [20, 30], value: 'a', version: v(5) }),
    ]);
    expect(kinds(vs)).toEqual(['phantom-value@2']);
  });

  test('a value whose put started only after the read ended', () => {
    const vs = check([
      get({ id: 1, t: [0, 10], value: 'a', version: v(25) }),
      put({ id: 2, t: [20, 30], value: 'a', version: v(25) }),
    ]);
    expect(kinds(vs)).toEqual(['phantom-value@1']);
  });
});

describe('hung requests', () => {
  test('a timeout is a hang; an answer past the deadline plus slack is one too', () => {
    const vs = check(
      [
        put({ id: 1, t: [0, 5000], value: 'a', outcome: 'timeout', timeoutMs: 5000 }),
        get({ id: 2, t: [0, 5900], timeoutMs: 5000 }), // within the slack
        get({ id: 3, t: [0, 6100], timeoutMs: 5000 }),
        get({ id: 4, t: [0, 9000] }), // uses the default deadline below
        get({ id: 5, t: [0, 9000], outcome: 'failed' }),
      ],
      [],
      { timeoutMs: 7000, hangSlackMs: 1000 },
    );
    expect(kinds(vs)).toEqual(['hung@1', 'hung@3', 'hung@4', 'hung@5']);
  });

  test('without a deadline only timeouts count', () => {
    expect(check([get({ id: 1, t: [0, 60_000] })])).toEqual([]);
  });
});

describe('consistency levels', () => {
  const p = (level: ConsistencyLevel) => put({ id: 1, t: [0, 10], value: 'a', version: v(5), level });
  const g = (level: ConsistencyLevel) => get({ id: 2, t: [20, 30], value: null, level });

  test.each([
    ['quorum', 'quorum', true],
    ['all', 'one', true],
    ['one', 'all', true],
    ['one', 'quorum', false],
    ['quorum', 'one', false],
    ['one', 'one', false],
  ] as const)('write at %s, read at %s: must see = %s', (w, r, must) => {
    expect(check([p(w), g(r)]).length).toBe(must ? 1 : 0);
  });

  test('with RF=5, quorum is 3: quorum + quorum overlap, one + all overlap, quorum + one do not', () => {
    const rf5 = { replicationFactor: 5 };
    expect(check([p('quorum'), g('quorum')], [], rf5)).toHaveLength(1);
    expect(check([p('quorum'), g('one')], [], rf5)).toHaveLength(0);
    expect(check([p('all'), g('one')], [], rf5)).toHaveLength(1);
  });
});

describe('final reads', () => {
  const ops = [
    put({ id: 1, t: [0, 10], value: 'a', version: v(5), level: 'one' }),
    put({ id: 2, key: 'j', t: [0, 10], value: 'b', version: v(6) }),
    del({ id: 3, key: 'j', t: [20, 30], version: v(25) }),
  ];

  test('after convergence every node must hold every acknowledged write, whatever its level', () => {
    const vs = check(ops, [
      { key: 'k', value: 'a', version: v(5), source: 'n1' },
      { key: 'k', value: null, source: 'n2' },
      { key: 'j', value: null, source: 'n1' },
      { key: 'j', value: 'b', version: v(6), source: 'n2' },
    ]);
    expect(kinds(vs)).toEqual(['lost-write@n2', 'resurrected@n2']);
    expect(vs.every((x) => x.finalSource === 'n2' && x.opId === undefined)).toBe(true);
  });

  test('a final read at a level must see only what that level promises', () => {
    expect(check(ops, [{ key: 'k', value: null, source: 'gateway', consistency: 'quorum' }])).toEqual([]);
    expect(
      kinds(check(ops, [{ key: 'j', value: 'b', version: v(6), source: 'gateway', consistency: 'quorum' }])),
    ).toEqual(['resurrected@gateway']);
  });

  test('final reads catch phantoms too', () => {
    expect(kinds(check(ops, [{ key: 'k', value: 'zzz', version: v(1), source: 'n3' }]))).toEqual([
      'phantom-value@n3',
    ]);
  });
});

describe('real-time versions (one clock)', () => {
  test('an indeterminate delete answered before the put began cannot explain absence', () => {
    const ops = [
      del({ id: 1, t: [0, 10], outcome: 'failed' }),
      put({ id: 2, t: [20, 30], value: 'a', version: v(25) }),
      get({ id: 3, t: [40, 50] }),
    ];
    expect(check(ops)).toEqual([]); // clocks of several gateways: it may have been versioned higher
    expect(kinds(check(ops, [], { realTimeVersions: true }))).toEqual(['lost-write@3']);
  });

  test('an unanswered delete may have been versioned late: it still explains absence', () => {
    const ops = [
      del({ id: 1, t: [0, 10], outcome: 'timeout' }),
      put({ id: 2, t: [20, 30], value: 'a', version: v(25) }),
      get({ id: 3, t: [40, 50] }),
    ];
    expect(kinds(check(ops, [], { realTimeVersions: true }))).toEqual(['hung@1']);
  });

  test('a value without ETag from a put answered before the acknowledged put began is older', () => {
    const ops = [
      put({ id: 1, t: [0, 10], value: 'a', outcome: 'failed' }),
      put({ id: 2, t: [20, 30], value: 'b', version: v(25) }),
      get({ id: 3, t: [40, 50], value: 'a' }),
    ];
    expect(check(ops)).toEqual([]);
    expect(kinds(check(ops, [], { realTimeVersions: true }))).toEqual(['lost-write@3']);
  });

  test('an unanswered put seen by a read is bounded by that read', () => {
    const ops = [
      put({ id: 1, t: [0, 10], value: 'a', outcome: 'timeout' }),
      get({ id: 2, t: [5, 12], value: 'a' }),
      put({ id: 3, t: [20, 30], value: 'b', version: v(25) }),
      get({ id: 4, t: [40, 50], value: 'a' }),
    ];
    expect(kinds(check(ops, [], { realTimeVersions: true }))).toEqual(['hung@1', 'lost-write@4']);
  });

  test('a write that began after another was versioned but got a lower version: version-order', () => {
    const ops = [
      put({ id: 1, t: [0, 10], value: 'a', version: v(50) }),
      put({ id: 2, t: [20, 30], value: 'b', version: v(25) }),
    ];
    expect(check(ops)).toEqual([]);
    const vs = check(ops, [], { realTimeVersions: true });
    expect(kinds(vs)).toEqual(['version-order@2']);
    expect(vs[0].writeId).toBe(1);
  });
});

describe('versions seen by reads', () => {
  test('a value read with a version other than its put got: version-mismatch', () => {
    const vs = check([
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      get({ id: 2, t: [20, 30], value: 'a', version: v(6) }),
    ]);
    expect(kinds(vs)).toEqual(['version-mismatch@2']);
  });

  test('two reads of an indeterminate put that disagree on its version: version-mismatch', () => {
    const vs = check([
      put({ id: 1, t: [0, 10], value: 'a', outcome: 'failed' }),
      get({ id: 2, t: [20, 30], value: 'a', version: v(5) }),
      get({ id: 3, t: [40, 50], value: 'a', version: v(7) }),
    ]);
    expect(kinds(vs)).toEqual(['version-mismatch@3']);
  });

  test('an indeterminate put learns its version from a read and is judged by it', () => {
    const ops = [
      put({ id: 1, t: [0, 10], value: 'a', version: v(5) }),
      put({ id: 2, t: [0, 10], value: 'b', outcome: 'failed' }),
      get({ id: 3, t: [11, 12], value: 'b', version: v(20) }),
      put({ id: 4, t: [13, 14], value: 'c', version: v(15) }),
    ];
    expect(check([...ops, get({ id: 5, t: [20, 30], value: 'b', version: v(20) })])).toEqual([]);
    expect(kinds(check([...ops, get({ id: 5, t: [20, 30], value: 'a', version: v(5) })]))).toEqual([
      'lost-write@5',
    ]);
  });
});

describe('malformed histories', () => {
  const p = put({ id: 1, t: [0, 10], value: 'a', version: v(5) });
  test.each<[string, HistoryOp[]]>([
    ['duplicate ids', [p, get({ id: 1, t: [20, 30] })]],
    ['a value written twice', [p, put({ id: 2, t: [20, 30], value: 'a', version: v(25) })]],
    ['end before start', [put({ id: 1, t: [10, 0], value: 'a', version: v(5) })]],
    ['an acknowledged put without version', [put({ id: 1, t: [0, 10], value: 'a' })]],
    ['an unparsable version', [put({ id: 1, t: [0, 10], value: 'a', version: 'x' })]],
  ])('%s', (_name, ops) => {
    expect(() => check(ops)).toThrow(HistoryInputError);
  });

  test('the same value on two keys is fine', () => {
    expect(
      check([p, put({ id: 2, key: 'other', t: [0, 10], value: 'a', version: v(6) })]).filter(
        (x) => x.kind !== 'hung',
      ),
    ).toEqual([]);
  });
});

test('countViolations counts every kind', () => {
  const counts = countViolations([
    { kind: 'hung', key: 'k', message: '' },
    { kind: 'hung', key: 'k', message: '' },
    { kind: 'lost-write', key: 'k', message: '' },
  ]);
  expect(counts).toEqual({
    'lost-write': 1,
    resurrected: 0,
    'phantom-value': 0,
    hung: 2,
    'version-mismatch': 0,
    'version-order': 0,
  });
});

// ---------------------------------------------------------------------------------------------
// Random histories from a simulated Dynamo-style store: RF replicas, last writer wins, one clock.

type Bug = 'none' | 'forget' | 'clock';

interface SimOptions {
  seed: number;
  ops: number;
  keys: number;
  clients: number;
  levels: readonly ConsistencyLevel[];
  bug: Bug;
}

interface Stored {
  version: number;
  value: string | null;
}

/**
 * A correct quorum store (bug 'none'): an acknowledged write is on W replicas by the time it is
 * answered, a read merges R replicas read inside its interval, versions come from one counter at
 * issue time. 'forget' drops replica writes, acknowledged ones included; 'clock' versions randomly.
 */
function simulate(o: SimOptions): History {
  const rnd = seededRandom(o.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const RF = 3;
  const need = (l: ConsistencyLevel) => (l === 'one' ? 1 : l === 'quorum' ? 2 : 3);
  const shuffled = () => [0, 1, 2].sort(() => rnd() - 0.5);
  type Ev =
    | { t: number; rank: 0; kind: 'issue'; op: number }
    | { t: number; rank: 1; kind: 'apply'; op: number; replica: number }
    | { t: number; rank: 2; kind: 'read'; op: number; replica: number };
  const events: Ev[] = [];
  interface Plan {
    id: number;
    client: string;
    kind: 'put' | 'delete' | 'get';
    key: string;
    start: number;
    end: number;
    outcome: Outcome;
    level: ConsistencyLevel;
    version?: number;
    readResult?: Stored | null;
    seen: (Stored | undefined)[];
  }
  const plans: Plan[] = [];
  for (let i = 0; i < o.ops; i++) {
    const start = rnd() * 1000;
    const end = start + 0.5 + rnd() * 60;
    const roll = rnd();
    const kind = roll < 0.45 ? 'put' : roll < 0.6 ? 'delete' : 'get';
    const level = pick(o.levels);
    const outRoll = rnd();
    const outcome: Outcome = outRoll < 0.75 ? 'ok' : outRoll < 0.92 ? 'failed' : 'timeout';
    const plan: Plan = {
      id: i + 1,
      client: `c${i % o.clients}`,
      kind,
      key: `k${Math.floor(rnd() * o.keys)}`,
      start,
      end,
      outcome,
      level,
      seen: [],
    };
    plans.push(plan);
    const n = need(level);
    if (kind === 'get') {
      if (outcome !== 'ok') continue;
      for (const r of shuffled().slice(0, n)) {
        events.push({ t: start + rnd() * (end - start), rank: 2, kind: 'read', op: i, replica: r });
      }
      continue;
    }
    let issue: number | undefined;
    const applies: { replica: number; t: number }[] = [];
    const later = (from: number) => from + rnd() * 300;
    const order = shuffled();
    if (outcome === 'ok') {
      issue = start + rnd() * (end - start) * 0.5;
      const acks = n + Math.floor(rnd() * (RF - n + 1));
      order.forEach((r, j) => {
        if (j < acks) applies.push({ replica: r, t: issue! + rnd() * (end - issue!) });
        else if (rnd() < 0.6) applies.push({ replica: r, t: later(end) });
      });
    } else if (outcome === 'failed') {
      if (rnd() < 0.8) {
        issue = start + rnd() * (end - start);
        const before = Math.floor(rnd() * n);
        order.forEach((r, j) => {
          if (j < before) applies.push({ replica: r, t: issue! + rnd() * (end - issue!) });
          else if (rnd() < 0.5) applies.push({ replica: r, t: later(end) });
        });
      }
    } else if (rnd() < 0.8) {
      issue = start + rnd() * (end - start + 100); // an unanswered request may be served after its deadline
      for (const r of order) if (rnd() < 0.6) applies.push({ replica: r, t: issue + rnd() * 100 });
    }
    if (issue === undefined) continue;
    events.push({ t: issue, rank: 0, kind: 'issue', op: i });
    for (const a of applies) {
      if (o.bug === 'forget' && rnd() < 0.15) continue;
      events.push({ t: a.t, rank: 1, kind: 'apply', op: i, replica: a.replica });
    }
  }
  events.sort((a, b) => a.t - b.t || a.rank - b.rank);
  const replicas = [0, 1, 2].map(() => new Map<string, Stored>());
  let counter = 0;
  for (const e of events) {
    const p = plans[e.op];
    if (e.kind === 'issue') {
      p.version = o.bug === 'clock' ? 1 + Math.floor(rnd() * 5000) : ++counter;
      if (o.bug === 'clock') counter++;
    } else if (e.kind === 'apply') {
      const cur = replicas[e.replica].get(p.key);
      if (!cur || cur.version < p.version!) {
        replicas[e.replica].set(p.key, { version: p.version!, value: p.kind === 'put' ? `v${p.id}` : null });
      }
    } else {
      p.seen.push(replicas[e.replica].get(p.key));
    }
  }
  const newest = (xs: (Stored | undefined)[]): Stored | undefined =>
    xs.reduce<Stored | undefined>((a, b) => (!a ? b : !b ? a : a.version >= b.version ? a : b), undefined);
  const ver = (n: number) => `${1_000_000 + n}.0.gw`;
  const ops: HistoryOp[] = plans.map((p): HistoryOp => {
    const base = {
      id: p.id,
      client: p.client,
      key: p.key,
      start: p.start,
      end: p.end,
      outcome: p.outcome,
      consistency: p.level,
      ...(p.outcome === 'failed' ? { error: 'unavailable' } : {}),
    };
    if (p.kind === 'put') {
      return {
        ...base,
        op: 'put',
        value: `v${p.id}`,
        ...(p.outcome === 'ok' ? { version: ver(p.version!) } : {}),
      };
    }
    if (p.kind === 'delete') {
      return { ...base, op: 'delete', ...(p.outcome === 'ok' ? { version: ver(p.version!) } : {}) };
    }
    if (p.outcome !== 'ok') return { ...base, op: 'get' };
    const rec = newest(p.seen);
    return rec?.value
      ? { ...base, op: 'get', value: rec.value, version: ver(rec.version) }
      : { ...base, op: 'get', value: null };
  });
  const keys = [...new Set(plans.map((p) => p.key))];
  const final: FinalRead[] = [];
  // A quorum read through the gateway before repair, then each replica after repair (convergence).
  for (const key of keys) {
    const rec = newest(shuffledPick(rnd, replicas, 2).map((m) => m.get(key)));
    final.push(
      rec?.value
        ? { key, value: rec.value, version: ver(rec.version), source: 'gateway', consistency: 'quorum' }
        : { key, value: null, source: 'gateway', consistency: 'quorum' },
    );
  }
  for (const key of keys) {
    const rec = newest(replicas.map((m) => m.get(key)));
    for (const [i] of replicas.entries()) {
      final.push(
        rec?.value
          ? { key, value: rec.value, version: ver(rec.version), source: `n${i + 1}` }
          : { key, value: null, source: `n${i + 1}` },
      );
    }
  }
  return { ops, final };
}

function shuffledPick<T>(rnd: () => number, xs: readonly T[], n: number): T[] {
  return [...xs].sort(() => rnd() - 0.5).slice(0, n);
}

/**
 * The semantics written out as literally as possible (for each read, for each write it must see,
 * is there one state that is not provably older), to cross-check the checker's reductions.
 */
function oracle(h: History, realTime: boolean): Set<string> {
  const rf = 3;
  const strength = (l: ConsistencyLevel | undefined) => (l === 'one' ? 1 : l === 'all' ? 3 : 2);
  const out = new Set<string>();
  const keys = new Set([...h.ops.map((o) => o.key), ...h.final.map((f) => f.key)]);
  for (const key of keys) {
    const ops = h.ops.filter((o) => o.key === key);
    const writes = ops.filter((o): o is PutOp | DeleteOp => o.op !== 'get');
    type R = { value: string | null; version?: string; start: number; end: number; s: number; ref: string };
    const reads: R[] = [
      ...ops
        .filter((o): o is GetOp => o.op === 'get' && o.outcome === 'ok')
        .map((o) => ({
          value: o.value ?? null,
          version: o.version,
          start: o.start,
          end: o.end,
          s: strength(o.consistency),
          ref: String(o.id),
        })),
      ...h.final
        .filter((f) => f.key === key)
        .map((f) => ({
          value: f.value,
          version: f.version,
          start: Infinity,
          end: Infinity,
          s: f.consistency ? strength(f.consistency) : Infinity,
          ref: f.source,
        })),
    ];
    const putOf = (value: string) => writes.find((w) => w.op === 'put' && w.value === value);
    const versionOf = (w: PutOp | DeleteOp): string | undefined => {
      if (w.version) return w.version;
      if (w.op !== 'put') return undefined;
      return reads.find((r) => r.value === w.value && r.version && w.start <= r.end)?.version;
    };
    const issuedBy = (w: PutOp | DeleteOp): number => {
      let t = w.outcome === 'timeout' ? Infinity : w.end;
      if (w.op === 'put')
        for (const r of reads) if (r.value === w.value && w.start <= r.end) t = Math.min(t, r.end);
      return t;
    };
    const older = (x: PutOp | DeleteOp, w: PutOp | DeleteOp): boolean => {
      const vx = versionOf(x);
      if (vx !== undefined)
        return compareParsedVersions(parseVersionText(vx), parseVersionText(w.version!)) < 0;
      return realTime && issuedBy(x) < w.start;
    };
    for (const r of reads) {
      const m = writes.filter(
        (w) => w.outcome === 'ok' && w.end < r.start && strength(w.consistency) + r.s > rf,
      );
      if (r.value !== null) {
        const x = putOf(r.value);
        if (!x || x.start > r.end) out.add(`phantom@${r.ref}`);
        else if (m.some((w) => older(x, w))) out.add(`stale@${r.ref}`);
      } else if (m.length > 0) {
        const ok = writes.some((t) => t.op === 'delete' && t.start <= r.end && m.every((w) => !older(t, w)));
        if (!ok) out.add(`stale@${r.ref}`);
      }
    }
  }
  return out;
}

function readFindings(vs: readonly Violation[]): Set<string> {
  const map: Partial<Record<ViolationKind, string>> = {
    'lost-write': 'stale',
    resurrected: 'stale',
    'phantom-value': 'phantom',
  };
  return new Set(vs.filter((x) => map[x.kind]).map((x) => `${map[x.kind]}@${x.opId ?? x.finalSource}`));
}

const simArb = (bug: Bug) =>
  fc.record({
    seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    ops: fc.integer({ min: 1, max: 120 }),
    keys: fc.integer({ min: 1, max: 4 }),
    clients: fc.integer({ min: 1, max: 5 }),
    levels: fc.constantFrom<readonly ConsistencyLevel[]>(
      ['quorum'],
      ['quorum', 'one', 'all'],
      ['all', 'one'],
    ),
    bug: fc.constant(bug),
  });

describe('random histories', () => {
  test('a correct store never shows a violation (besides its timeouts), in either ordering mode', () => {
    fc.assert(
      fc.property(simArb('none'), fc.boolean(), (o, realTime) => {
        const h = simulate(o);
        const vs = checkHistory(h, { realTimeVersions: realTime }).violations;
        const timeouts = h.ops.filter((x) => x.outcome === 'timeout').length;
        expect(vs.filter((x) => x.kind !== 'hung')).toEqual([]);
        expect(vs.filter((x) => x.kind === 'hung')).toHaveLength(timeouts);
      }),
      { numRuns: 400 },
    );
  });

  test.each<Bug>(['none', 'forget', 'clock'])(
    'the checker finds exactly what the literal semantics find (bug: %s)',
    (bug) => {
      fc.assert(
        fc.property(simArb(bug), fc.boolean(), (o, realTime) => {
          const h = simulate(o);
          const found = readFindings(checkHistory(h, { realTimeVersions: realTime }).violations);
          expect([...found].sort()).toEqual([...oracle(h, realTime)].sort());
        }),
        { numRuns: 300 },
      );
    },
  );

  test('a store that forgets writes is caught', () => {
    let caught = 0;
    for (let seed = 1; seed <= 100; seed++) {
      const h = simulate({ seed, ops: 100, keys: 3, clients: 4, levels: ['quorum'], bug: 'forget' });
      if (checkHistory(h).violations.some((x) => x.kind === 'lost-write' || x.kind === 'resurrected'))
        caught++;
    }
    expect(caught).toBeGreaterThan(30);
  });

  test('a clock that runs against real time is caught with realTimeVersions', () => {
    let caught = 0;
    for (let seed = 1; seed <= 50; seed++) {
      const h = simulate({ seed, ops: 60, keys: 2, clients: 3, levels: ['quorum'], bug: 'clock' });
      if (checkHistory(h, { realTimeVersions: true }).violations.some((x) => x.kind === 'version-order'))
        caught++;
    }
    expect(caught).toBeGreaterThan(40);
  });

  test('turning one read of a correct history into provably older data is always caught', () => {
    let mutated = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const levels: ConsistencyLevel[] = seed % 2 ? ['quorum'] : ['quorum', 'all', 'one'];
      const h = simulate({ seed, ops: 80, keys: 3, clients: 4, levels, bug: 'none' });
      const ops = [...h.ops];
      // A read that must see an acknowledged put W, and an acknowledged put X of the key older than W.
      const ver = (w: PutOp) => parseVersionText(w.version!);
      for (const [i, r] of ops.entries()) {
        if (r.op !== 'get' || r.outcome !== 'ok' || r.consistency === 'one') continue;
        const acked = ops.filter(
          (w): w is PutOp =>
            w.op === 'put' && w.key === r.key && w.outcome === 'ok' && w.consistency !== 'one',
        );
        const must = acked.filter((w) => w.end < r.start);
        if (must.length === 0) continue;
        const newest = must.reduce((a, b) => (compareParsedVersions(ver(a), ver(b)) >= 0 ? a : b));
        const olderPut = acked.find((x) => compareParsedVersions(ver(x), ver(newest)) < 0);
        if (!olderPut) continue;
        ops[i] = { ...r, value: olderPut.value, version: olderPut.version };
        const vs = checkHistory({ ops, final: h.final }).violations;
        expect(vs.filter((x) => x.opId === r.id).map((x) => x.kind)).toEqual([
          expect.stringMatching(/^(lost-write|resurrected)$/),
        ]);
        mutated++;
        break;
      }
    }
    expect(mutated).toBeGreaterThan(100);
  });

  test('turning a read that must see an acknowledged put into absent, with no delete around, is caught', () => {
    let mutated = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const h = simulate({ seed, ops: 60, keys: 4, clients: 3, levels: ['quorum'], bug: 'none' });
      const ops = [...h.ops];
      const i = ops.findIndex(
        (r) =>
          r.op === 'get' &&
          r.outcome === 'ok' &&
          !ops.some((d) => d.op === 'delete' && d.key === r.key) &&
          ops.some((w) => w.op === 'put' && w.key === r.key && w.outcome === 'ok' && w.end < r.start),
      );
      if (i < 0) continue;
      const r = ops[i] as GetOp;
      ops[i] = { ...r, value: null, version: undefined };
      const vs = checkHistory({ ops, final: h.final }, { realTimeVersions: seed % 2 === 0 }).violations;
      expect(vs.filter((x) => x.opId === r.id).map((x) => x.kind)).toEqual(['lost-write']);
      mutated++;
    }
    expect(mutated).toBeGreaterThan(50);
  });
});
