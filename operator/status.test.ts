import { validatePartitionMap, type PartitionMap } from '../common/partition-map';
import { KVClusterStatus } from '../crds/kvcluster-spec';
import type { ObservedNode } from './node-addresses';
import { computeStatus, rfc3339, sameStatus, type StatusInput } from './status';

const T0 = new Date('2026-01-01T10:00:00.123Z');
const T1 = new Date('2026-01-01T10:05:00Z');

function nodes(count: number, notReady: number[] = []): Map<string, ObservedNode> {
  return new Map(
    Array.from({ length: count }, (_, k) => {
      const id = `demo-node-${k}`;
      return [id, { id, ordinal: k, ip: `10.0.0.${k + 1}`, ready: !notReady.includes(k) }];
    }),
  );
}

function map(nodeCount: number, extra: Partial<PartitionMap> = {}): PartitionMap {
  const ids = Array.from({ length: nodeCount }, (_, k) => `demo-node-${k}`);
  return validatePartitionMap({
    cluster: 'demo',
    epoch: 7,
    partitionCount: 4,
    replicationFactor: 2,
    nodes: ids.map((id, k) => ({ id, address: `10.0.0.${k + 1}:7001` })),
    partitions: [
      [ids[0], ids[1]],
      [ids[1], ids[2]],
      [ids[2], ids[0]],
      [ids[0], ids[1]],
    ],
    moves: [],
    ...extra,
  });
}

function status(input: Partial<StatusInput>): KVClusterStatus {
  return computeStatus({
    cluster: 'demo',
    generation: 3,
    previous: undefined,
    now: T0,
    map: undefined,
    nodes: new Map(),
    ...input,
  });
}

const conditionsOf = (s: KVClusterStatus) => Object.fromEntries((s.conditions ?? []).map((c) => [c.type, c]));

describe('computeStatus', () => {
  test('a cluster without a map yet is Creating, not ready, not degraded', () => {
    const s = status({ waitingForNodes: ['demo-node-2'], nodes: nodes(2) });
    expect(s).toMatchObject({
      observedGeneration: 3,
      phase: 'Creating',
      replicas: 0,
      readyReplicas: 2,
      selector:
        'app.kubernetes.io/name=kvstore,app.kubernetes.io/instance=demo,app.kubernetes.io/component=node',
      partitionsMoving: 0,
    });
    expect(s.mapEpoch).toBeUndefined();
    expect(s.rebalance).toBeUndefined();
    const c = conditionsOf(s);
    expect(c.Ready).toMatchObject({ status: 'False', reason: 'NoPartitionMap', observedGeneration: 3 });
    expect(c.Ready.message).toMatch(/demo-node-2/);
    expect(c.Degraded).toMatchObject({ status: 'False', reason: 'Creating' });
    expect(c.Rebalancing).toMatchObject({ status: 'False', reason: 'NoPartitionMap' });
    expect(c.Ready.lastTransitionTime).toBe('2026-01-01T10:00:00Z');
    // What the CRD's schema accepts.
    expect(KVClusterStatus.safeParse(s).success).toBe(true);
  });

  test('Creating until every node of the map has been ready, then Running', () => {
    const creating = status({ map: map(3), nodes: nodes(3, [2]) });
    expect(creating.phase).toBe('Creating');
    expect(conditionsOf(creating).Degraded.status).toBe('False');
    const running = status({ map: map(3), nodes: nodes(3), previous: creating });
    expect(running).toMatchObject({ phase: 'Running', mapEpoch: 7, replicas: 3, readyReplicas: 3 });
    const c = conditionsOf(running);
    expect(c.Ready).toMatchObject({ status: 'True', reason: 'AllNodesReady' });
    expect(c.Rebalancing).toMatchObject({ status: 'False', reason: 'Balanced' });
    expect(c.Degraded).toMatchObject({ status: 'False', reason: 'AllNodesReady' });
  });

  test('a node not ready after the cluster ran: Degraded', () => {
    const running = status({ map: map(3), nodes: nodes(3), previous: { phase: 'Running' } });
    const degraded = status({ map: map(3), nodes: nodes(3, [1]), previous: running, now: T1 });
    expect(degraded.phase).toBe('Degraded');
    const c = conditionsOf(degraded);
    expect(c.Degraded).toMatchObject({
      status: 'True',
      reason: 'NodesNotReady',
      message: 'not ready: demo-node-1',
    });
    expect(c.Ready).toMatchObject({ status: 'False', reason: 'NodesNotReady' });
    expect(c.Ready.message).toBe('2 of 3 nodes ready; not ready: demo-node-1');
    expect(degraded.readyReplicas).toBe(2);
  });

  test('lastTransitionTime changes only when the status of the condition does', () => {
    const first = status({ map: map(3), nodes: nodes(3), previous: { phase: 'Running' }, now: T0 });
    // Same statuses later, with another epoch (another message): times stay.
    const again = status({ map: { ...map(3), epoch: 9 }, nodes: nodes(3), previous: first, now: T1 });
    expect(again.conditions?.map((c) => c.lastTransitionTime)).toEqual(
      first.conditions?.map((c) => c.lastTransitionTime),
    );
    expect(conditionsOf(again).Ready.message).toMatch(/epoch 9/);
    // Ready flips: only Ready (and Degraded, which flips too) get the new time.
    const flipped = status({ map: map(3), nodes: nodes(3, [0]), previous: again, now: T1 });
    const c = conditionsOf(flipped);
    expect(c.Ready.lastTransitionTime).toBe(rfc3339(T1));
    expect(c.Degraded.lastTransitionTime).toBe(rfc3339(T1));
    expect(c.Rebalancing.lastTransitionTime).toBe(rfc3339(T0));
  });

  test('a rebalance in flight: Rebalancing, partitions moving, progress', () => {
    const moving = map(4, {
      moves: [
        { partition: 0, from: 'demo-node-1', to: 'demo-node-3' },
        { partition: 1, from: 'demo-node-2', to: 'demo-node-3' },
      ],
      rebalance: {
        targetNodes: ['demo-node-0', 'demo-node-1', 'demo-node-2', 'demo-node-3'],
        movesTotal: 5,
        startedAt: 1,
      },
    });
    const s = status({ map: moving, nodes: nodes(4), previous: { phase: 'Running' } });
    expect(s).toMatchObject({
      phase: 'Rebalancing',
      replicas: 4,
      partitionsMoving: 2,
      rebalance: { movesTotal: 5, movesDone: 3, targetReplicas: 4 },
    });
    expect(conditionsOf(s).Rebalancing).toMatchObject({
      status: 'True',
      reason: 'PartitionsMoving',
      message: '3 of 5 partition moves done, towards 4 nodes',
    });
  });

  test('a drain names the draining nodes; a degraded node outranks the rebalance in the phase', () => {
    const draining = map(4, {
      moves: [{ partition: 2, from: 'demo-node-3', to: 'demo-node-1' }],
      partitions: [
        ['demo-node-0', 'demo-node-1'],
        ['demo-node-1', 'demo-node-2'],
        ['demo-node-3', 'demo-node-0'],
        ['demo-node-0', 'demo-node-2'],
      ],
      rebalance: { targetNodes: ['demo-node-0', 'demo-node-1', 'demo-node-2'], movesTotal: 1, startedAt: 1 },
    });
    const s = status({ map: draining, nodes: nodes(4), previous: { phase: 'Running' } });
    expect(s.rebalance).toEqual({ movesTotal: 1, movesDone: 0, targetReplicas: 3 });
    expect(conditionsOf(s).Rebalancing.message).toMatch(/draining demo-node-3$/);
    const degraded = status({ map: draining, nodes: nodes(4, [0]), previous: s });
    expect(degraded.phase).toBe('Degraded');
    expect(conditionsOf(degraded).Rebalancing.status).toBe('True');
  });

  test('a scale-out waiting for its pods is Rebalancing (WaitingForNodes), without progress yet', () => {
    const s = status({
      map: map(3),
      nodes: nodes(3),
      waitingForNodes: ['demo-node-3'],
      previous: { phase: 'Running' },
    });
    expect(s.phase).toBe('Rebalancing');
    expect(s.rebalance).toBeUndefined();
    expect(conditionsOf(s).Rebalancing).toMatchObject({ status: 'True', reason: 'WaitingForNodes' });
  });

  test('a refused spec: Ready False InvalidSpec, the phase unchanged', () => {
    const s = status({
      invalidSpec: 'spec.replicas: too small',
      map: map(3),
      nodes: nodes(3),
      previous: { phase: 'Running' },
    });
    expect(s.phase).toBe('Running');
    expect(conditionsOf(s).Ready).toMatchObject({
      status: 'False',
      reason: 'InvalidSpec',
      message: 'spec.replicas: too small',
    });
    expect(status({ invalidSpec: 'bad' }).phase).toBe('Pending');
  });

  test('blocked scaling and deletion', () => {
    const blocked = status({
      map: map(3),
      nodes: nodes(3),
      scalingBlocked: 'foreign map',
      previous: { phase: 'Running' },
    });
    expect(conditionsOf(blocked).Rebalancing).toMatchObject({
      status: 'False',
      reason: 'ScalingBlocked',
      message: 'foreign map',
    });
    const deleting = status({ deleting: true, map: map(3), nodes: nodes(3) });
    expect(deleting.phase).toBe('Deleting');
    expect(conditionsOf(deleting).Ready.reason).toBe('Deleting');
  });

  test('sameStatus ignores key order', () => {
    const s = status({ map: map(3), nodes: nodes(3) });
    const reordered = Object.fromEntries(Object.entries(s).reverse()) as KVClusterStatus;
    expect(sameStatus(s, reordered)).toBe(true);
    expect(sameStatus(s, { ...s, readyReplicas: 1 })).toBe(false);
    expect(sameStatus(undefined, {})).toBe(true);
  });
});
