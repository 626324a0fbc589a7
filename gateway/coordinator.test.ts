import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import pino from 'pino';
import { CONSISTENCY_LEVELS, type Consistency } from '../common/consistency';
import { partitionOf } from '../common/hash';
import { compareVersions, formatVersion, HybridLogicalClock, type Version } from '../common/hlc';
import { PartitionMapHolder } from '../common/metadata-store';
import { replicasOf, type PartitionMap } from '../common/partition-map';
import type { PeerPool } from '../common/peer-pool';
import { decodeRecord, encodeRecord, type KvRecord } from '../common/record';
import type { RpcOp } from '../common/rpc-protocol';
import {
  FaultInjectingPeerPool,
  InProcessCluster,
  type InProcessClusterOptions,
} from '../e2e/in-process-cluster';
import { waitFor } from '../e2e/wait-for';
import { ApiError } from './api-error';
import { Coordinator, type CoordinatorOptions } from './coordinator';
import { GatewayMetrics } from './metrics';

/**
 * The coordinator against real storage nodes in this process (e2e/in-process-cluster.ts: real
 * LMDB in a temp folder, real RPC on loopback): what a caller gets back, and what each replica
 * holds afterwards, read from it over RPC. A node is taken down for real (stopped) where the case
 * is about a down replica; elsewhere a link is cut or slowed by the harness's fault injection, which
 * every test names where it uses it.
 */
jest.setTimeout(30_000);

const RPC_TIMEOUT_MS = 2000;
const silent = pino({ level: 'silent' });

/** A coordinator as the gateway builds one (gateway/main.ts), with the metrics it counts into. */
interface Gateway {
  readonly id: string;
  readonly coordinator: Coordinator;
  readonly metrics: GatewayMetrics;
  readonly maps: PartitionMapHolder;
}

/** One RPC a gateway sent, as the fault hooks saw it (before it left). */
interface SentCall {
  readonly to: string;
  readonly op: RpcOp;
}

/** What a replica holds for a key, as one comparable line. */
function show(rec: KvRecord | undefined): string {
  if (!rec) return 'absent';
  const what = rec.tombstone ? 'tombstone' : JSON.stringify(rec.value.toString());
  const expiry = rec.expiresAt === undefined ? '' : ` expires ${rec.expiresAt}`;
  return `${what} @ ${formatVersion(rec.version)}${expiry}`;
}

function record(value: string, version: Version): KvRecord {
  return { version, value: Buffer.from(value), tombstone: false };
}

/** The sum of a counter's values over the series whose labels include `labels`. */
async function total(
  counter: { get(): Promise<{ values: ReadonlyArray<{ value: number; labels: object }> }> },
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  const { values } = await counter.get();
  return values
    .filter((v) =>
      Object.entries(labels).every(([k, want]) => (v.labels as Record<string, unknown>)[k] === want),
    )
    .reduce((sum, v) => sum + v.value, 0);
}

/** The error `pending` rejects with; fails the test when it resolves or rejects with something else. */
async function refusal(pending: Promise<unknown>): Promise<ApiError> {
  const outcome = await pending.then(
    (value: unknown) => ({ value }),
    (err: unknown) => ({ err }),
  );
  if (!('err' in outcome)) throw new Error(`expected a refusal, got ${JSON.stringify(outcome.value)}`);
  expect(outcome.err).toBeInstanceOf(ApiError);
  return outcome.err as ApiError;
}

/**
 * A 503 quorum failure as a caller sees it: status, code, and what its message says (`need` of
 * `of` replicas, and the failed replicas with their error codes, in any order). Not how many had
 * answered: the failure is given as soon as the level is out of reach, and which acks had arrived
 * by then is timing.
 */
function quorumFailure(err: ApiError): { status: number; code: string; needs: string; failed: string[] } {
  const m = /(needs \d+ of \d+) replicas of partition \d+; \d+ answered \(([^()]*)\)$/.exec(err.message);
  return {
    status: err.status,
    code: err.apiCode,
    needs: m ? m[1] : err.message,
    failed: m ? m[2].split(', ').sort() : [],
  };
}

/** A cluster of in-process nodes, with the coordinators a test builds on it and a probe to read replicas. */
class Bench {
  private readonly closers: Array<() => void> = [];
  private readonly calls = new Map<string, SentCall[]>();

  private constructor(
    readonly cluster: InProcessCluster,
    private readonly probe: PeerPool,
  ) {
    // Fault injection used as a tap (it never injects anything): every call a gateway sends, by gateway.
    cluster.faults.add(({ from, to, op }) => {
      this.calls.get(from)?.push({ to, op });
      return undefined;
    });
  }

  static async start(opts: InProcessClusterOptions): Promise<Bench> {
    const cluster = await InProcessCluster.start(opts);
    return new Bench(cluster, await cluster.peers('test-probe', RPC_TIMEOUT_MS));
  }

  async close(): Promise<void> {
    for (const close of this.closers.splice(0)) close();
    await this.cluster.close();
  }

  /**
   * A coordinator named `id` (its writer id and the `from` of its calls in the fault hooks), routing by
   * `maps` (default: following the cluster's map).
   */
  async gateway(id: string, options: CoordinatorOptions = {}, maps?: PartitionMapHolder): Promise<Gateway> {
    const holder = maps ?? (await PartitionMapHolder.follow(this.cluster.store));
    const clock = new HybridLogicalClock(id);
    const pool = new FaultInjectingPeerPool(
      { clock, epoch: () => holder.epoch(), timeoutMs: RPC_TIMEOUT_MS },
      id,
      this.cluster.faults,
    );
    const map = holder.current();
    if (map) pool.update(map);
    holder.on('change', (m) => pool.update(m));
    this.closers.push(() => {
      holder.stop();
      pool.close();
    });
    this.calls.set(id, []);
    const metrics = new GatewayMetrics({ gateway: id });
    return {
      id,
      coordinator: new Coordinator(holder, pool, clock, metrics, silent, options),
      metrics,
      maps: holder,
    };
  }

  /**
   * Runs `fn` with the links from gateway `from` to `nodes` cut (fault injection: its calls to them
   * fail as to an unreachable node, while the nodes stay up for everyone else).
   */
  async cutOff<T>(from: string, nodes: readonly string[], fn: () => Promise<T>): Promise<T> {
    const heals = nodes.map((n) => this.cluster.faults.cut(n, from));
    try {
      return await fn();
    } finally {
      for (const heal of heals) heal();
    }
  }

  /** Every call gateway `id` has sent so far (the list grows as it sends more). */
  sent(id: string): readonly SentCall[] {
    return this.calls.get(id) ?? [];
  }

  async partition(key: Buffer): Promise<number> {
    return partitionOf(key, (await this.cluster.map()).partitionCount);
  }

  async replicas(key: Buffer): Promise<readonly string[]> {
    return replicasOf(await this.cluster.map(), await this.partition(key));
  }

  /** What `node` holds for `key`, read over RPC as a peer would. */
  async held(node: string, key: Buffer): Promise<KvRecord | undefined> {
    const p = await this.partition(key);
    const { records } = await this.rpc(node).call({ op: 'read', items: [{ p, k: key }] });
    return records[0] ? decodeRecord(records[0]) : undefined;
  }

  /** Writes `rec` to `node` alone over RPC (as if the other replicas had missed it); answers whether it applied. */
  async writeTo(node: string, key: Buffer, rec: KvRecord): Promise<boolean> {
    const p = await this.partition(key);
    const { applied } = await this.rpc(node).call({
      op: 'write',
      items: [{ p, k: key, r: encodeRecord(rec) }],
    });
    return applied[0];
  }

  /** Hints held by `nodes` together, as their `info` reports them. */
  async hints(nodes: readonly string[]): Promise<number> {
    const counts = await Promise.all(
      nodes.map(async (n) => (await this.rpc(n).call({ op: 'info' })).hints ?? 0),
    );
    return counts.reduce((a, b) => a + b, 0);
  }

  /** Waits until no node holds a hint (earlier tests' cut links leave some, replayed within a second or so). */
  async hintsDrained(): Promise<void> {
    const nodes = this.cluster.nodeIds();
    await waitFor(
      'hints left by earlier tests to be replayed',
      async () => (await this.hints(nodes)) === 0,
      10_000,
      10,
    );
  }

  /**
   * Waits until each node in `expected` holds what it names for `key` (`show`'s form), then checks
   * it: writes go on to every replica after the level's acks, and repairs run after the read.
   */
  async expectHoldings(key: Buffer, expected: Readonly<Record<string, string>>): Promise<void> {
    const holdings = async (): Promise<Record<string, string>> =>
      Object.fromEntries(
        await Promise.all(
          Object.keys(expected).map(async (n) => [n, show(await this.held(n, key))] as const),
        ),
      );
    await waitFor(
      `${key.toString()} to be held as ${JSON.stringify(expected)}`,
      async () => isDeepStrictEqual(await holdings(), expected),
      10_000,
      10,
    );
    expect(await holdings()).toEqual(expected);
  }

  /** `show(rec)` for every replica of `key`. */
  async onEveryReplica(key: Buffer, rec: KvRecord | undefined): Promise<Record<string, string>> {
    return Object.fromEntries((await this.replicas(key)).map((n) => [n, show(rec)]));
  }

  private rpc(node: string) {
    const client = this.probe.get(node);
    if (!client) throw new Error(`the probe has no client for ${node}`);
    return client;
  }
}

describe('three nodes, RF 3', () => {
  let bench: Bench;
  beforeAll(async () => {
    bench = await Bench.start({ nodes: 3 });
  });
  afterAll(() => bench?.close());

  test.each(CONSISTENCY_LEVELS)(
    'at %s with every replica up: put answers its version, get reads it back, delete leaves a tombstone',
    async (consistency) => {
      const gw = await bench.gateway(`gw-up-${consistency}`);
      const key = Buffer.from(`up/${consistency}`);
      const version = await gw.coordinator.put(key, Buffer.from('v1'), { consistency });
      expect(version.writer).toBe(gw.id);
      // The level is how many acks the caller waits for; the write goes to every replica.
      await bench.expectHoldings(key, await bench.onEveryReplica(key, record('v1', version)));
      expect(await gw.coordinator.get(key, { consistency })).toEqual(record('v1', version));

      const deleted = await gw.coordinator.delete(key, { consistency });
      expect(compareVersions(deleted, version)).toBe(1);
      const tombstone = { version: deleted, value: Buffer.alloc(0), tombstone: true };
      await bench.expectHoldings(key, await bench.onEveryReplica(key, tombstone));
      expect(await gw.coordinator.get(key, { consistency })).toBeUndefined();
      expect(await total(gw.metrics.quorumFailures)).toBe(0);
    },
  );

  // R + W > N: whichever replica a quorum write missed and whichever one a quorum read cannot
  // reach, the read meets a replica that took the write.
  const pairs = ['n1', 'n2', 'n3'].flatMap((w) => ['n1', 'n2', 'n3'].map((r) => [w, r] as const));
  test.each(pairs)(
    'a quorum write that missed %s is read back by a quorum read that cannot reach %s',
    async (missedByWrite, missedByRead) => {
      const gw = await bench.gateway(`gw-rw-${missedByWrite}-${missedByRead}`);
      const key = Buffer.from(`rw/${missedByWrite}/${missedByRead}`);
      await gw.coordinator.put(key, Buffer.from('old'), { consistency: 'all' });
      const version = await bench.cutOff(gw.id, [missedByWrite], () =>
        gw.coordinator.put(key, Buffer.from('new'), { consistency: 'quorum' }),
      );
      const read = await bench.cutOff(gw.id, [missedByRead], () =>
        gw.coordinator.get(key, { consistency: 'quorum' }),
      );
      expect(read).toEqual(record('new', version));
    },
  );

  test('one replica down: quorum writes and reads succeed and leave it a hint; all fails with a 503 naming it', async () => {
    const gw = await bench.gateway('gw-one-down');
    const key = Buffer.from('down/one');
    const [a, b, down] = await bench.replicas(key);
    await bench.hintsDrained();
    await bench.cluster.stop(down);
    try {
      const v1 = await gw.coordinator.put(key, Buffer.from('v1'), { consistency: 'quorum' });
      expect(await gw.coordinator.get(key, { consistency: 'quorum' })).toEqual(record('v1', v1));

      const write = quorumFailure(
        await refusal(gw.coordinator.put(key, Buffer.from('v2'), { consistency: 'all' })),
      );
      expect(write).toEqual({
        status: 503,
        code: 'unavailable',
        needs: 'needs 3 of 3',
        failed: [`${down}: rpc_unavailable`],
      });
      // The refused write still reached the replicas that were up (nothing rolls it back).
      await waitFor('the refused write on the live replicas', async () =>
        (await Promise.all([a, b].map((n) => bench.held(n, key)))).every((r) => r?.value.toString() === 'v2'),
      );
      const v2 = (await bench.held(a, key))?.version as Version;
      expect(compareVersions(v2, v1)).toBe(1);
      await bench.expectHoldings(key, { [a]: show(record('v2', v2)), [b]: show(record('v2', v2)) });

      const read = quorumFailure(await refusal(gw.coordinator.get(key, { consistency: 'all' })));
      expect(read).toEqual({
        status: 503,
        code: 'unavailable',
        needs: 'needs 3 of 3',
        failed: [`${down}: rpc_unavailable`],
      });
      // One hint per write the down replica missed, left with a live replica.
      const stored = (): Promise<number> => total(gw.metrics.hintsSent, { outcome: 'stored' });
      await waitFor('a hint per missed write', async () => (await stored()) === 2, 10_000, 10);
      expect(await bench.hints([a, b])).toBe(2);
    } finally {
      await bench.cluster.restart(down);
    }
    // Back up, it gets the hints: the newest write, though no read went to it.
    await bench.expectHoldings(key, { [down]: show(await bench.held(a, key)) });
    await bench.hintsDrained();
  });

  test('two of three replicas down: quorum writes and reads fail with a 503 naming both; one still works', async () => {
    const gw = await bench.gateway('gw-two-down');
    const key = Buffer.from('down/two');
    const [up, ...down] = await bench.replicas(key);
    await bench.hintsDrained();
    await Promise.all(down.map((n) => bench.cluster.stop(n)));
    try {
      const expected = {
        status: 503,
        code: 'unavailable',
        needs: 'needs 2 of 3',
        failed: down.map((n) => `${n}: rpc_unavailable`).sort(),
      };
      const write = await refusal(gw.coordinator.put(key, Buffer.from('unacked'), { consistency: 'quorum' }));
      expect(quorumFailure(write)).toEqual(expected);
      expect(quorumFailure(await refusal(gw.coordinator.get(key, { consistency: 'quorum' })))).toEqual(
        expected,
      );
      expect(await total(gw.metrics.quorumFailures, { op: 'put', consistency: 'quorum' })).toBe(1);
      // Not acknowledged, yet on the one live replica (which holds hints for the two down ones):
      // a level-one read sees it. Leaderless replication has no rollback.
      await waitFor('hints for both down replicas', async () => (await bench.hints([up])) === 2, 10_000, 10);
      const unacked = await bench.held(up, key);
      expect(unacked?.value.toString()).toBe('unacked');
      expect(await gw.coordinator.get(key, { consistency: 'one' })).toEqual(unacked);

      const version = await gw.coordinator.put(key, Buffer.from('at one'), { consistency: 'one' });
      expect(await gw.coordinator.get(key, { consistency: 'one' })).toEqual(record('at one', version));
    } finally {
      await Promise.all(down.map((n) => bench.cluster.restart(n)));
    }
  });

  test('a quorum read that meets a stale replica answers the newest version and repairs the stale one', async () => {
    const gw = await bench.gateway('gw-repair');
    const key = Buffer.from('repair/stale');
    const [fresh, stale, other] = await bench.replicas(key);
    const old = await gw.coordinator.put(key, Buffer.from('old'), { consistency: 'all' });
    const newer = record('new', { wall: old.wall + 1, logical: 0, writer: 'test-writer' });
    expect(await bench.writeTo(fresh, key, newer)).toBe(true);

    // The third replica cut off from this gateway, so the read must ask the other two.
    const read = await bench.cutOff(gw.id, [other], () => gw.coordinator.get(key, { consistency: 'quorum' }));
    expect(read).toEqual(newer);
    await bench.expectHoldings(key, { [fresh]: show(newer), [stale]: show(newer) });
    // The stale replica may hold the repair before its reply reaches the gateway and is counted.
    await waitFor(
      'the repair counted',
      async () => (await total(gw.metrics.readRepairs, {})) > 0,
      10_000,
      10,
    );
    expect(await total(gw.metrics.readRepairs, { outcome: 'ok' })).toBe(1);
    expect(await total(gw.metrics.readRepairs, { outcome: 'failed' })).toBe(0);
    // Read repair fixes what the read saw; the replica it did not reach is anti-entropy's to fix.
    expect(show(await bench.held(other, key))).toBe(show(record('old', old)));
  });

  test('a read whose newest version came by digest reads that value from its holder and repairs the others', async () => {
    const gw = await bench.gateway('gw-digest');
    let fetched = 0;
    // The newer version on each replica in turn, three keys each: which replica is asked in full is
    // the read order's business, so each read checks both paths, and some must take the digest one.
    for (let i = 0; i < 9; i++) {
      const key = Buffer.from(`digest/${i}`);
      const holder = (await bench.replicas(key))[Math.floor(i / 3)];
      const old = await gw.coordinator.put(key, Buffer.from('old'), { consistency: 'all' });
      const newer = record(`new ${i}`, { wall: old.wall + 1, logical: 0, writer: 'test-writer' });
      expect(await bench.writeTo(holder, key, newer)).toBe(true);

      const mismatches = await total(gw.metrics.readDigestMismatches);
      const sent = bench.sent(gw.id).length;
      expect(await gw.coordinator.get(key, { consistency: 'all' })).toEqual(newer);
      const fetches = (await total(gw.metrics.readDigestMismatches)) - mismatches;
      const reads = bench
        .sent(gw.id)
        .slice(sent)
        .filter((c) => c.op === 'read');
      // Every replica once; the holder once more for the value when it had answered by digest.
      expect(reads).toHaveLength(3 + fetches);
      expect(reads.filter((c) => c.to === holder)).toHaveLength(1 + fetches);
      fetched += fetches;
      await bench.expectHoldings(key, await bench.onEveryReplica(key, newer));
    }
    expect(fetched).toBeGreaterThanOrEqual(1);
  });

  test('concurrent writes from several coordinators: the highest version wins on every replica', async () => {
    const writers = await Promise.all(['gw-a', 'gw-b', 'gw-c'].map((id) => bench.gateway(id)));
    const op = fc.record({
      writer: fc.integer({ min: 0, max: writers.length - 1 }),
      consistency: fc.constantFrom<Consistency>(...CONSISTENCY_LEVELS),
      del: fc.boolean(),
    });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 2, maxLength: 6 }), async (ops) => {
        const key = Buffer.from(`concurrent/${run++}`);
        const written = await Promise.all(
          ops.map(async ({ writer, consistency, del }, i): Promise<KvRecord> => {
            const c = writers[writer].coordinator;
            return del
              ? { version: await c.delete(key, { consistency }), value: Buffer.alloc(0), tombstone: true }
              : record(`v${i}`, await c.put(key, Buffer.from(`v${i}`), { consistency }));
          }),
        );
        const winner = written.reduce((a, b) => (compareVersions(a.version, b.version) >= 0 ? a : b));
        await bench.expectHoldings(key, await bench.onEveryReplica(key, winner));
        const read = await writers[0].coordinator.get(key, { consistency: 'all' });
        expect(read).toEqual(winner.tombstone ? undefined : winner);
      }),
      { numRuns: 15 },
    );
  });

  test('a record past its TTL reads as absent at every level; the replicas keep it, version and all', async () => {
    let skewMs = 0;
    // Stand-in for waiting out the TTL: the coordinator's reading clock is moved past the expiry.
    const gw = await bench.gateway('gw-ttl', { now: () => Date.now() + skewMs });
    const key = Buffer.from('ttl/short');
    const version = await gw.coordinator.put(key, Buffer.from('short-lived'), {
      consistency: 'all',
      ttlSeconds: 60,
    });
    const live: KvRecord = { ...record('short-lived', version), expiresAt: version.wall + 60_000 };
    expect(await gw.coordinator.get(key, { consistency: 'quorum' })).toEqual(live);

    skewMs = 61_000;
    for (const consistency of CONSISTENCY_LEVELS) {
      expect(await gw.coordinator.get(key, { consistency })).toBeUndefined();
    }
    // Expiry is a rule of reading: the record stays, so its version still outranks older writes.
    await bench.expectHoldings(key, await bench.onEveryReplica(key, live));
  });

  test('a delete reads as absent, and its tombstone wins over the older write it replaced, delivered late', async () => {
    const gw = await bench.gateway('gw-tombstone');
    const key = Buffer.from('tombstone/late');
    const [a, b, missed] = await bench.replicas(key);
    const written = record('v1', await gw.coordinator.put(key, Buffer.from('v1'), { consistency: 'all' }));

    // The delete does not reach one replica, which keeps the older write.
    const deleted = await bench.cutOff(gw.id, [missed], () =>
      gw.coordinator.delete(key, { consistency: 'quorum' }),
    );
    const tombstone: KvRecord = { version: deleted, value: Buffer.alloc(0), tombstone: true };
    expect(await gw.coordinator.get(key, { consistency: 'quorum' })).toBeUndefined();
    // All three answer (one of them maybe still with v1): the tombstone is newest, and repairs the stale one.
    expect(await gw.coordinator.get(key, { consistency: 'all' })).toBeUndefined();
    await bench.expectHoldings(key, {
      [a]: show(tombstone),
      [b]: show(tombstone),
      [missed]: show(tombstone),
    });

    // The first write again, late (a retried request, a replayed hint): every replica keeps the tombstone.
    for (const node of [a, b, missed]) expect(await bench.writeTo(node, key, written)).toBe(false);
    for (const consistency of CONSISTENCY_LEVELS) {
      expect(await gw.coordinator.get(key, { consistency })).toBeUndefined();
    }
    await bench.expectHoldings(key, await bench.onEveryReplica(key, tombstone));
  });

  test('with readHedgeMs, a slow replica does not hold up a quorum read: it asks the third replica', async () => {
    const key = Buffer.from('hedge/slow');
    const replicas = await bench.replicas(key);
    const writer = await bench.gateway('gw-hedge-writer');
    const version = await writer.coordinator.put(key, Buffer.from('v'), { consistency: 'all' });
    const gw = await bench.gateway('gw-hedge', { readHedgeMs: 20 });
    const slow = replicas[0];
    const answersFromSlow = (): Promise<number> =>
      total(gw.metrics.replicaRequests, { node: slow, op: 'read' });
    // Fault injection: this gateway's reads to one replica are held far longer than the hedge
    // before they leave (a replica that is up but answers late: paused, overloaded).
    const unslow = bench.cluster.faults.add((c) =>
      c.from === gw.id && c.to === slow && c.op === 'read' ? { delayMs: 1500 } : undefined,
    );
    /** One read: the replicas it asked (each once), requests beyond one per replica and its digest fetches, and whether the slow one answered before the read did. */
    interface Observed {
      readonly asked: string[];
      readonly repeated: number;
      readonly slowAnsweredFirst: boolean;
    }
    const observed: Observed[] = [];
    try {
      // Three reads: the read order rotates, so the slow replica is among the first R at least once.
      for (let i = 0; i < 3; i++) {
        const sent = bench.sent(gw.id).length;
        const answered = await answersFromSlow();
        const fetches = await total(gw.metrics.readDigestMismatches);
        expect(await gw.coordinator.get(key, { consistency: 'quorum' })).toEqual(record('v', version));
        const slowAnsweredFirst = (await answersFromSlow()) > answered;
        const reads = bench
          .sent(gw.id)
          .slice(sent)
          .filter((c) => c.op === 'read')
          .map((c) => c.to);
        const asked = [...new Set(reads)].sort();
        // When the slow replica was the one asked in full, the hedge's answer is a digest, and the
        // value is then read from a replica that answered (one more request, counted as a fetch).
        const repeated =
          reads.length - asked.length - ((await total(gw.metrics.readDigestMismatches)) - fetches);
        observed.push({ asked, repeated, slowAnsweredFirst });
      }
    } finally {
      unslow();
    }
    const hedged = observed.filter((o) => o.asked.includes(slow));
    expect(hedged.length).toBeGreaterThanOrEqual(1);
    const all = { asked: [...replicas].sort(), repeated: 0, slowAnsweredFirst: false };
    // A read that asked the slow replica asked all three, and answered before the slow one did.
    expect(hedged).toEqual(hedged.map(() => all));
    // The others asked two, and no third.
    expect(observed.filter((o) => !o.asked.includes(slow))).toEqual(
      observed
        .filter((o) => !o.asked.includes(slow))
        .map(() => ({
          asked: replicas.filter((n) => n !== slow).sort(),
          repeated: 0,
          slowAnsweredFirst: false,
        })),
    );
    expect(await total(gw.metrics.readExtraRequests, { reason: 'slow' })).toBe(hedged.length);
    expect(await total(gw.metrics.readExtraRequests, { reason: 'failed' })).toBe(0);
    // The held reads still arrive and are answered: nothing is left in flight for the cluster's close.
    await waitFor(
      'the slow replica to answer',
      async () => (await answersFromSlow()) === hedged.length,
      10_000,
      10,
    );
  });
});

describe('four nodes, RF 3: map changes', () => {
  let bench: Bench;
  beforeAll(async () => {
    bench = await Bench.start({ nodes: 4 });
  });
  afterAll(() => bench?.close());

  /** A key of a partition whose replicas leave out `outsider`. */
  function keyWithout(map: PartitionMap, outsider: string, prefix: string): Buffer {
    for (let i = 0; ; i++) {
      const key = Buffer.from(`${prefix}/${i}`);
      if (!replicasOf(map, partitionOf(key, map.partitionCount)).includes(outsider)) return key;
    }
  }

  test('a coordinator on an old epoch is refused, reloads the map, and writes to the new replicas', async () => {
    const old = await bench.cluster.map();
    const key = keyWithout(old, 'n4', 'stale');
    const p = partitionOf(key, old.partitionCount);
    const [a, b, dropped] = replicasOf(old, p);
    // Holders that learn the map only by refresh (no watch): they route by `old` until a replica refuses it.
    const staleHolder = (): PartitionMapHolder => {
      const holder = new PartitionMapHolder({ store: bench.cluster.store });
      holder.accept(old);
      return holder;
    };
    const gw = await bench.gateway('gw-stale', {}, staleHolder());
    const reader = await bench.gateway('gw-stale-reader', {}, staleHolder());
    // The switch of a move: n4 takes `dropped`'s place; every node holds the new map before the write.
    const next = await bench.cluster.updateMap((m) => ({
      ...m,
      partitions: m.partitions.map((owners, i) => (i === p ? [a, b, 'n4'] : owners)),
    }));

    const version = await gw.coordinator.put(key, Buffer.from('v'), { consistency: 'all' });
    expect(gw.maps.epoch()).toBe(next.epoch);
    // Each of the old replicas refused the first attempt (counted as each refusal arrives: the
    // attempt failed at the first one, so the others may come in after the retry succeeded).
    const refusals = async (): Promise<number[]> =>
      Promise.all(
        [a, b, dropped, 'n4'].map((node) =>
          total(gw.metrics.replicaRequests, { node, op: 'write', outcome: 'stale_epoch' }),
        ),
      );
    await waitFor('the three stale-epoch refusals', async () =>
      isDeepStrictEqual(await refusals(), [1, 1, 1, 0]),
    );
    expect(await refusals()).toEqual([1, 1, 1, 0]);
    // Written by the new map; the dropped replica refused it, and a refusal leaves no hint.
    await bench.expectHoldings(key, {
      [a]: show(record('v', version)),
      [b]: show(record('v', version)),
      n4: show(record('v', version)),
      [dropped]: 'absent',
    });
    expect(await bench.hints(bench.cluster.nodeIds())).toBe(0);
    expect(await total(gw.metrics.quorumFailures)).toBe(0);

    expect(await reader.coordinator.get(key, { consistency: 'all' })).toEqual(record('v', version));
    expect(reader.maps.epoch()).toBe(next.epoch);
  });

  test('while a move fills a partition on a new node, writes go to it too and need one more ack; reads skip it', async () => {
    const map = await bench.cluster.map();
    const incoming = 'n1';
    const key = keyWithout(map, incoming, 'move');
    const p = partitionOf(key, map.partitionCount);
    const [a, b, from] = replicasOf(map, p);
    await bench.cluster.updateMap((m) => ({ ...m, moves: [{ partition: p, from, to: incoming }] }));
    const gw = await bench.gateway('gw-move');

    const version = await gw.coordinator.put(key, Buffer.from('during the move'), { consistency: 'quorum' });
    const written = record('during the move', version);
    await bench.expectHoldings(key, {
      [a]: show(written),
      [b]: show(written),
      [from]: show(written),
      [incoming]: show(written),
    });
    const sent = bench.sent(gw.id).length;
    expect(await gw.coordinator.get(key, { consistency: 'all' })).toEqual(written);
    // Reads count the partition's replicas only: the incoming one is still filling.
    expect(
      bench
        .sent(gw.id)
        .slice(sent)
        .filter((c) => c.op === 'read')
        .map((c) => c.to)
        .sort(),
    ).toEqual([a, b, from].sort());

    // Quorum during the move is W + 1 = 3 of the 4 targets.
    const cutOff = (nodes: string[]): Promise<Version> =>
      bench.cutOff(gw.id, nodes, () =>
        gw.coordinator.put(key, Buffer.from(`without ${nodes.join(' ')}`), { consistency: 'quorum' }),
      );
    await expect(cutOff([incoming])).resolves.toMatchObject({ writer: gw.id });
    await expect(cutOff([from])).resolves.toMatchObject({ writer: gw.id });
    const refused = quorumFailure(await refusal(cutOff([from, incoming])));
    expect(refused).toEqual({
      status: 503,
      code: 'unavailable',
      needs: 'needs 3 of 4',
      failed: [`${from}: rpc_unavailable`, `${incoming}: rpc_unavailable`].sort(),
    });
  });
});
