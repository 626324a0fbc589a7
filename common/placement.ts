/**
 * Partition placement (docs/design.md, "Partitioning and placement"): which nodes hold
 * each partition. Pure and deterministic: no I/O, no clock, no randomness; nodes
 * are sorted by id first, so the order of `nodes` never matters.
 *
 * What placePartitions guarantees, for valid input (RF <= number of nodes):
 *
 * 1. Shape. Every partition lists exactly RF distinct nodes, all from `nodes`.
 * 2. Balance. Every node holds floor(P*RF/n) or ceil(P*RF/n) replicas, with or
 *    without `previous`.
 * 3. Minimal movement. Among all placements satisfying 1 and 2, the result has the
 *    fewest slots (partition, node) whose node did not already hold the partition
 *    in `previous`, i.e. the fewest replicas a rebalance must copy (this is exactly
 *    `movedReplicas(previous, result).length`). In particular an already balanced
 *    `previous` on the same nodes is returned unchanged, position for position.
 *    What that minimum is depends on the previous layout. When a node joins a
 *    balanced placement it has been the newcomer's target on every input tested
 *    (not proven in general). When one leaves it is the leaver's slot count
 *    exactly when each of those slots can go to a node under its new target that
 *    is not already in that partition; small P or unequal zones sometimes prevent
 *    that, and each such slot costs at least one more copy (a staying replica
 *    must make room).
 * 4. Zones, second to movement. Among the placements satisfying 1-3, the result
 *    has the fewest zone collisions: the sum over partitions and zones of
 *    (replicas of the partition in that zone - 1) where positive. A node without a
 *    zone counts as a zone of its own. So from scratch, whenever some balanced
 *    placement puts every partition in RF distinct zones, the result does too:
 *    for example whenever there are at least RF zones of equal size. With
 *    `previous`, a collision already present is kept if removing it would cost a
 *    copy; new replicas never add a collision that another choice of equal
 *    movement avoids.
 * 5. Primaries (position 0). A partition whose previous first replica is still a
 *    replica keeps it first (no leadership churn). Among the other partitions the first
 *    replica is chosen so that per-node primary counts are as even as possible
 *    (an optimal "semi-matching"); from scratch that means every node is first for
 *    floor(P/n) or ceil(P/n) partitions. Kept replicas keep their previous
 *    positions (below RF) and new ones take the freed positions, except that
 *    where the previous first replica left, the new first replica may have been
 *    swapped in from another position.
 * 6. Spread. Free choices are broken by a hash of (partition, node id), so replica
 *    sets vary across partitions instead of repeating a few fixed groups. This is
 *    a heuristic, not an optimum.
 *
 * How: (a) a greedy construction: exact per-node targets; keep every previous
 * replica; fill the holes, then let nodes over target hand slots to nodes under
 * target, preferring data already held, no new zone collision, whoever is behind
 * schedule, then the hash; augmenting paths repair the rare dead end. Then (b)
 * the placement is seen as a min-cost flow
 * (partitions -> zone-in-partition -> nodes -> per-node quota, with cost
 * W * copies + zone collisions, W > any collision count), and we cancel negative
 * cycles in its residual graph until none is left, which is the textbook
 * optimality condition for min-cost flow: that is what makes 3 and 4 exact rather
 * than best effort. The greedy start is usually optimal or close, so (b) mostly
 * just proves it. (c) Primaries are evened out by cost-reducing paths.
 *
 * Cost: a few ms for P = 256 and up to a dozen nodes; each cycle (b) cancels takes a
 * pass over all P partitions, so inputs that leave the greedy many zone collisions to
 * fix (large P with zones of unequal size) get slower: ~0.3 s at P = 4096, ~3 s at
 * P = 16384 with 20 nodes in 3 zones of 7, 7 and 6.
 */
import { KvError } from './errors';

export interface PlacementNode {
  readonly id: string;
  readonly zone?: string;
}

export interface PlacementInput {
  readonly nodes: readonly PlacementNode[];
  /** P, >= 1. */
  readonly partitionCount: number;
  /** RF, >= 1 and <= nodes.length. */
  readonly replicationFactor: number;
  /** The current assignment (partitions[p] = node ids), to move as little as possible. May name nodes no longer present. */
  readonly previous?: readonly (readonly string[])[];
}

export type PlacementErrorCode = 'not_enough_nodes' | 'invalid_placement_input';

export class PlacementError extends KvError {
  constructor(code: PlacementErrorCode, message: string, context: Record<string, unknown> = {}) {
    super(code, message, context);
  }
}

/** Same bound as partitionOf (common/hash.ts) and the partition map validator. */
export const MAX_PARTITIONS = 65535;

/** Computes the partition -> replica nodes assignment; see the module comment for what is guaranteed. */
export function placePartitions(input: PlacementInput): string[][] {
  const problem = normalize(input);
  const state = greedyPlacement(problem);
  cancelNegativeCycles(problem, state);
  restorePreviousPositions(problem, state);
  balancePrimaries(problem, state);
  const result: string[][] = [];
  for (let p = 0; p < problem.partitions; p++) {
    const replicas: string[] = [];
    for (let i = 0; i < problem.rf; i++) replicas.push(problem.ids[state.slots[p * problem.rf + i]]);
    result.push(replicas);
  }
  return result;
}

/**
 * Slots (partition, node) that differ between two assignments: what a rebalance must copy.
 * One entry per node in after[p] that is not in before[p], in partition order then position
 * order. `from` is the replica it replaces: the one that was at the same position if that one
 * left, else the next one that left, else undefined (the partition grew). Replicas dropped
 * without a replacement (RF lowered) need no copy and are not listed.
 */
export function movedReplicas(
  before: readonly (readonly string[])[],
  after: readonly (readonly string[])[],
): { partition: number; from: string | undefined; to: string }[] {
  const moves: { partition: number; from: string | undefined; to: string }[] = [];
  const count = Math.max(before.length, after.length);
  for (let p = 0; p < count; p++) {
    const was = before[p] ?? [];
    const now = after[p] ?? [];
    const wasSet = new Set(was);
    const nowSet = new Set(now);
    const leftAt = was.map((id) => !nowSet.has(id));
    const from: (string | undefined)[] = now.map(() => undefined);
    // Same position first, so a replacement reads as "X replaced Y in place".
    now.forEach((id, i) => {
      if (!wasSet.has(id) && leftAt[i]) {
        from[i] = was[i];
        leftAt[i] = false;
      }
    });
    let next = 0;
    now.forEach((id, i) => {
      if (wasSet.has(id) || from[i] !== undefined) return;
      while (next < was.length && !leftAt[next]) next++;
      if (next < was.length) {
        from[i] = was[next];
        leftAt[next] = false;
      }
    });
    now.forEach((id, i) => {
      if (!wasSet.has(id)) moves.push({ partition: p, from: from[i], to: id });
    });
  }
  return moves;
}

// ---------------------------------------------------------------------------
// The problem, normalized: nodes are indices 0..n-1 in id order.

/** An empty slot (or, in Problem.previous, a node that left). */
const HOLE = -1;

interface Problem {
  readonly ids: readonly string[];
  readonly n: number;
  readonly partitions: number;
  readonly rf: number;
  /** Every node holds `base` replicas, plus one for exactly `extra` of them. */
  readonly base: number;
  readonly extra: number;
  /** Node -> zone group; a node without a zone is a group of its own. */
  readonly zoneOf: Int32Array;
  readonly zoneGroups: number;
  /**
   * Zone group -> index among the groups of 2+ nodes, else -1. Only those can collide,
   * so only they get a zone layer in the flow graph.
   */
  readonly sharedIndex: Int32Array;
  readonly sharedZones: number;
  /** held[p * n + x] = 1 when node x held partition p in `previous` (no copy needed). */
  readonly held: Uint8Array;
  /** Previous replicas per partition at their previous positions; HOLE for nodes that left. */
  readonly previous: readonly (readonly number[])[];
  /** Previous first replica per partition if it still exists, else -1. */
  readonly previousFirst: Int32Array;
  /** Lexicographic weight: one copy costs more than every possible zone collision. */
  readonly copyCost: number;
  readonly idHash: Uint32Array;
}

function invalid(message: string, context: Record<string, unknown> = {}): PlacementError {
  return new PlacementError('invalid_placement_input', message, context);
}

function normalize(input: PlacementInput): Problem {
  const { nodes, partitionCount, replicationFactor, previous } = input;
  if (!Number.isInteger(partitionCount) || partitionCount < 1 || partitionCount > MAX_PARTITIONS) {
    throw invalid(`partitionCount must be an integer in [1, ${MAX_PARTITIONS}], got ${partitionCount}`, {
      partitionCount,
    });
  }
  if (!Number.isInteger(replicationFactor) || replicationFactor < 1) {
    throw invalid(`replicationFactor must be an integer >= 1, got ${replicationFactor}`, {
      replicationFactor,
    });
  }
  if (!Array.isArray(nodes)) throw invalid('nodes must be an array');
  const seen = new Set<string>();
  for (const node of nodes) {
    if (typeof node?.id !== 'string' || node.id === '')
      throw invalid('every node needs a non-empty string id');
    if (node.zone !== undefined && typeof node.zone !== 'string') {
      throw invalid(`zone of node ${node.id} must be a string`, { id: node.id });
    }
    if (seen.has(node.id)) throw invalid(`duplicate node id ${node.id}`, { id: node.id });
    seen.add(node.id);
  }
  const n = nodes.length;
  if (n < replicationFactor) {
    throw new PlacementError(
      'not_enough_nodes',
      `replication factor ${replicationFactor} needs at least ${replicationFactor} nodes, but only ${n} ${
        n === 1 ? 'is' : 'are'
      } available`,
      { nodes: n, replicationFactor },
    );
  }
  const P = partitionCount;
  const rf = replicationFactor;
  // Code-unit order, not localeCompare: the result must not depend on the host's locale.
  const sorted = [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const ids = sorted.map((node) => node.id);
  const indexOf = new Map(ids.map((id, x) => [id, x]));

  const zoneOf = new Int32Array(n);
  const groupOfZone = new Map<string, number>();
  const groupSize: number[] = [];
  sorted.forEach((node, x) => {
    let group = node.zone === undefined ? undefined : groupOfZone.get(node.zone);
    if (group === undefined) {
      group = groupSize.length;
      groupSize.push(0);
      if (node.zone !== undefined) groupOfZone.set(node.zone, group);
    }
    zoneOf[x] = group;
    groupSize[group]++;
  });
  const sharedIndex = new Int32Array(groupSize.length).fill(-1);
  let sharedZones = 0;
  groupSize.forEach((size, g) => {
    if (size >= 2) sharedIndex[g] = sharedZones++;
  });

  const held = new Uint8Array(P * n);
  const previousFirst = new Int32Array(P).fill(-1);
  const prev: number[][] = [];
  if (previous !== undefined) {
    if (!Array.isArray(previous) || previous.length !== P) {
      throw invalid(`previous must list exactly ${P} partitions`, {
        length: Array.isArray(previous) ? previous.length : undefined,
      });
    }
    previous.forEach((owners: readonly string[], p) => {
      if (!Array.isArray(owners)) throw invalid(`previous[${p}] must be an array of node ids`);
      const names = new Set<string>();
      const kept: number[] = [];
      owners.forEach((id: unknown, i) => {
        if (typeof id !== 'string') throw invalid(`previous[${p}] must be an array of node ids`);
        if (names.has(id)) throw invalid(`previous[${p}] lists node ${id} twice`, { partition: p, id });
        names.add(id);
        const x = indexOf.get(id);
        if (x === undefined) {
          kept.push(HOLE); // a node that left: its replica is simply gone
          return;
        }
        kept.push(x);
        held[p * n + x] = 1;
        if (i === 0) previousFirst[p] = x;
      });
      prev.push(kept);
    });
  } else {
    for (let p = 0; p < P; p++) prev.push([]);
  }

  const total = P * rf;
  const idHash = new Uint32Array(ids.map(hashString));
  return {
    ids,
    n,
    partitions: P,
    rf,
    base: Math.floor(total / n),
    extra: total % n,
    zoneOf,
    zoneGroups: groupSize.length,
    sharedIndex,
    sharedZones,
    held,
    previous: prev,
    previousFirst,
    copyCost: total + 1,
    idHash,
  };
}

/** FNV-1a: a stable hash of a node id (not security relevant, only for spreading ties). */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** murmur3's finalizer: turns nearby inputs into unrelated outputs. */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function spreadHash(problem: Problem, p: number, x: number): number {
  return mix32(problem.idHash[x] ^ mix32(p + 0x9e3779b9));
}

// ---------------------------------------------------------------------------
// Mutable placement state; set() keeps membership, counts and zone counts consistent.

class State {
  /** slots[p * rf + i] = node at position i of partition p, or HOLE. */
  readonly slots: Int32Array;
  readonly member: Uint8Array;
  readonly count: Int32Array;
  /** Node x must end with base + bonus[x] replicas. */
  readonly bonus: Uint8Array;
  /** zoneCount[p * zoneGroups + g] = replicas of p in zone group g. */
  readonly zoneCount: Int32Array;

  constructor(private readonly problem: Problem) {
    const { partitions: P, n, rf, zoneGroups } = problem;
    this.slots = new Int32Array(P * rf).fill(HOLE);
    this.member = new Uint8Array(P * n);
    this.count = new Int32Array(n);
    this.bonus = new Uint8Array(n);
    this.zoneCount = new Int32Array(P * zoneGroups);
  }

  target(x: number): number {
    return this.problem.base + this.bonus[x];
  }

  isMember(p: number, x: number): boolean {
    return this.member[p * this.problem.n + x] === 1;
  }

  /** Puts x at position i of p (HOLE removes whoever is there). */
  set(p: number, i: number, x: number): void {
    const { n, rf, zoneGroups, zoneOf } = this.problem;
    const old = this.slots[p * rf + i];
    if (old !== HOLE) {
      this.member[p * n + old] = 0;
      this.count[old]--;
      this.zoneCount[p * zoneGroups + zoneOf[old]]--;
    }
    this.slots[p * rf + i] = x;
    if (x !== HOLE) {
      this.member[p * n + x] = 1;
      this.count[x]++;
      this.zoneCount[p * zoneGroups + zoneOf[x]]++;
    }
  }
}

// ---------------------------------------------------------------------------
// (a) Greedy construction.

function greedyPlacement(problem: Problem): State {
  const { n, partitions: P, rf, extra } = problem;
  const state = new State(problem);

  // Targets: the +1 remainders go to the nodes holding the most previous replicas (ties by
  // id), which keeps the most data in place. The optimizer may still trade a +1 between
  // nodes when that saves a copy or a zone collision.
  const heldCount = new Int32Array(n);
  for (let p = 0; p < P; p++) for (const x of problem.previous[p]) if (x !== HOLE) heldCount[x]++;
  const byHeld = Array.from({ length: n }, (_, x) => x).sort((a, b) => heldCount[b] - heldCount[a] || a - b);
  for (let k = 0; k < extra; k++) state.bonus[byHeld[k]] = 1;

  // Keep every previous replica that still exists, at its previous position, even past its
  // node's target: which surplus slots to give up is decided below, where it can be
  // matched with a node able to take it.
  for (let p = 0; p < P; p++) {
    const prev = problem.previous[p];
    for (let i = 0; i < Math.min(prev.length, rf); i++) state.set(p, i, prev[i]);
    // Replicas listed beyond position RF (RF was lowered) take whatever position is free.
    for (let i = rf; i < prev.length; i++) {
      const free = firstHole(state, p, rf);
      if (free < 0) break;
      if (prev[i] !== HOLE) state.set(p, free, prev[i]);
    }
  }

  const pick = nodeChooser(problem, state);
  const stuck: number[] = [];
  // Holes first: they have no alternative.
  for (let p = 0; p < P; p++) {
    for (let i = 0; i < rf; i++) {
      if (state.slots[p * rf + i] !== HOLE) continue;
      const y = pick(p, HOLE, false);
      if (y < 0) stuck.push(p * rf + i);
      else state.set(p, i, y);
    }
  }
  // Then nodes over target hand slots to nodes under target, in partitions (in hash order,
  // for spread) where some node can take over. Whatever cannot be handed over directly
  // becomes a hole for the augmenting paths.
  for (let x = 0; x < n; x++) {
    if (state.count[x] <= state.target(x)) continue;
    const mine: number[] = [];
    for (let slot = 0; slot < P * rf; slot++) if (state.slots[slot] === x) mine.push(slot);
    const order = mine
      .map((slot) => ({ slot, h: spreadHash(problem, Math.floor(slot / rf), x) }))
      .sort((a, b) => a.h - b.h || a.slot - b.slot);
    // First only where the taker adds no zone collision, then anywhere.
    for (const noNewCollision of [true, false]) {
      for (const { slot } of order) {
        if (state.count[x] <= state.target(x)) break;
        if (state.slots[slot] !== x) continue;
        const y = pick(Math.floor(slot / rf), x, noNewCollision);
        if (y >= 0) state.set(Math.floor(slot / rf), slot % rf, y);
      }
    }
    for (const { slot } of order) {
      if (state.count[x] <= state.target(x)) break;
      if (state.slots[slot] !== x) continue;
      state.set(Math.floor(slot / rf), slot % rf, HOLE);
      stuck.push(slot);
    }
  }
  if (stuck.length > 0) fillByAugmentingPaths(problem, state, stuck);
  return state;
}

/**
 * Returns pick(p, leaving, noNewCollision): the best node to take a slot of partition p that is
 * empty (leaving = HOLE) or being given up by node `leaving`, or -1 if no node under target
 * can (or none that adds no zone collision, with noNewCollision).
 *
 * Each node (and zone) fills its deficit at a steady pace: after h of the H slots to fill,
 * node x should have taken about deficit[x] * h / H of them. Nodes within one slot of their
 * schedule rank equal and the hash decides between them, which is what varies the replica
 * sets; a node (or zone) a full slot behind comes first, one a full slot ahead comes last.
 * (Ranking by the raw deficit instead locks into a fixed rotation of a few node groups.)
 */
function nodeChooser(
  problem: Problem,
  state: State,
): (p: number, leaving: number, noNewCollision: boolean) => number {
  const { n, held, zoneGroups, zoneOf } = problem;
  const deficit = new Int32Array(n);
  const zoneDeficit = new Int32Array(zoneGroups);
  let total = 0;
  for (let x = 0; x < n; x++) {
    deficit[x] = Math.max(0, state.target(x) - state.count[x]);
    zoneDeficit[zoneOf[x]] += deficit[x];
    total += deficit[x];
  }
  const taken = new Int32Array(n);
  const zoneTaken = new Int32Array(zoneGroups);
  const pace = (lag: number) => (lag >= 1 ? 2 : lag > -1 ? 1 : 0);
  let done = 0;
  return (p, leaving, noNewCollision) => {
    const progress = (done + 1) / total;
    let best = -1;
    let bestKey: number[] = [];
    for (let y = 0; y < n; y++) {
      if (state.isMember(p, y) || state.count[y] >= state.target(y)) continue;
      const z = zoneOf[y];
      const collisions = collisionDelta(problem, state, p, leaving, y);
      if (noNewCollision && collisions > 0) continue;
      // Larger is better, compared left to right: no copy needed, fewer zone collisions,
      // the zone's pace, the node's pace, the hash.
      const key = [
        held[p * n + y],
        -collisions,
        pace(zoneDeficit[z] * progress - zoneTaken[z]),
        pace(deficit[y] * progress - taken[y]),
        spreadHash(problem, p, y),
      ];
      if (best < 0 || compareKeys(key, bestKey) > 0) {
        best = y;
        bestKey = key;
      }
    }
    if (best >= 0) {
      done++;
      taken[best]++;
      zoneTaken[zoneOf[best]]++;
    }
    return best;
  };
}

function firstHole(state: State, p: number, rf: number): number {
  for (let i = 0; i < rf; i++) if (state.slots[p * rf + i] === HOLE) return i;
  return -1;
}

/** Change in zone collisions when y takes the slot `leaving` gives up in p (or a hole). */
function collisionDelta(problem: Problem, state: State, p: number, leaving: number, y: number): number {
  const { zoneGroups, zoneOf } = problem;
  const base = p * zoneGroups;
  if (leaving !== HOLE && zoneOf[leaving] === zoneOf[y]) return 0;
  const removed = leaving !== HOLE && state.zoneCount[base + zoneOf[leaving]] >= 2 ? 1 : 0;
  const added = state.zoneCount[base + zoneOf[y]] >= 1 ? 1 : 0;
  return added - removed;
}

function compareKeys(a: readonly number[], b: readonly number[]): number {
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return a[k] - b[k];
  return 0;
}

/**
 * The greedy can reach a hole whose every under-target node is already in the partition.
 * Then some full node Y1 not in it joins, and gives up a slot in a partition Q1 that some
 * Y2 can join, ... until a node with room left joins: an augmenting path in the node graph
 * "Y -> Y' if some partition holds Y and not Y'". One always exists from some hole, because
 * a complete placement with these targets exists (uniform partition sizes, targets <= P)
 * and max-flow theory says a non-maximum flow has an augmenting path. Costs are ignored
 * here; the optimizer fixes them.
 */
function fillByAugmentingPaths(problem: Problem, state: State, holes: number[]): void {
  const { n, rf, partitions: P } = problem;
  while (holes.length > 0) {
    // witness[y * n + y2]: a partition holding y but not y2 (or -1).
    const witness = new Int32Array(n * n).fill(-1);
    for (let q = 0; q < P; q++) {
      for (let i = 0; i < rf; i++) {
        const y = state.slots[q * rf + i];
        if (y === HOLE) continue;
        for (let y2 = 0; y2 < n; y2++) {
          if (witness[y * n + y2] < 0 && !state.isMember(q, y2)) witness[y * n + y2] = q;
        }
      }
    }
    const parent = new Int32Array(n).fill(-2); // -2 unvisited, -1 a start node
    const startHole = new Int32Array(n).fill(-1);
    const queue: number[] = [];
    for (const slot of holes) {
      const p = Math.floor(slot / rf);
      for (let y = 0; y < n; y++) {
        if (parent[y] === -2 && !state.isMember(p, y)) {
          parent[y] = -1;
          startHole[y] = slot;
          queue.push(y);
        }
      }
    }
    let end = -1;
    for (let head = 0; head < queue.length && end < 0; head++) {
      const y = queue[head];
      if (state.count[y] < state.target(y)) {
        end = y;
        break;
      }
      for (let y2 = 0; y2 < n; y2++) {
        if (parent[y2] === -2 && witness[y * n + y2] >= 0) {
          parent[y2] = y;
          queue.push(y2);
        }
      }
    }
    if (end < 0) throw new Error('placement: no augmenting path for a hole (bug)');
    const path: number[] = [];
    for (let y = end; y >= 0; y = parent[y]) path.unshift(y);
    // Each node takes its predecessor's slot in the witness partition, then the first node
    // fills the hole. Witnesses were computed before any change, and the path visits each
    // node once, so every step is still valid when applied.
    const steps = path.slice(1).map((y2, k) => {
      const y = path[k];
      const q = witness[y * n + y2];
      return { q, i: positionOf(state, q, y, rf), y2 };
    });
    for (const { q, i, y2 } of steps) state.set(q, i, y2);
    const slot = startHole[path[0]];
    state.set(Math.floor(slot / rf), slot % rf, path[0]);
    holes.splice(holes.indexOf(slot), 1);
  }
}

function positionOf(state: State, p: number, x: number, rf: number): number {
  for (let i = 0; i < rf; i++) if (state.slots[p * rf + i] === x) return i;
  throw new Error(`placement: node ${x} not in partition ${p} (bug)`);
}

// ---------------------------------------------------------------------------
// (b) Optimality by cycle cancelling.
//
// The residual graph of the current (complete, balanced) placement, seen as a flow:
//   X[x]    a node;
//   B       the pool of +1 remainders;
//   P[p]    a partition;
//   Z[p,z]  zone z inside partition p (only zones of 2+ nodes; others cannot collide).
// Arcs:
//   X[x] -> Z[p,zx] or P[p]   x leaves p          cost -copyCost if x did not hold p
//   Z[p,z] -> P[p]            one fewer of z in p  cost -1 if that removes a collision
//   P[p] -> Z[p,z]            one more of z in p   cost +1 if that adds a collision
//   Z[p,zy] or P[p] -> X[y]   y joins p            cost +copyCost if y did not hold p
//   X[u] -> B -> X[v]         u takes v's +1 remainder (u has none, v has one)
// A simple cycle is a set of simultaneous moves "x gives its slot in p to y" that keeps
// every partition size and node count, and its cost is exactly the change in
// copyCost * copies + collisions (each vertex is visited once, so no two moves of the
// cycle touch the same zone of the same partition). No negative cycle <=> optimal.

const LEAVE = 1;
const JOIN = 2;
const TAKE_EXTRA = 3;
const GIVE_EXTRA = 4;

interface Graph {
  vertices: number;
  edges: number;
  from: Int32Array;
  to: Int32Array;
  cost: Float64Array;
  kind: Uint8Array;
  part: Int32Array;
  node: Int32Array;
  pos: Int32Array;
}

function buildResidualGraph(problem: Problem, state: State): Graph {
  const { n, partitions: P, rf, sharedZones, zoneGroups, zoneOf, sharedIndex, held, copyCost } = problem;
  const bonusVertex = n;
  const partVertex = (p: number) => n + 1 + p;
  const zoneVertex = (p: number, s: number) => n + 1 + P + p * sharedZones + s;
  const capacity = P * (n + 2 * sharedZones) + 2 * n;
  const g: Graph = {
    vertices: n + 1 + P + P * sharedZones,
    edges: 0,
    from: new Int32Array(capacity),
    to: new Int32Array(capacity),
    cost: new Float64Array(capacity),
    kind: new Uint8Array(capacity),
    part: new Int32Array(capacity),
    node: new Int32Array(capacity),
    pos: new Int32Array(capacity),
  };
  const add = (from: number, to: number, cost: number, kind = 0, part = -1, node = -1, pos = -1) => {
    const e = g.edges++;
    g.from[e] = from;
    g.to[e] = to;
    g.cost[e] = cost;
    g.kind[e] = kind;
    g.part[e] = part;
    g.node[e] = node;
    g.pos[e] = pos;
  };
  // The vertex a node's replica of p enters and leaves through.
  const entry = (p: number, x: number) => {
    const s = sharedIndex[zoneOf[x]];
    return s < 0 ? partVertex(p) : zoneVertex(p, s);
  };
  for (let p = 0; p < P; p++) {
    for (let g2 = 0; g2 < zoneGroups; g2++) {
      const s = sharedIndex[g2];
      if (s < 0) continue;
      const c = state.zoneCount[p * zoneGroups + g2];
      if (c > 0) add(zoneVertex(p, s), partVertex(p), c >= 2 ? -1 : 0);
      add(partVertex(p), zoneVertex(p, s), c >= 1 ? 1 : 0);
    }
    for (let i = 0; i < rf; i++) {
      const x = state.slots[p * rf + i];
      add(x, entry(p, x), held[p * n + x] ? 0 : -copyCost, LEAVE, p, x, i);
    }
    for (let y = 0; y < n; y++) {
      if (!state.isMember(p, y)) add(entry(p, y), y, held[p * n + y] ? 0 : copyCost, JOIN, p, y);
    }
  }
  for (let x = 0; x < n; x++) {
    if (state.bonus[x]) add(bonusVertex, x, 0, GIVE_EXTRA, -1, x);
    else if (problem.extra > 0) add(x, bonusVertex, 0, TAKE_EXTRA, -1, x);
  }
  return g;
}

function cancelNegativeCycles(problem: Problem, state: State): void {
  for (;;) {
    const graph = buildResidualGraph(problem, state);
    const cycles = findNegativeCycles(graph);
    if (cycles.length === 0) return;
    for (const cycle of cycles) applyCycle(state, graph, cycle);
  }
}

/**
 * Bellman-Ford from a virtual source (all distances 0). After every round the predecessor
 * graph is checked for cycles, which are then negative (a standard property of
 * Bellman-Ford), so negative cycles are found a few rounds after they become reachable,
 * not after |V| rounds. Returns the cycles, each as its edges in forward order; they are
 * vertex-disjoint (every vertex has one predecessor), so they can all be applied at once:
 * no two touch the same node, partition vertex or zone-in-partition, and costs add up.
 */
function findNegativeCycles(g: Graph): number[][] {
  const dist = new Float64Array(g.vertices);
  const pred = new Int32Array(g.vertices).fill(-1);
  for (let round = 0; round <= g.vertices; round++) {
    let changed = false;
    for (let e = 0; e < g.edges; e++) {
      const d = dist[g.from[e]] + g.cost[e];
      if (d < dist[g.to[e]]) {
        dist[g.to[e]] = d;
        pred[g.to[e]] = e;
        changed = true;
      }
    }
    if (!changed) return [];
    const cycles = predecessorCycles(g, pred);
    if (cycles.length > 0) return cycles;
  }
  throw new Error('placement: Bellman-Ford did not converge (bug)');
}

function predecessorCycles(g: Graph, pred: Int32Array): number[][] {
  const cycles: number[][] = [];
  const mark = new Int32Array(g.vertices).fill(-1);
  for (let start = 0; start < g.vertices; start++) {
    let v = start;
    while (v >= 0 && mark[v] < 0) {
      mark[v] = start;
      v = pred[v] >= 0 ? g.from[pred[v]] : -1;
    }
    if (v < 0 || mark[v] !== start) continue;
    // v is on a cycle of this walk: collect it backwards, then reverse.
    const edges: number[] = [];
    let u = v;
    do {
      edges.push(pred[u]);
      u = g.from[pred[u]];
    } while (u !== v);
    edges.reverse();
    let cost = 0;
    for (const e of edges) cost += g.cost[e];
    if (cost < 0) cycles.push(edges);
  }
  return cycles;
}

function applyCycle(state: State, g: Graph, cycle: number[]): void {
  // Start at an arc leaving a node vertex, so every LEAVE is read before its JOIN.
  const start = cycle.findIndex((e) => g.kind[e] === LEAVE || g.kind[e] === TAKE_EXTRA);
  const ordered = [...cycle.slice(start), ...cycle.slice(0, start)];
  let leaving = { p: -1, i: -1 };
  for (const e of ordered) {
    switch (g.kind[e]) {
      case LEAVE:
        leaving = { p: g.part[e], i: g.pos[e] };
        break;
      case JOIN:
        // The joiner takes the leaver's position (same partition by construction of the graph).
        state.set(leaving.p, leaving.i, g.node[e]);
        break;
      case TAKE_EXTRA:
        state.bonus[g.node[e]] = 1;
        break;
      case GIVE_EXTRA:
        state.bonus[g.node[e]] = 0;
        break;
    }
  }
}

/**
 * Moves decide membership, not order, and a replica may leave a partition in one step and
 * come back at another position in a later one. Put every kept replica back at its previous
 * position; the new ones fill the remaining positions in their current order.
 */
function restorePreviousPositions(problem: Problem, state: State): void {
  const { partitions: P, rf } = problem;
  for (let p = 0; p < P; p++) {
    const prev = problem.previous[p];
    const order: number[] = new Array<number>(rf).fill(HOLE);
    const placed = new Set<number>();
    for (let i = 0; i < Math.min(prev.length, rf); i++) {
      if (prev[i] !== HOLE && state.isMember(p, prev[i])) {
        order[i] = prev[i];
        placed.add(prev[i]);
      }
    }
    let next = 0;
    for (let i = 0; i < rf; i++) {
      const x = state.slots[p * rf + i];
      if (placed.has(x)) continue;
      while (order[next] !== HOLE) next++;
      order[next] = x;
    }
    // Same members, new order: no counts change, so write the slots directly.
    for (let i = 0; i < rf; i++) state.slots[p * rf + i] = order[i];
  }
}

// ---------------------------------------------------------------------------
// (c) Primaries.
//
// A partition whose previous first replica is still first is pinned. Every other
// partition may put any of its replicas first. Choosing them to even out the per-node
// counts is a semi-matching problem; it is optimal (minimises every Lp norm of the counts
// at once) when there is no "cost-reducing path" x -> ... -> y with count[y] <= count[x] - 2,
// where x -> x' means some free partition has x first and also holds x' (Harvey, Ladner,
// Lovasz, Tamir 2003). From scratch a floor/ceil split of P over the nodes is always
// reachable, so that is what comes out.

function balancePrimaries(problem: Problem, state: State): void {
  const { n, partitions: P, rf } = problem;
  const free: number[] = [];
  const primaries = new Int32Array(n);
  for (let p = 0; p < P; p++) {
    const first = state.slots[p * rf];
    if (first === problem.previousFirst[p]) primaries[first]++;
    else free.push(p);
  }
  // chosen[p]: the first replica picked for free partition p. Slots are only reordered at the
  // end, by one swap per partition, so every other replica stays where it was.
  const chosen = new Int32Array(P).fill(HOLE);
  // Greedy start: the replica with the fewest primaries so far, ties by hash.
  for (const p of free) {
    let best = state.slots[p * rf];
    for (let i = 1; i < rf; i++) {
      const x = state.slots[p * rf + i];
      if (
        primaries[x] < primaries[best] ||
        (primaries[x] === primaries[best] && spreadHash(problem, p, x) > spreadHash(problem, p, best))
      ) {
        best = x;
      }
    }
    chosen[p] = best;
    primaries[best]++;
  }
  for (;;) {
    // witness[x * n + y]: a free partition with x first that also holds y.
    const witness = new Int32Array(n * n).fill(-1);
    for (const p of free) {
      const x = chosen[p];
      for (let i = 0; i < rf; i++) {
        const y = state.slots[p * rf + i];
        if (y !== x && witness[x * n + y] < 0) witness[x * n + y] = p;
      }
    }
    const path = costReducingPath(n, primaries, witness);
    if (path === undefined) break;
    // Each partition on the path has a different first replica, so they are distinct.
    for (let k = 0; k + 1 < path.length; k++) chosen[witness[path[k] * n + path[k + 1]]] = path[k + 1];
    primaries[path[0]]--;
    primaries[path[path.length - 1]]++;
  }
  for (const p of free) {
    const i = positionOf(state, p, chosen[p], rf);
    // Same members, new order: no counts change, so write the slots directly.
    state.slots[p * rf + i] = state.slots[p * rf];
    state.slots[p * rf] = chosen[p];
  }
}

/** A shortest path from a most-loaded node to a node with at least 2 fewer, if any. */
function costReducingPath(n: number, load: Int32Array, witness: Int32Array): number[] | undefined {
  const sources = Array.from({ length: n }, (_, x) => x).sort((a, b) => load[b] - load[a] || a - b);
  for (const source of sources) {
    const parent = new Int32Array(n).fill(-2);
    parent[source] = -1;
    const queue = [source];
    for (let head = 0; head < queue.length; head++) {
      const x = queue[head];
      if (load[x] <= load[source] - 2) {
        const path: number[] = [];
        for (let y = x; y >= 0; y = parent[y]) path.unshift(y);
        return path;
      }
      for (let y = 0; y < n; y++) {
        if (parent[y] === -2 && witness[x * n + y] >= 0) {
          parent[y] = x;
          queue.push(y);
        }
      }
    }
  }
  return undefined;
}
