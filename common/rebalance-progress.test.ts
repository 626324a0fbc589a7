import type { PartitionMap } from './partition-map';
import { rebalanceProgress } from './rebalance-progress';

const base: PartitionMap = {
  cluster: 'c',
  epoch: 7,
  partitionCount: 4,
  replicationFactor: 2,
  nodes: [
    { id: 'n1', address: '127.0.0.1:1' },
    { id: 'n2', address: '127.0.0.1:2' },
    { id: 'n3', address: '127.0.0.1:3' },
  ],
  partitions: [
    ['n1', 'n2'],
    ['n2', 'n3'],
    ['n3', 'n1'],
    ['n1', 'n2'],
  ],
  moves: [
    { partition: 0, from: 'n1', to: 'n3' },
    { partition: 3, from: 'n2', to: 'n3' },
  ],
  rebalance: { targetNodes: ['n1', 'n3'], movesTotal: 5, startedAt: 1000 },
};

test('joins the recorded plan with what receiving nodes report', () => {
  const infos = new Map([
    [
      'n3',
      {
        incoming: [
          { partition: 0, from: 'n1', state: 'ready' as const, keys: 10, bytes: 1000 },
          // a report for a move the map no longer lists (switched meanwhile) is ignored
          { partition: 1, from: 'n2', state: 'streaming' as const, keys: 99, bytes: 9900 },
        ],
        streamedKeys: 120,
        streamedBytes: 12_000,
      },
    ],
    ['n1', { incoming: [], streamedKeys: 5, streamedBytes: 500 }],
  ]);
  const p = rebalanceProgress(base, infos);
  expect(p).toMatchObject({
    epoch: 7,
    active: true,
    targetNodes: ['n1', 'n3'],
    drainingNodes: ['n2'],
    movesTotal: 5,
    movesDone: 3,
    movesLeft: 2,
    keysInFlight: 10,
    bytesInFlight: 1000,
    keysStreamed: 125,
    bytesStreamed: 12_500,
    startedAt: 1000,
  });
  expect(p.moves).toEqual([
    { partition: 0, from: 'n1', to: 'n3', state: 'ready', keys: 10, bytes: 1000 },
    { partition: 3, from: 'n2', to: 'n3', state: 'waiting', keys: 0, bytes: 0 },
  ]);
});

test('a map with no rebalance is idle and drains nothing', () => {
  const p = rebalanceProgress({ ...base, moves: [], rebalance: undefined }, new Map());
  expect(p).toMatchObject({ active: false, movesTotal: 0, movesDone: 0, movesLeft: 0, drainingNodes: [] });
  expect(p.startedAt).toBeUndefined();
});
