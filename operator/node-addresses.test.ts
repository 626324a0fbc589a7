import type { V1Pod } from '@kubernetes/client-node';
import { validatePartitionMap, type PartitionMap } from '../common/partition-map';
import {
  nodeAddress,
  nodeId,
  nodeOrdinal,
  observeNodes,
  wantedNodeIds,
  withCurrentAddresses,
  type ObservedNode,
} from './node-addresses';

function pod(name: string, status: V1Pod['status'], extra: Partial<V1Pod['metadata']> = {}): V1Pod {
  return { metadata: { name, ...extra }, status };
}

const running = (ip: string, ready = true): V1Pod['status'] => ({
  phase: 'Running',
  podIP: ip,
  conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
});

function map(addresses: string[], epoch = 4): PartitionMap {
  const nodes = addresses.map((address, k) => ({ id: `demo-node-${k}`, address }));
  return validatePartitionMap({
    cluster: 'demo',
    epoch,
    partitionCount: 2,
    replicationFactor: 2,
    nodes,
    partitions: [
      [nodes[0].id, nodes[1].id],
      [nodes[1].id, nodes[2].id],
    ],
    moves: [{ partition: 0, from: nodes[1].id, to: nodes[2].id }],
    rebalance: { targetNodes: nodes.map((n) => n.id), movesTotal: 1, startedAt: 1000 },
  });
}

function observed(ips: Record<string, string | undefined>): Map<string, ObservedNode> {
  return new Map(
    Object.entries(ips).map(([id, ip]) => [
      id,
      { id, ordinal: nodeOrdinal('demo', id) ?? -1, ready: true, ...(ip ? { ip } : {}) },
    ]),
  );
}

describe('node ids', () => {
  test('are the StatefulSet pod names', () => {
    expect(nodeId('demo', 0)).toBe('demo-node-0');
    expect(wantedNodeIds('demo', 3)).toEqual(['demo-node-0', 'demo-node-1', 'demo-node-2']);
    expect(nodeOrdinal('demo', 'demo-node-12')).toBe(12);
    for (const id of [
      'demo-node-',
      'demo-node-01',
      'demo-node-x',
      'other-node-1',
      'demo-gateway-1',
      'demo-node-1-x',
    ]) {
      expect(nodeOrdinal('demo', id)).toBeUndefined();
    }
  });

  test('addresses are the pod IP and the rpc port, IPv6 in brackets', () => {
    expect(nodeAddress('10.1.2.3')).toBe('10.1.2.3:7001');
    expect(nodeAddress('fd00::12')).toBe('[fd00::12]:7001');
  });
});

describe('observeNodes', () => {
  test('reads IP and readiness from pod status, ignoring pods that are not nodes of this cluster', () => {
    const nodes = observeNodes(
      'demo',
      [
        pod('demo-node-0', running('10.0.0.1')),
        pod('demo-node-1', running('10.0.0.2', false)),
        pod('demo-node-2', { phase: 'Pending' }),
        pod('demo-node-3', running('10.0.0.4'), { deletionTimestamp: new Date() }),
        pod('demo-node-4', { phase: 'Failed', podIP: '10.0.0.5' }),
        pod('demo-gateway-abc', running('10.0.0.9')),
      ],
      (p) => (p.metadata?.name === 'demo-node-0' ? 'zone-a' : undefined),
    );
    expect([...nodes.values()]).toEqual([
      { id: 'demo-node-0', ordinal: 0, ip: '10.0.0.1', ready: true, zone: 'zone-a' },
      { id: 'demo-node-1', ordinal: 1, ip: '10.0.0.2', ready: false },
      { id: 'demo-node-2', ordinal: 2, ready: false },
      // Still has its IP while it shuts down, but is not ready.
      { id: 'demo-node-3', ordinal: 3, ip: '10.0.0.4', ready: false },
      // An ended pod's IP is not its own any more.
      { id: 'demo-node-4', ordinal: 4, ready: false },
    ]);
  });
});

describe('withCurrentAddresses', () => {
  test('nothing to do when every address matches, or a pod has no IP right now', () => {
    const m = map(['10.0.0.1:7001', '10.0.0.2:7001', '10.0.0.3:7001']);
    expect(
      withCurrentAddresses(m, observed({ 'demo-node-0': '10.0.0.1', 'demo-node-1': '10.0.0.2' })),
    ).toEqual({
      map: undefined,
      changed: [],
      held: [],
    });
  });

  test('a new IP is a new epoch with the new address; partitions, moves and the rebalance record stay', () => {
    const m = map(['10.0.0.1:7001', '10.0.0.2:7001', '10.0.0.3:7001']);
    const update = withCurrentAddresses(
      m,
      observed({ 'demo-node-0': '10.0.0.1', 'demo-node-1': '10.0.0.7' }),
    );
    expect(update.changed).toEqual([{ id: 'demo-node-1', from: '10.0.0.2:7001', to: '10.0.0.7:7001' }]);
    expect(update.map).toEqual({
      ...m,
      epoch: 5,
      nodes: [
        { id: 'demo-node-0', address: '10.0.0.1:7001' },
        { id: 'demo-node-1', address: '10.0.0.7:7001' },
        { id: 'demo-node-2', address: '10.0.0.3:7001' },
      ],
    });
    expect(() => validatePartitionMap(update.map)).not.toThrow();
  });

  test('two pods that swapped IPs move together in one epoch', () => {
    const m = map(['10.0.0.1:7001', '10.0.0.2:7001', '10.0.0.3:7001']);
    const update = withCurrentAddresses(
      m,
      observed({ 'demo-node-0': '10.0.0.2', 'demo-node-1': '10.0.0.1' }),
    );
    expect(update.held).toEqual([]);
    expect(update.map?.nodes.map((n) => n.address)).toEqual([
      '10.0.0.2:7001',
      '10.0.0.1:7001',
      '10.0.0.3:7001',
    ]);
  });

  test("an IP still in the map as another node's address waits until that node moves on", () => {
    const m = map(['10.0.0.1:7001', '10.0.0.2:7001', '10.0.0.3:7001']);
    // demo-node-0 got the IP demo-node-2 had; demo-node-2 has no IP yet. demo-node-1 moves freely.
    const update = withCurrentAddresses(
      m,
      observed({ 'demo-node-0': '10.0.0.3', 'demo-node-1': '10.0.0.8' }),
    );
    expect(update.held).toEqual([{ id: 'demo-node-0', from: '10.0.0.1:7001', to: '10.0.0.3:7001' }]);
    expect(update.changed).toEqual([{ id: 'demo-node-1', from: '10.0.0.2:7001', to: '10.0.0.8:7001' }]);
    expect(update.map?.nodes.map((n) => n.address)).toEqual([
      '10.0.0.1:7001',
      '10.0.0.8:7001',
      '10.0.0.3:7001',
    ]);
    // Once demo-node-2 has its new IP, demo-node-0 follows.
    const later = withCurrentAddresses(
      m,
      observed({ 'demo-node-0': '10.0.0.3', 'demo-node-1': '10.0.0.8', 'demo-node-2': '10.0.0.9' }),
    );
    expect(later.held).toEqual([]);
    expect(later.map?.nodes.map((n) => n.address)).toEqual([
      '10.0.0.3:7001',
      '10.0.0.8:7001',
      '10.0.0.9:7001',
    ]);
  });

  test('only held changes: no new epoch', () => {
    const m = map(['10.0.0.1:7001', '10.0.0.2:7001', '10.0.0.3:7001']);
    const update = withCurrentAddresses(m, observed({ 'demo-node-0': '10.0.0.2' }));
    expect(update.map).toBeUndefined();
    expect(update.held).toHaveLength(1);
  });

  test('zones are kept', () => {
    const m = validatePartitionMap({
      ...map(['10.0.0.1:7001', '10.0.0.2:7001', '10.0.0.3:7001']),
      nodes: [
        { id: 'demo-node-0', address: '10.0.0.1:7001', zone: 'a' },
        { id: 'demo-node-1', address: '10.0.0.2:7001', zone: 'b' },
        { id: 'demo-node-2', address: '10.0.0.3:7001', zone: 'c' },
      ],
    });
    const update = withCurrentAddresses(m, observed({ 'demo-node-0': '10.0.0.5' }));
    expect(update.map?.nodes[0]).toEqual({ id: 'demo-node-0', address: '10.0.0.5:7001', zone: 'a' });
  });
});
