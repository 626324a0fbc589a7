import type { PartitionMap } from '../common/partition-map';
import { completeMoves, mapViolations, planRebalance } from '../common/rebalance-plan';
import type { ObservedNode } from './node-addresses';
import { decideScaling, ScalingError, type ScalingInput } from './scaling';

const spec = (replicas: number): ScalingInput['spec'] => ({ replicas, replicationFactor: 3, partitions: 32 });
const ip = (k: number): string => `10.0.0.${k + 1}`;

/** Node pods 0..count-1, all with an IP and ready unless listed. */
function pods(
  count: number,
  opts: { noIp?: number[]; notReady?: number[]; zones?: string[] } = {},
): Map<string, ObservedNode> {
  const out = new Map<string, ObservedNode>();
  for (let k = 0; k < count; k++) {
    const id = `demo-node-${k}`;
    out.set(id, {
      id,
      ordinal: k,
      ...(opts.noIp?.includes(k) ? {} : { ip: ip(k) }),
      ready: !opts.noIp?.includes(k) && !opts.notReady?.includes(k),
      ...(opts.zones ? { zone: opts.zones[k % opts.zones.length] } : {}),
    });
  }
  return out;
}

function created(count: number): PartitionMap {
  const d = decideScaling({ cluster: 'demo', spec: spec(count), map: undefined, nodes: pods(count) });
  if (d.action.kind !== 'create-map') throw new Error(`expected create-map, got ${d.action.kind}`);
  return d.action.map;
}

describe('decideScaling: a fresh cluster', () => {
  test('runs spec.replicas pods and waits until every one has an IP', () => {
    const d = decideScaling({
      cluster: 'demo',
      spec: spec(3),
      map: undefined,
      nodes: pods(3, { noIp: [1, 2] }),
    });
    expect(d.statefulSetReplicas).toBe(3);
    expect(d.action).toEqual({
      kind: 'wait',
      reason: expect.any(String),
      nodes: ['demo-node-1', 'demo-node-2'],
    });
    // Pods not created yet count as without IP too.
    expect(
      decideScaling({ cluster: 'demo', spec: spec(3), map: undefined, nodes: new Map() }).action.kind,
    ).toBe('wait');
  });

  test('writes the first map with every node at its pod IP, placed from scratch; readiness is not needed', () => {
    const d = decideScaling({
      cluster: 'demo',
      spec: spec(3),
      map: undefined,
      nodes: pods(3, { notReady: [0, 1, 2] }),
    });
    expect(d.action.kind).toBe('create-map');
    const map = created(3);
    expect(map).toMatchObject({
      cluster: 'demo',
      epoch: 1,
      partitionCount: 32,
      replicationFactor: 3,
      moves: [],
    });
    expect(map.rebalance).toBeUndefined();
    expect(map.nodes).toEqual([
      { id: 'demo-node-0', address: '10.0.0.1:7001' },
      { id: 'demo-node-1', address: '10.0.0.2:7001' },
      { id: 'demo-node-2', address: '10.0.0.3:7001' },
    ]);
    expect(mapViolations(map)).toEqual([]);
  });

  test('zones known for the pods go into the map (zone-aware placement)', () => {
    const d = decideScaling({
      cluster: 'demo',
      spec: spec(3),
      map: undefined,
      nodes: pods(3, { zones: ['a', 'b', 'c'] }),
    });
    if (d.action.kind !== 'create-map') throw new Error('expected create-map');
    expect(d.action.map.nodes.map((n) => n.zone)).toEqual(['a', 'b', 'c']);
  });
});

describe('decideScaling: a running cluster', () => {
  test('nothing to do when the map is the spec', () => {
    const d = decideScaling({ cluster: 'demo', spec: spec(3), map: created(3), nodes: pods(3) });
    expect(d).toEqual({ statefulSetReplicas: 3, action: { kind: 'none' }, heldAddresses: [] });
  });

  test('a node with a new IP: a new epoch first, nothing else in the same pass', () => {
    const nodes = pods(5);
    nodes.set('demo-node-1', { id: 'demo-node-1', ordinal: 1, ip: '10.9.9.9', ready: true });
    const d = decideScaling({ cluster: 'demo', spec: spec(5), map: created(3), nodes });
    expect(d.action.kind).toBe('update-addresses');
    if (d.action.kind !== 'update-addresses') return;
    expect(d.action.map.epoch).toBe(2);
    expect(d.action.changed).toEqual([{ id: 'demo-node-1', from: '10.0.0.2:7001', to: '10.9.9.9:7001' }]);
    expect(d.statefulSetReplicas).toBe(5);
  });

  test('scale-out: the StatefulSet grows at once, the plan waits for the new pods to run and be ready', () => {
    const map = created(3);
    let d = decideScaling({ cluster: 'demo', spec: spec(5), map, nodes: pods(3) });
    expect(d.statefulSetReplicas).toBe(5);
    expect(d.action).toMatchObject({ kind: 'wait', nodes: ['demo-node-3', 'demo-node-4'] });
    d = decideScaling({ cluster: 'demo', spec: spec(5), map, nodes: pods(5, { notReady: [4] }) });
    expect(d.action).toMatchObject({ kind: 'wait', nodes: ['demo-node-4'] });
    d = decideScaling({ cluster: 'demo', spec: spec(5), map, nodes: pods(5) });
    expect(d.action).toEqual({
      kind: 'scale',
      from: 3,
      target: [0, 1, 2, 3, 4].map((k) => ({ id: `demo-node-${k}`, address: `${ip(k)}:7001` })),
    });
  });

  test('a rebalance recorded towards the spec is left to the rebalancer (resumed, not re-planned)', () => {
    const planned = planRebalance(
      created(3),
      [0, 1, 2, 3, 4].map((k) => ({ id: `demo-node-${k}`, address: `${ip(k)}:7001` })),
      1000,
    );
    expect(planned.moves.length).toBeGreaterThan(0);
    const d = decideScaling({ cluster: 'demo', spec: spec(5), map: planned, nodes: pods(5) });
    expect(d).toEqual({ statefulSetReplicas: 5, action: { kind: 'none' }, heldAddresses: [] });
  });

  test('scale-in: planned at once, and the StatefulSet keeps the drained nodes until they left the map', () => {
    const five = completeMoves(
      planRebalance(
        created(3),
        [0, 1, 2, 3, 4].map((k) => ({ id: `demo-node-${k}`, address: `${ip(k)}:7001` })),
        1000,
      ),
      [],
    );
    const balanced = completeMoves(five, five.moves);
    expect(balanced.nodes).toHaveLength(5);
    let d = decideScaling({ cluster: 'demo', spec: spec(3), map: balanced, nodes: pods(5) });
    expect(d.statefulSetReplicas).toBe(5);
    expect(d.action).toMatchObject({ kind: 'scale', from: 5 });
    if (d.action.kind !== 'scale') return;
    expect(d.action.target.map((n) => n.id)).toEqual(['demo-node-0', 'demo-node-1', 'demo-node-2']);

    // Drain under way: still 5 pods, nothing new to plan.
    const draining = planRebalance(balanced, d.action.target, 2000);
    d = decideScaling({ cluster: 'demo', spec: spec(3), map: draining, nodes: pods(5) });
    expect(d).toEqual({ statefulSetReplicas: 5, action: { kind: 'none' }, heldAddresses: [] });

    // Drained nodes left the map: the StatefulSet shrinks (highest ordinals go first).
    const done = completeMoves(draining, draining.moves);
    expect(done.nodes).toHaveLength(3);
    d = decideScaling({ cluster: 'demo', spec: spec(3), map: done, nodes: pods(5) });
    expect(d).toEqual({ statefulSetReplicas: 3, action: { kind: 'none' }, heldAddresses: [] });
  });

  test('scale-in does not wait for draining pods to be ready or have an IP', () => {
    const balanced = completeMoves(
      planRebalance(
        created(3),
        [0, 1, 2, 3].map((k) => ({ id: `demo-node-${k}`, address: `${ip(k)}:7001` })),
        1000,
      ),
      [],
    );
    const four = completeMoves(balanced, balanced.moves);
    const d = decideScaling({ cluster: 'demo', spec: spec(3), map: four, nodes: pods(4, { notReady: [3] }) });
    expect(d.action.kind).toBe('scale');
  });

  test('refuses maps it cannot drive: foreign node ids, another partition count, fewer nodes than the RF', () => {
    const map = created(3);
    const foreign: PartitionMap = {
      ...map,
      nodes: map.nodes.map((n, i) => (i === 0 ? { ...n, id: 'n1' } : n)),
      partitions: map.partitions.map((r) => r.map((id) => (id === 'demo-node-0' ? 'n1' : id))),
    };
    expect(() => decideScaling({ cluster: 'demo', spec: spec(3), map: foreign, nodes: pods(3) })).toThrow(
      ScalingError,
    );
    expect(() =>
      decideScaling({ cluster: 'demo', spec: { ...spec(3), partitions: 64 }, map, nodes: pods(3) }),
    ).toThrow(/partition count cannot change/);
    const err = (() => {
      try {
        decideScaling({
          cluster: 'demo',
          spec: { replicas: 2, replicationFactor: 2, partitions: 32 },
          map,
          nodes: pods(3),
        });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ScalingError);
    expect((err as ScalingError).code).toBe('not_enough_nodes');
  });
});
