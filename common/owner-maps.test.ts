import fc from 'fast-check';
import { initialPartitionMap, withNodeAddresses } from './owner-maps';
import { InvalidMapError, validatePartitionMap, type NodeInfo, type PartitionMap } from './partition-map';
import { PlacementError, placePartitions } from './placement';

// A fixed seed: a failure reproduces exactly (fast-check prints the counterexample).
const run = (numRuns: number) => ({ seed: 0x0a11, numRuns });

/** Nodes n1..nK with distinct addresses, some with a zone. */
const nodesArb: fc.Arbitrary<NodeInfo[]> = fc
  .array(fc.option(fc.constantFrom('zone-a', 'zone-b', 'zone-c'), { nil: undefined }), {
    minLength: 1,
    maxLength: 8,
  })
  .map((zones) =>
    zones.map((zone, i) => {
      const node = { id: `n${i + 1}`, address: `127.0.0.1:${7001 + i}` };
      return zone === undefined ? node : { ...node, zone };
    }),
  );

const inputArb = nodesArb.chain((nodes) =>
  fc.record({
    cluster: fc.constantFrom('local', 'demo', 'prod-1'),
    nodes: fc.constant(nodes),
    partitionCount: fc.integer({ min: 1, max: 64 }),
    replicationFactor: fc.integer({ min: 1, max: nodes.length }),
  }),
);

/** A map in any state an owner may hold: after some epochs, perhaps with moves and a rebalance. */
const mapArb: fc.Arbitrary<PartitionMap> = fc
  .record({ input: inputArb, epoch: fc.integer({ min: 1, max: 1000 }), rebalancing: fc.boolean() })
  .map(({ input, epoch, rebalancing }) => {
    const first = initialPartitionMap(input);
    const [a, b] = first.nodes;
    return {
      ...first,
      epoch,
      ...(rebalancing && b
        ? {
            moves: [{ partition: 0, from: a.id, to: b.id }],
            rebalance: { targetNodes: [a.id, b.id], movesTotal: 1, startedAt: 1_700_000_000_000 },
          }
        : {}),
    };
  });

/** A map and new addresses for some of its nodes (each maybe its current one). */
const updateArb = mapArb.chain((map) =>
  fc.subarray(map.nodes.map((n) => n.id)).chain((ids) =>
    fc.tuple(
      fc.constant(map),
      fc
        .array(fc.oneof(fc.constant(undefined), fc.integer({ min: 8001, max: 8100 })), {
          minLength: ids.length,
          maxLength: ids.length,
        })
        .map(
          (ports) =>
            new Map(
              ids.map((id, i) => {
                const current = map.nodes.find((n) => n.id === id)?.address ?? '';
                const port = ports[i];
                return [id, port === undefined ? current : `127.0.0.1:${port}`];
              }),
            ),
        ),
    ),
  ),
);

describe('initialPartitionMap', () => {
  test('every node, partitions placed from scratch, epoch 1, no moves, no rebalance: a valid map', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const map = initialPartitionMap(input);
        expect(map).toEqual({
          cluster: input.cluster,
          epoch: 1,
          partitionCount: input.partitionCount,
          replicationFactor: input.replicationFactor,
          nodes: input.nodes,
          partitions: placePartitions(input),
          moves: [],
        });
        expect(map.rebalance).toBeUndefined();
        expect(validatePartitionMap(JSON.parse(JSON.stringify(map)))).toEqual(map);
      }),
      run(100),
    );
  });

  test('is deterministic: the same input gives the same map', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        expect(initialPartitionMap(input)).toEqual(
          initialPartitionMap({ ...input, nodes: [...input.nodes] }),
        );
      }),
      run(50),
    );
  });

  test('a node of a zone keeps its zone; a replication factor above the node count is refused', () => {
    const nodes = [
      { id: 'n1', address: '127.0.0.1:7001', zone: 'zone-a' },
      { id: 'n2', address: '127.0.0.1:7002' },
    ];
    expect(
      initialPartitionMap({ cluster: 'local', nodes, partitionCount: 4, replicationFactor: 2 }).nodes,
    ).toEqual(nodes);
    expect(() =>
      initialPartitionMap({ cluster: 'local', nodes, partitionCount: 4, replicationFactor: 3 }),
    ).toThrow(PlacementError);
  });
});

describe('withNodeAddresses', () => {
  test('the same map (not a copy) when no address changes', () => {
    fc.assert(
      fc.property(mapArb, (map) => {
        expect(withNodeAddresses(map, new Map())).toBe(map);
        expect(withNodeAddresses(map, new Map(map.nodes.map((n) => [n.id, n.address])))).toBe(map);
      }),
      run(100),
    );
  });

  test('a changed address is the next epoch with the new addresses; all else stays', () => {
    fc.assert(
      fc.property(updateArb, ([map, addresses]) => {
        const next = withNodeAddresses(map, addresses);
        const changed = map.nodes.some((n) => (addresses.get(n.id) ?? n.address) !== n.address);
        if (!changed) {
          expect(next).toBe(map);
          return;
        }
        const { epoch, nodes, ...rest } = next;
        const { epoch: oldEpoch, nodes: oldNodes, ...oldRest } = map;
        expect(epoch).toBe(oldEpoch + 1);
        expect(rest).toEqual(oldRest);
        // Same nodes in the same order, zones kept, each at its new address or its old one.
        expect(nodes).toEqual(oldNodes.map((n) => ({ ...n, address: addresses.get(n.id) ?? n.address })));
        expect(validatePartitionMap(JSON.parse(JSON.stringify(next)))).toEqual(next);
        // The input is not changed.
        expect(map.epoch).toBe(oldEpoch);
        expect(map.nodes).toBe(oldNodes);
      }),
      run(200),
    );
  });

  test('two nodes that swap addresses move together in one epoch', () => {
    const map = initialPartitionMap({
      cluster: 'local',
      nodes: [
        { id: 'n1', address: '127.0.0.1:7001' },
        { id: 'n2', address: '127.0.0.1:7002' },
      ],
      partitionCount: 4,
      replicationFactor: 1,
    });
    const next = withNodeAddresses(
      map,
      new Map([
        ['n1', '127.0.0.1:7002'],
        ['n2', '127.0.0.1:7001'],
      ]),
    );
    expect(next.epoch).toBe(2);
    expect(next.nodes).toEqual([
      { id: 'n1', address: '127.0.0.1:7002' },
      { id: 'n2', address: '127.0.0.1:7001' },
    ]);
    expect(next.partitions).toBe(map.partitions);
  });

  test('an address for a node the map does not list is refused, with the node and epoch', () => {
    fc.assert(
      fc.property(mapArb, (map) => {
        const call = () => withNodeAddresses(map, new Map([['stranger', '127.0.0.1:9999']]));
        expect(call).toThrow(InvalidMapError);
        expect(call).toThrow(/stranger/);
        try {
          call();
        } catch (err) {
          expect((err as InvalidMapError).context).toEqual({ node: 'stranger', epoch: map.epoch });
        }
      }),
      run(20),
    );
  });
});
