import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { KvError } from '../common/errors';
import { FileMetadataStore } from '../common/file-metadata-store';
import { HybridLogicalClock } from '../common/hlc';
import type { Logger } from '../common/logger';
import { PartitionMapHolder } from '../common/metadata-store';
import type { NodeInfo, PartitionMap } from '../common/partition-map';
import { PeerPool } from '../common/peer-pool';
import { placePartitions } from '../common/placement';
import { RpcError, type RpcClient } from '../common/rpc-client';
import type { RpcOp } from '../common/rpc-protocol';
import { Coordinator, type CoordinatorOptions } from '../gateway/coordinator';
import { GatewayMetrics } from '../gateway/metrics';
import { startStorageNode, type StorageNode, type StorageNodeOptions } from '../node/storage-node';
import { tempDir } from './cluster-harness';
import { freePort } from './free-port';
import { waitFor } from './wait-for';

/**
 * N real storage nodes in this process (node/storage-node.ts, as `kvstore-node` runs them):
 * real LMDB in a temp folder each, real RPC on loopback, one partition map in a file all of
 * them follow. Starts in a fraction of a second per node, for component tests that need real
 * nodes without spawning processes from dist/ (e2e/cluster-harness.ts does that).
 *
 * Every connection between nodes, and from the harness's clients, goes through `faults`, so a
 * test can cut or slow a link; `stop` and `restart` take a whole node away and bring it back on
 * the same data directory and address.
 */

/** The per-node options a test may set (identity, addresses and the map are the harness's). */
export type InProcessNodeOptions = Partial<
  Omit<StorageNodeOptions, 'nodeId' | 'cluster' | 'dataDir' | 'metadata' | 'listen' | 'onFatal'>
>;

export interface InProcessClusterOptions {
  /** nodes n1..nN in the first map (default 3) */
  readonly nodes?: number;
  /** default min(3, nodes) */
  readonly replicationFactor?: number;
  /** default 16: enough to spread over a few nodes, small enough to scan at once */
  readonly partitionCount?: number;
  readonly cluster?: string;
  /**
   * For every node. Defaults: anti-entropy only on `repair` (and while an empty disk refills),
   * so a test sees only the passes it asks for.
   */
  readonly node?: InProcessNodeOptions;
}

export class InProcessClusterError extends KvError {}

/** What a fault rule may do to one call: fail it as an unreachable node would, or hold it first. */
export type FaultAction = { readonly drop: true } | { readonly delayMs: number };

/** Decides the fate of one call from `from` to `to`; undefined: no fault. */
export type FaultRule = (call: {
  readonly from: string;
  readonly to: string;
  readonly op: RpcOp;
}) => FaultAction | undefined;

/** The links a test has broken or slowed; consulted on every RPC the harness's nodes and clients send. */
export class NetworkFaults {
  private readonly rules = new Set<FaultRule>();

  /** Adds a rule; returns what removes it. */
  add(rule: FaultRule): () => void {
    this.rules.add(rule);
    return () => this.rules.delete(rule);
  }

  /** Calls to `to` (from `from` only, when given) fail as if it were unreachable. */
  cut(to: string, from?: string): () => void {
    return this.add((c) =>
      c.to === to && (from === undefined || c.from === from) ? { drop: true } : undefined,
    );
  }

  /** Calls to `to` (from `from` only, when given) are held `ms` before they are sent. */
  delay(to: string, ms: number, from?: string): () => void {
    return this.add((c) =>
      c.to === to && (from === undefined || c.from === from) ? { delayMs: ms } : undefined,
    );
  }

  /** Removes every rule. */
  heal(): void {
    this.rules.clear();
  }

  /** Runs before a call is sent: throws for a dropped call, waits for a delayed one. */
  async beforeCall(from: string, to: string, op: RpcOp): Promise<void> {
    for (const rule of this.rules) {
      const action = rule({ from, to, op });
      if (!action) continue;
      if ('drop' in action) {
        throw new RpcError('unavailable', to, `fault injected: ${from} cannot reach ${to} (${op})`);
      }
      await new Promise((r) => setTimeout(r, action.delayMs));
    }
  }
}

/** A PeerPool whose clients pass every call through `faults` first, as sent by `from`. */
export class FaultInjectingPeerPool extends PeerPool {
  private readonly wrapped = new WeakMap<RpcClient, RpcClient>();

  constructor(
    opts: ConstructorParameters<typeof PeerPool>[0],
    private readonly from: string,
    private readonly faults: NetworkFaults,
  ) {
    super(opts);
  }

  override get(nodeId: string): RpcClient | undefined {
    const client = super.get(nodeId);
    if (!client) return undefined;
    let w = this.wrapped.get(client);
    if (!w) {
      const call: RpcClient['call'] = async (body, rid) => {
        await this.faults.beforeCall(this.from, nodeId, body.op);
        return client.call(body, rid);
      };
      // Everything but `call` is the real client's, bound to it (its private state stays its own).
      w = new Proxy(client, {
        get: (target, prop) => {
          if (prop === 'call') return call;
          const v: unknown = Reflect.get(target, prop, target);
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
      this.wrapped.set(client, w);
    }
    return w;
  }
}

interface Member {
  readonly id: string;
  readonly dataDir: string;
  readonly listen: string;
  running: StorageNode | undefined;
}

export class InProcessCluster {
  readonly faults = new NetworkFaults();
  /** the harness's own handle on the map file: what a map owner (a test, a Rebalancer) writes through */
  readonly store: FileMetadataStore;
  private readonly members = new Map<string, Member>();
  private readonly fatal: { node: string; err: unknown }[] = [];
  private readonly closers: (() => Promise<void> | void)[] = [];
  private readonly log: Logger;
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly cluster: string,
    readonly metadataFile: string,
    private readonly nodeOptions: InProcessNodeOptions,
  ) {
    this.log = harnessLogger('in-process-cluster');
    this.store = new FileMetadataStore(metadataFile, { cluster, log: this.log });
  }

  /** Writes the first map (placePartitions over n1..nN) and starts every node; resolves once all serve reads. */
  static async start(opts: InProcessClusterOptions = {}): Promise<InProcessCluster> {
    const count = opts.nodes ?? 3;
    const rf = opts.replicationFactor ?? Math.min(3, count);
    const partitionCount = opts.partitionCount ?? 16;
    const dir = tempDir('inproc');
    const c = new InProcessCluster(dir, opts.cluster ?? 'inproc', path.join(dir, 'partition-map.json'), {
      antiEntropyIntervalMs: 0,
      ...opts.node,
    });
    try {
      const nodes: NodeInfo[] = [];
      for (let i = 1; i <= count; i++) nodes.push(await c.addMember(`n${i}`));
      const map: PartitionMap = {
        cluster: c.cluster,
        epoch: 1,
        partitionCount,
        replicationFactor: rf,
        nodes,
        partitions: placePartitions({ nodes, partitionCount, replicationFactor: rf }),
        moves: [],
      };
      if (!(await c.store.compareAndSet(map, undefined))) {
        throw new InProcessClusterError('map_race', `a partition map already exists in ${c.metadataFile}`);
      }
      await Promise.all(nodes.map((n) => c.restart(n.id)));
    } catch (err) {
      await c.close().catch((closeErr: unknown) => c.log.error({ err: closeErr }, 'cleanup failed'));
      throw err;
    }
    return c;
  }

  /** The map in the file now. */
  async map(): Promise<PartitionMap> {
    const map = await this.store.load();
    if (!map) throw new InProcessClusterError('no_map', `no partition map in ${this.metadataFile}`);
    return map;
  }

  /** Ids of every node the harness knows (started or stopped, in the map or not). */
  nodeIds(): string[] {
    return [...this.members.keys()];
  }

  /** The running node `id`; throws when it is stopped. */
  node(id: string): StorageNode {
    const node = this.member(id).running;
    if (!node) throw new InProcessClusterError('node_stopped', `node ${id} is stopped`, { node: id });
    return node;
  }

  /** host:port of `id`'s RPC listener, the same across restarts. */
  address(id: string): string {
    return this.member(id).listen;
  }

  /** Stops `id` as SIGTERM would (node/main.ts); its data directory stays. */
  async stop(id: string): Promise<void> {
    const m = this.member(id);
    const node = m.running;
    m.running = undefined;
    await node?.close();
  }

  /**
   * Starts `id` again on the same data directory and address; resolves once it serves reads
   * (at once with `waitReady: false`: a node refilling a wiped disk may not get there).
   */
  async restart(id: string, opts: { waitReady?: boolean } = {}): Promise<StorageNode> {
    const m = this.member(id);
    if (m.running) await this.stop(id);
    const node = await startStorageNode({
      ...this.nodeOptions,
      nodeId: id,
      cluster: this.cluster,
      dataDir: m.dataDir,
      metadata: { file: this.metadataFile },
      listen: m.listen,
      // Nobody addresses it by a fixed port: a fresh one each start.
      adminListen: `127.0.0.1:${await freePort()}`,
      log: harnessLogger('node', id),
      createPeerPool: (o) => new FaultInjectingPeerPool(o, id, this.faults),
      onFatal: (err) => this.fatal.push({ node: id, err }),
    });
    m.running = node;
    if (opts.waitReady === false) return node;
    await waitFor(
      `${id} to serve reads`,
      () => node.maps.current() !== undefined && node.antiEntropy.readyForReads(),
      10_000,
      10,
    );
    return node;
  }

  /** Empties the data directory of stopped node `id`, as a lost volume would leave it. */
  wipe(id: string): void {
    const m = this.member(id);
    if (m.running) throw new InProcessClusterError('node_running', `stop ${id} before wiping its disk`);
    fs.rmSync(m.dataDir, { recursive: true, force: true });
    fs.mkdirSync(m.dataDir);
  }

  /**
   * Starts a node that the map does not list yet (for a Rebalancer to scale to); returns its
   * NodeInfo for `Rebalancer.scale`.
   */
  async addNode(id: string): Promise<NodeInfo> {
    const info = await this.addMember(id);
    await this.restart(id);
    return info;
  }

  /**
   * Writes `change(map)` as the next epoch and waits until every running node holds it.
   * Returns the map written.
   */
  async updateMap(change: (map: PartitionMap) => Omit<PartitionMap, 'epoch'>): Promise<PartitionMap> {
    const current = await this.map();
    const next: PartitionMap = { ...change(current), epoch: current.epoch + 1 };
    if (!(await this.store.compareAndSet(next, current.epoch))) {
      throw new InProcessClusterError('map_race', `the map changed from epoch ${current.epoch} meanwhile`);
    }
    await this.waitForEpoch(next.epoch);
    return next;
  }

  /** Resolves once every running node holds epoch `epoch` or newer. */
  async waitForEpoch(epoch: number): Promise<void> {
    await waitFor(
      `every node to hold epoch ${epoch}`,
      () =>
        [...this.members.values()].every(
          (m) => !m.running || (m.running.maps.current()?.epoch ?? 0) >= epoch,
        ),
      10_000,
      10,
    );
  }

  /**
   * A PeerPool over the current map, speaking as peer `as` (its clock, and its calls pass
   * through `faults` as sent by `as`); follows map changes and is closed with the cluster.
   */
  async peers(as = 'test-peer', timeoutMs = 2000): Promise<PeerPool> {
    const maps = await this.follow();
    const pool = new FaultInjectingPeerPool(
      { clock: new HybridLogicalClock(as), epoch: () => maps.epoch(), timeoutMs },
      as,
      this.faults,
    );
    const update = (map: PartitionMap): void => pool.update(map);
    const map = maps.current();
    if (map) update(map);
    maps.on('change', update);
    this.closers.push(() => pool.close());
    return pool;
  }

  /** An RPC client to node `to`, speaking as `as`; see `peers`. */
  async client(to: string, as = 'test-peer', timeoutMs = 2000): Promise<RpcClient> {
    const client = (await this.peers(as, timeoutMs)).get(to);
    if (!client) throw new InProcessClusterError('no_node', `node ${to} is not in the map`, { node: to });
    return client;
  }

  /** A gateway's coordinator over these nodes (no HTTP), following the map; closed with the cluster. */
  async coordinator(as = 'gw-test', options: CoordinatorOptions = {}): Promise<Coordinator> {
    const maps = await this.follow();
    const pool = await this.peers(as);
    return new Coordinator(
      maps,
      pool,
      new HybridLogicalClock(as),
      new GatewayMetrics({ gateway: as }),
      harnessLogger('gateway', as),
      options,
    );
  }

  /** Stops every node and client and removes the temp folder; fails if a node reported a fatal error. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const close of this.closers.splice(0).reverse()) await close();
    await Promise.all(this.nodeIds().map((id) => this.stop(id)));
    await this.store.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (this.fatal.length > 0) {
      throw new InProcessClusterError(
        'node_fatal',
        `a node failed in the background: ${this.fatal.map((f) => `${f.node}: ${String(f.err)}`).join('; ')}`,
        { nodes: this.fatal.map((f) => f.node) },
        { cause: this.fatal[0].err },
      );
    }
  }

  private async follow(): Promise<PartitionMapHolder> {
    const maps = await PartitionMapHolder.follow(this.store, this.log);
    this.closers.push(() => maps.stop());
    return maps;
  }

  private member(id: string): Member {
    const m = this.members.get(id);
    if (!m) throw new InProcessClusterError('no_node', `no node ${id} in this cluster`, { node: id });
    return m;
  }

  private async addMember(id: string): Promise<NodeInfo> {
    if (this.members.has(id)) throw new InProcessClusterError('duplicate_node', `node ${id} exists`);
    const dataDir = path.join(this.dir, id);
    fs.mkdirSync(dataDir);
    // Fixed for the node's life: the map names it, and a restart binds it again.
    const listen = `127.0.0.1:${await freePort()}`;
    this.members.set(id, { id, dataDir, listen, running: undefined });
    return { id, address: listen };
  }
}

/** Silent unless LOG_LEVEL is set: a passing test prints nothing. */
function harnessLogger(component: string, node?: string): Logger {
  return pino({
    level: process.env.LOG_LEVEL ?? 'silent',
    base: node === undefined ? { component } : { component, node },
  });
}
