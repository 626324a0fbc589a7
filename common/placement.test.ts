import fc from 'fast-check';
import { KvError } from './errors';
import {
  MAX_PARTITIONS,
  PlacementError,
  movedReplicas,
  placePartitions,
  type PlacementInput,
  type PlacementNode,
} from './placement';
import { seededRandom } from './seeded-random';

// A fixed seed: a failure reproduces exactly (fast-check prints the counterexample). For a
// soak run, try other seeds and more runs: PLACEMENT_SEED=7 PLACEMENT_RUNS_X=20 npx jest placement
const SEED = Number(process.env.PLACEMENT_SEED ?? 0x5eed);
const run = (numRuns: number) => ({
  seed: SEED,
  numRuns: numRuns * Number(process.env.PLACEMENT_RUNS_X ?? 1),
});

// ---------------------------------------------------------------------------
// Helpers (they throw plain Errors: much faster than expect() inside properties).

type Placement = string[][];

function fail(message: string): never {
  throw new Error(message);
}

function replicaCounts(placement: readonly (readonly string[])[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const replicas of placement) for (const id of replicas) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

function primaryCounts(placement: Placement, nodes: readonly PlacementNode[]): number[] {
  const counts = new Map(nodes.map((node) => [node.id, 0]));
  for (const replicas of placement) counts.set(replicas[0], (counts.get(replicas[0]) ?? 0) + 1);
  return [...counts.values()];
}

/** Properties 1 and 2: shape and balance. */
function assertValid(input: PlacementInput, placement: Placement): void {
  const { nodes, partitionCount: P, replicationFactor: rf } = input;
  const ids = new Set(nodes.map((node) => node.id));
  if (placement.length !== P) fail(`expected ${P} partitions, got ${placement.length}`);
  placement.forEach((replicas, p) => {
    if (replicas.length !== rf) fail(`partition ${p} has ${replicas.length} replicas, expected ${rf}`);
    if (new Set(replicas).size !== rf) fail(`partition ${p} repeats a node: ${replicas.join(',')}`);
    for (const id of replicas) if (!ids.has(id)) fail(`partition ${p} names unknown node ${id}`);
  });
  const counts = replicaCounts(placement);
  const lo = Math.floor((P * rf) / nodes.length);
  const hi = Math.ceil((P * rf) / nodes.length);
  for (const node of nodes) {
    const c = counts.get(node.id) ?? 0;
    if (c < lo || c > hi) fail(`node ${node.id} holds ${c} replicas, expected ${lo}..${hi}`);
  }
}

function assertWithinOne(values: number[], what: string): void {
  if (Math.max(...values) - Math.min(...values) > 1) fail(`${what} not within one: ${values.join(',')}`);
}

/** A node without a zone is a zone of its own (as in placement.ts). */
function zoneKey(node: PlacementNode): string {
  return node.zone === undefined ? `\u0000${node.id}` : `z:${node.zone}`;
}

function zoneCollisions(placement: Placement, nodes: readonly PlacementNode[]): number {
  const zoneOf = new Map(nodes.map((node) => [node.id, zoneKey(node)]));
  let collisions = 0;
  for (const replicas of placement) {
    const zones = new Set(replicas.map((id) => zoneOf.get(id)));
    collisions += replicas.length - zones.size;
  }
  return collisions;
}

/**
 * The movement lower bound of the brief: a node keeps at most its target of the slots it held,
 * the +1 remainders going to the nodes that held the most (ties by id); every other slot is a
 * copy. For a full previous map (RF replicas everywhere) this is the sum over kept nodes of
 * max(0, old - target) plus the slots of the nodes that left.
 */
function movementLowerBound(previous: Placement, nodes: readonly PlacementNode[], rf: number): number {
  const counts = replicaCounts(previous);
  const total = previous.length * rf;
  const base = Math.floor(total / nodes.length);
  const ranked = nodes
    .map((node) => ({ id: node.id, c: counts.get(node.id) ?? 0 }))
    .sort((a, b) => b.c - a.c || (a.id < b.id ? -1 : 1));
  let kept = 0;
  ranked.forEach(({ c }, k) => {
    kept += Math.min(c, base + (k < total % nodes.length ? 1 : 0));
  });
  return total - kept;
}

/** Any mess: each partition lists 0..RF+1 distinct ids, some of nodes that are gone. */
function randomPrevious(seed: number, P: number, rf: number, ids: readonly string[]): Placement {
  const random = seededRandom(seed);
  const pool = [...ids, 'gone-1', 'gone-2', 'gone-3'];
  const previous: Placement = [];
  for (let p = 0; p < P; p++) {
    const shuffled = [...pool];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    previous.push(shuffled.slice(0, Math.floor(random() * Math.min(pool.length, rf + 2))));
  }
  return previous;
}

function shuffledCopy<T>(items: readonly T[], seed: number): T[] {
  const random = seededRandom(seed);
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

// ---------------------------------------------------------------------------
// Arbitraries.

const idArb = fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,9}$/);

const nodesArb = (maxLength: number, zones: fc.Arbitrary<string | undefined>) =>
  fc.uniqueArray(fc.record({ id: idArb, zone: zones }), {
    minLength: 1,
    maxLength,
    selector: (node) => node.id,
  });

const someZones = fc.option(fc.constantFrom('a', 'b', 'c', 'd'), { nil: undefined, freq: 4 });

/** Nodes (1..12, random ids and zones) with P in 1..512 and RF in 1..min(5, n). */
const inputArb: fc.Arbitrary<PlacementInput> = nodesArb(12, someZones).chain((nodes) =>
  fc.record({
    nodes: fc.constant(nodes),
    partitionCount: fc.integer({ min: 1, max: 512 }),
    replicationFactor: fc.integer({ min: 1, max: Math.min(5, nodes.length) }),
  }),
);

/** z zones of k nodes each (z * k <= 12), RF <= z. */
const equalZonesArb = fc
  .record({ zones: fc.integer({ min: 1, max: 6 }), size: fc.integer({ min: 1, max: 4 }) })
  .filter(({ zones, size }) => zones * size <= 12)
  .chain(({ zones, size }) =>
    fc.record({
      ids: fc.uniqueArray(idArb, { minLength: zones * size, maxLength: zones * size }),
      zoneNames: fc.uniqueArray(idArb, { minLength: zones, maxLength: zones }),
      partitionCount: fc.integer({ min: 1, max: 512 }),
      replicationFactor: fc.integer({ min: 1, max: Math.min(5, zones) }),
    }),
  )
  .map(({ ids, zoneNames, partitionCount, replicationFactor }): PlacementInput => ({
    nodes: ids.map((id, i) => ({ id, zone: zoneNames[i % zoneNames.length] })),
    partitionCount,
    replicationFactor,
  }));

// ---------------------------------------------------------------------------

describe('placePartitions: examples', () => {
  const nodes = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `node-${i}` }));

  it('puts every partition on all 3 nodes when RF = n = 3, primaries split 85/85/86', () => {
    const placement = placePartitions({ nodes: nodes(3), partitionCount: 256, replicationFactor: 3 });
    expect([...replicaCounts(placement).values()]).toEqual([256, 256, 256]);
    expect(primaryCounts(placement, nodes(3)).sort()).toEqual([85, 85, 86]);
  });

  it('gives each of 4 nodes 192 of 768 replicas and 64 primaries', () => {
    const placement = placePartitions({ nodes: nodes(4), partitionCount: 256, replicationFactor: 3 });
    expect([...replicaCounts(placement).values()]).toEqual([192, 192, 192, 192]);
    expect(primaryCounts(placement, nodes(4))).toEqual([64, 64, 64, 64]);
  });

  it('varies replica sets: 6 nodes, RF 3, P 256', () => {
    const placement = placePartitions({ nodes: nodes(6), partitionCount: 256, replicationFactor: 3 });
    // Balance alone forces each node onto exactly half the partitions.
    expect([...replicaCounts(placement).values()]).toEqual([128, 128, 128, 128, 128, 128]);
    assertWithinOne(primaryCounts(placement, nodes(6)), 'primaries');
    // Not a few fixed groups: most of the 20 possible sets occur, and every pair of nodes
    // shares a fair number of partitions (the mean is 256 * 3 / 15 = 51.2).
    expect(new Set(placement.map((r) => [...r].sort().join(','))).size).toBeGreaterThanOrEqual(15);
    const pairs = new Map<string, number>();
    for (const r of placement) {
      for (const a of r)
        for (const b of r) if (a < b) pairs.set(`${a}|${b}`, (pairs.get(`${a}|${b}`) ?? 0) + 1);
    }
    expect(pairs.size).toBe(15);
    for (const shared of pairs.values()) expect(shared).toBeGreaterThanOrEqual(30);
  });

  it('spreads replicas over zones', () => {
    const zoned = ['a', 'b', 'c', 'a', 'b', 'c'].map((zone, i) => ({ id: `node-${i}`, zone }));
    const placement = placePartitions({ nodes: zoned, partitionCount: 256, replicationFactor: 3 });
    expect(zoneCollisions(placement, zoned)).toBe(0);
  });

  it("moves only the newcomer's share when a node joins, and only the leaver's slots when one leaves", () => {
    const before = placePartitions({ nodes: nodes(3), partitionCount: 256, replicationFactor: 3 });
    const grown = placePartitions({
      nodes: nodes(4),
      partitionCount: 256,
      replicationFactor: 3,
      previous: before,
    });
    expect(movedReplicas(before, grown)).toHaveLength(192);
    expect(movedReplicas(before, grown).every((m) => m.to === 'node-3' && m.from !== undefined)).toBe(true);
    const shrunk = placePartitions({
      nodes: nodes(4).filter((n) => n.id !== 'node-1'),
      partitionCount: 256,
      replicationFactor: 3,
      previous: grown,
    });
    expect(movedReplicas(grown, shrunk)).toHaveLength(192);
    expect(movedReplicas(grown, shrunk).every((m) => m.from === 'node-1')).toBe(true);
  });

  it('treats replicas of unknown nodes as gone and keeps the rest in place', () => {
    const previous = [
      ['ghost', 'node-0', 'node-1'],
      ['node-1', 'node-2', 'ghost'],
    ];
    const placement = placePartitions({ nodes: nodes(3), partitionCount: 2, replicationFactor: 3, previous });
    expect(placement).toEqual([
      ['node-2', 'node-0', 'node-1'],
      ['node-1', 'node-2', 'node-0'],
    ]);
    expect(movedReplicas(previous, placement)).toEqual([
      { partition: 0, from: 'ghost', to: 'node-2' },
      { partition: 1, from: 'ghost', to: 'node-0' },
    ]);
  });

  it('lowers RF without copying anything and raises it by one copy per partition', () => {
    const rf3 = placePartitions({ nodes: nodes(5), partitionCount: 100, replicationFactor: 3 });
    const rf2 = placePartitions({
      nodes: nodes(5),
      partitionCount: 100,
      replicationFactor: 2,
      previous: rf3,
    });
    assertValid({ nodes: nodes(5), partitionCount: 100, replicationFactor: 2 }, rf2);
    expect(movedReplicas(rf3, rf2)).toEqual([]);
    const back = placePartitions({
      nodes: nodes(5),
      partitionCount: 100,
      replicationFactor: 3,
      previous: rf2,
    });
    assertValid({ nodes: nodes(5), partitionCount: 100, replicationFactor: 3 }, back);
    expect(movedReplicas(rf2, back)).toHaveLength(100);
  });
});

describe('placePartitions: invalid input', () => {
  const three = [{ id: 'a' }, { id: 'b' }, { id: 'c' }];

  function thrown(input: PlacementInput): PlacementError {
    try {
      placePartitions(input);
    } catch (err) {
      expect(err).toBeInstanceOf(PlacementError);
      expect(err).toBeInstanceOf(KvError);
      return err as PlacementError;
    }
    throw new Error('expected placePartitions to throw');
  }

  it('refuses RF above the node count, naming both numbers', () => {
    const err = thrown({ nodes: three, partitionCount: 8, replicationFactor: 5 });
    expect(err.code).toBe('not_enough_nodes');
    expect(err.message).toContain('5');
    expect(err.message).toContain('3');
    expect(err.context).toEqual({ nodes: 3, replicationFactor: 5 });
    expect(thrown({ nodes: [], partitionCount: 8, replicationFactor: 1 }).code).toBe('not_enough_nodes');
  });

  it.each([
    ['duplicate ids', { nodes: [...three, { id: 'b' }], partitionCount: 8, replicationFactor: 2 }],
    ['an empty id', { nodes: [...three, { id: '' }], partitionCount: 8, replicationFactor: 2 }],
    ['P = 0', { nodes: three, partitionCount: 0, replicationFactor: 2 }],
    ['P = 2.5', { nodes: three, partitionCount: 2.5, replicationFactor: 2 }],
    ['P = NaN', { nodes: three, partitionCount: NaN, replicationFactor: 2 }],
    ['P too large', { nodes: three, partitionCount: MAX_PARTITIONS + 1, replicationFactor: 2 }],
    ['RF = 0', { nodes: three, partitionCount: 8, replicationFactor: 0 }],
    ['RF = 1.5', { nodes: three, partitionCount: 8, replicationFactor: 1.5 }],
    [
      'previous of the wrong length',
      { nodes: three, partitionCount: 2, replicationFactor: 2, previous: [['a']] },
    ],
    [
      'previous naming a node twice',
      { nodes: three, partitionCount: 1, replicationFactor: 2, previous: [['a', 'a']] },
    ],
  ])('rejects %s', (_name, input: PlacementInput) => {
    expect(thrown(input).code).toBe('invalid_placement_input');
  });
});

describe('movedReplicas', () => {
  it('lists each new slot with the replica it replaces', () => {
    expect(movedReplicas([['a', 'b', 'c']], [['a', 'd', 'c']])).toEqual([
      { partition: 0, from: 'b', to: 'd' },
    ]);
    // Position first, then the remaining leavers in order.
    expect(movedReplicas([['a', 'b', 'c']], [['e', 'b', 'd']])).toEqual([
      { partition: 0, from: 'a', to: 'e' },
      { partition: 0, from: 'c', to: 'd' },
    ]);
    expect(movedReplicas([['a', 'b']], [['c', 'a']])).toEqual([{ partition: 0, from: 'b', to: 'c' }]);
  });

  it('reports growth with from undefined, ignores pure shrinkage and reordering', () => {
    expect(movedReplicas([['a']], [['a', 'b']])).toEqual([{ partition: 0, from: undefined, to: 'b' }]);
    expect(movedReplicas([['a', 'b', 'c']], [['c', 'a']])).toEqual([]);
    expect(movedReplicas([['a', 'b'], ['c']], [['b', 'a'], ['c']])).toEqual([]);
    expect(movedReplicas([], [['a']])).toEqual([{ partition: 0, from: undefined, to: 'a' }]);
  });
});

describe('placePartitions: properties', () => {
  it('is valid and balanced from scratch, with primaries within one of P/n', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const placement = placePartitions(input);
        assertValid(input, placement);
        assertWithinOne(primaryCounts(placement, input.nodes), 'primary counts');
      }),
      run(200),
    );
  });

  it('is valid and balanced from any previous map, keeps kept replicas in place, and is idempotent', () => {
    fc.assert(
      fc.property(inputArb, fc.integer(), (input, seed) => {
        const previous = randomPrevious(seed, input.partitionCount, input.replicationFactor, [
          ...input.nodes.map((node) => node.id),
        ]);
        const placement = placePartitions({ ...input, previous });
        assertValid(input, placement);
        placement.forEach((replicas, p) => {
          // Kept replicas are where they were. Only where the previous first replica left
          // may the new first one have been swapped in from another position.
          const order = [...replicas];
          const j = previous[p].indexOf(order[0]);
          if (!order.includes(previous[p][0]) && j > 0 && j < order.length)
            [order[0], order[j]] = [order[j], order[0]];
          previous[p].forEach((id, i) => {
            if (i < input.replicationFactor && order.includes(id) && order[i] !== id) {
              fail(
                `partition ${p}: ${id} moved from position ${i}: ${previous[p].join()} -> ${replicas.join()}`,
              );
            }
          });
        });
        // A sanity check of the bound itself (optimality is checked exhaustively below).
        const moved = movedReplicas(previous, placement).length;
        if (moved < movementLowerBound(previous, input.nodes, input.replicationFactor))
          fail('below the bound');
        // A balanced map is a fixed point.
        expect(placePartitions({ ...input, previous: placement })).toEqual(placement);
      }),
      run(120),
    );
  });

  it('puts every partition in distinct zones from scratch when there are >= RF zones of equal size', () => {
    fc.assert(
      fc.property(equalZonesArb, (input) => {
        const placement = placePartitions(input);
        assertValid(input, placement);
        if (zoneCollisions(placement, input.nodes) !== 0) fail('a partition has two replicas in one zone');
      }),
      run(200),
    );
  });

  const joinOrLeave = fc.record({
    // No zones, equal zones, or any zones.
    input: fc.oneof(
      nodesArb(12, fc.constant(undefined)).chain((nodes) =>
        fc.record({
          nodes: fc.constant(nodes as PlacementNode[]),
          partitionCount: fc.integer({ min: 1, max: 512 }),
          replicationFactor: fc.integer({ min: 1, max: Math.min(5, nodes.length) }),
        }),
      ),
      equalZonesArb,
      inputArb,
    ),
    newcomer: idArb,
    leaverSeed: fc.nat(),
  });

  it("moves exactly the minimum when a node joins: the newcomer's target", () => {
    fc.assert(
      fc.property(joinOrLeave, ({ input, newcomer }) => {
        fc.pre(input.nodes.length < 12 && !input.nodes.some((node) => node.id === newcomer));
        const before = placePartitions(input);
        // The newcomer joins the first node's zone (if any).
        const nodes = [...input.nodes, { id: newcomer, zone: input.nodes[0].zone }];
        const after = placePartitions({ ...input, nodes, previous: before });
        assertValid({ ...input, nodes }, after);
        const newTarget = Math.floor((input.partitionCount * input.replicationFactor) / nodes.length);
        const moves = movedReplicas(before, after);
        expect(movementLowerBound(before, nodes, input.replicationFactor)).toBe(newTarget);
        expect(moves).toHaveLength(newTarget);
        if (moves.some((m) => m.to !== newcomer)) fail('a replica moved to an old node');
      }),
      run(150),
    );
  });

  it("moves exactly the minimum when any node leaves: the leaver's slots, when they can be refilled directly", () => {
    fc.assert(
      fc.property(joinOrLeave, ({ input, leaverSeed }) => {
        fc.pre(input.nodes.length > input.replicationFactor);
        const before = placePartitions(input);
        const leaver = input.nodes[leaverSeed % input.nodes.length].id;
        const nodes = input.nodes.filter((node) => node.id !== leaver);
        const after = placePartitions({ ...input, nodes, previous: before });
        assertValid({ ...input, nodes }, after);
        const moves = movedReplicas(before, after);
        const bound = movementLowerBound(before, nodes, input.replicationFactor);
        expect(bound).toBe(replicaCounts(before).get(leaver) ?? 0);
        // The bound is reachable exactly when every slot of the leaver can go to a node not
        // already in that partition that is under its new target. Not always so: with 11
        // nodes, P = 6, RF = 5, a leaver with 2 slots may share both partitions with the
        // only other 2-slot node, which must grow to 3. Each slot that cannot be refilled
        // directly costs at least one more copy (a staying replica must make room).
        const direct = refillableSlots(before, nodes, leaver, input.replicationFactor);
        if (direct === bound) {
          expect(moves).toHaveLength(bound);
          if (moves.some((m) => m.from !== leaver)) fail('a replica of a staying node moved');
        } else {
          expect(moves.length).toBeGreaterThanOrEqual(2 * bound - direct);
        }
      }),
      run(150),
    );
  });

  it('is deterministic and ignores the order of nodes', () => {
    fc.assert(
      fc.property(inputArb, fc.integer(), fc.boolean(), (input, seed, withPrevious) => {
        const ids = input.nodes.map((node) => node.id);
        const previous = withPrevious
          ? randomPrevious(seed, input.partitionCount, input.replicationFactor, ids)
          : undefined;
        const a = placePartitions({ ...input, previous });
        const b = placePartitions({ ...input, nodes: shuffledCopy(input.nodes, seed), previous });
        expect(b).toEqual(a);
      }),
      run(60),
    );
  });

  /**
   * Guarantees 3 and 4 of placement.ts, checked against exhaustive search on inputs small
   * enough to enumerate every balanced placement: no placement copies fewer replicas, and
   * none with as few copies has fewer zone collisions.
   */
  it('is optimal: fewest copies, then fewest zone collisions (exhaustive check on tiny inputs)', () => {
    const tiny = nodesArb(5, fc.option(fc.constantFrom('a', 'b', 'c'), { nil: undefined, freq: 3 }))
      .chain((nodes) =>
        fc.record({
          nodes: fc.constant(nodes),
          partitionCount: fc.integer({ min: 1, max: 4 }),
          replicationFactor: fc.integer({ min: 1, max: Math.min(3, nodes.length) }),
          seed: fc.integer(),
          withPrevious: fc.boolean(),
        }),
      )
      .filter(
        ({ nodes, partitionCount, replicationFactor }) =>
          binomial(nodes.length, replicationFactor) ** partitionCount <= 10_000,
      );
    fc.assert(
      fc.property(tiny, ({ nodes, partitionCount, replicationFactor, seed, withPrevious }) => {
        const ids = nodes.map((node) => node.id);
        const previous = withPrevious
          ? randomPrevious(seed, partitionCount, replicationFactor, ids)
          : undefined;
        const input = { nodes, partitionCount, replicationFactor, previous };
        const placement = placePartitions(input);
        assertValid(input, placement);
        const got = [movedReplicas(previous ?? [], placement).length, zoneCollisions(placement, nodes)];
        expect(got).toEqual(bestByExhaustiveSearch(input));
      }),
      run(1000),
    );
  });
});

/**
 * How many of the leaver's slots can be given to other nodes without moving any other
 * replica: a max flow from the leaver's partitions to nodes not in them, each node taking up
 * to its new target (base, or base + 1 while +1 remainders are left).
 */
function refillableSlots(
  before: Placement,
  nodes: readonly PlacementNode[],
  leaver: string,
  rf: number,
): number {
  const counts = replicaCounts(before);
  const total = before.length * rf;
  const base = Math.floor(total / nodes.length);
  const holes = before.filter((replicas) => replicas.includes(leaver));
  // Vertices: source, holes, nodes, the pool of +1 remainders, sink.
  const source = 0;
  const node = (x: number) => 1 + holes.length + x;
  const pool = 1 + holes.length + nodes.length;
  const sink = pool + 1;
  const to: number[] = [];
  const cap: number[] = [];
  const out: number[][] = Array.from({ length: sink + 1 }, () => []);
  const edge = (u: number, v: number, c: number) => {
    out[u].push(to.length);
    to.push(v);
    cap.push(c);
    out[v].push(to.length);
    to.push(u);
    cap.push(0);
  };
  let remainders = total % nodes.length;
  nodes.forEach((n, x) => {
    const c = counts.get(n.id) ?? 0;
    if (c > base) remainders--;
    edge(node(x), sink, Math.max(0, base - c));
    if (c <= base) edge(node(x), pool, 1);
  });
  edge(pool, sink, remainders);
  holes.forEach((replicas, h) => {
    edge(source, 1 + h, 1);
    nodes.forEach((n, x) => {
      if (!replicas.includes(n.id)) edge(1 + h, node(x), 1);
    });
  });
  let flow = 0;
  for (;;) {
    const seen = new Set<number>([source]);
    const augment = (u: number): boolean => {
      if (u === sink) return true;
      for (const e of out[u]) {
        if (cap[e] > 0 && !seen.has(to[e])) {
          seen.add(to[e]);
          if (augment(to[e])) {
            cap[e]--;
            cap[e ^ 1]++;
            return true;
          }
        }
      }
      return false;
    };
    if (!augment(source)) return flow;
    flow++;
  }
}

function binomial(n: number, k: number): number {
  let r = 1;
  for (let i = 0; i < k; i++) r = (r * (n - i)) / (i + 1);
  return Math.round(r);
}

/** [copies, zone collisions] of the best balanced placement, by trying them all. */
function bestByExhaustiveSearch(input: PlacementInput): [number, number] {
  const { nodes, partitionCount: P, replicationFactor: rf, previous } = input;
  const n = nodes.length;
  const lo = Math.floor((P * rf) / n);
  const hi = Math.ceil((P * rf) / n);
  const subsets: number[][] = [];
  const pick = (from: number, chosen: number[]) => {
    if (chosen.length === rf) subsets.push([...chosen]);
    else for (let x = from; x < n; x++) pick(x + 1, [...chosen, x]);
  };
  pick(0, []);
  const zones = nodes.map(zoneKey);
  const held = Array.from({ length: P }, (_, p) => new Set(previous?.[p] ?? []));
  const cost = subsets.map((set) =>
    Array.from({ length: P }, (_, p) => {
      const copies = set.filter((x) => !held[p].has(nodes[x].id)).length;
      return [copies, set.length - new Set(set.map((x) => zones[x])).size];
    }),
  );
  const count = new Array<number>(n).fill(0);
  let best: [number, number] = [Infinity, Infinity];
  const search = (p: number, copies: number, collisions: number) => {
    if (p === P) {
      if (count.every((c) => c >= lo) && (copies < best[0] || (copies === best[0] && collisions < best[1]))) {
        best = [copies, collisions];
      }
      return;
    }
    // A node that can no longer reach lo with the partitions left is a dead end.
    if (count.some((c) => c + (P - p) < lo)) return;
    subsets.forEach((set, s) => {
      if (set.some((x) => count[x] >= hi)) return;
      for (const x of set) count[x]++;
      search(p + 1, copies + cost[s][p][0], collisions + cost[s][p][1]);
      for (const x of set) count[x]--;
    });
  };
  search(0, 0, 0);
  return best;
}
