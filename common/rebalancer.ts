import { EventEmitter } from 'node:events';
import { errorMessage, KvError } from './errors';
import { HybridLogicalClock } from './hlc';
import type { Logger } from './logger';
import { PartitionMapHolder, type MetadataStore } from './metadata-store';
import type { NodeInfo, PartitionMap, PartitionMove } from './partition-map';
import { PeerPool } from './peer-pool';
import { completeMoves, planRebalance } from './rebalance-plan';
import { rebalanceProgress, type RebalanceProgress } from './rebalance-progress';
import type { InfoReply } from './rpc-protocol';

/**
 * Drives the rebalancing protocol (docs/design.md, "Rebalancing") for whoever owns the map: the
 * local launcher now, the operator on Kubernetes. It knows nothing of either;
 * it reads and writes the map through a MetadataStore and talks to nodes over
 * their internal RPC.
 *
 * `scale` records the plan in the map (all moves at once, plus the target node
 * set): that record is the state a restarted owner resumes from. Then, every
 * poll, it switches the moves that are safe to switch, in one new epoch:
 * - every node it can reach already holds the current epoch, so no node still
 *   accepts a write routed by a map that did not list the move's new replica;
 * - the new replica says it has copied the partition and reconciled it;
 * - and, checked here and now, the new replica's hash tree for the partition
 *   equals the source's, so everything the replica being dropped held is on the
 *   new one. Writes from here on reach both (the coordinator needs W + 1 acks
 *   while a move is pending), so the switch keeps every acknowledged write on W
 *   replicas of the new set.
 * When the last move is switched, drained nodes leave the map in the same epoch.
 */

export interface RebalancerOptions {
  readonly store: MetadataStore;
  readonly log: Logger;
  /** between two rounds of checks (default 500 ms) */
  readonly pollIntervalMs?: number;
  /** per RPC to a node (default 5 s) */
  readonly rpcTimeoutMs?: number;
  readonly now?: () => number;
  /** the cluster's internal token: nodes that require it refuse the rebalancer's info and tree calls without it */
  readonly internalToken?: string;
}

type Events = { map: [PartitionMap] };

export class Rebalancer extends EventEmitter<Events> {
  private readonly pool: PeerPool;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  private constructor(
    private readonly opts: RebalancerOptions,
    private readonly maps: PartitionMapHolder,
  ) {
    super();
    this.now = opts.now ?? Date.now;
    this.pool = new PeerPool({
      clock: new HybridLogicalClock('rebalancer'),
      epoch: () => this.maps.epoch(),
      timeoutMs: opts.rpcTimeoutMs ?? 5000,
      log: opts.log,
      token: opts.internalToken,
    });
  }

  /** Follows the map in the store and resumes a rebalance recorded in it. */
  static async start(opts: RebalancerOptions): Promise<Rebalancer> {
    const maps = await PartitionMapHolder.follow(opts.store, opts.log);
    const r = new Rebalancer(opts, maps);
    const map = maps.current();
    if (map) r.pool.update(map);
    maps.on('change', (m) => {
      r.pool.update(m);
      r.emit('map', m);
      r.wakeIdleWaiters();
    });
    if (map && (map.moves.length > 0 || map.rebalance)) {
      opts.log.info(
        { epoch: map.epoch, moves: map.moves.length, target: map.rebalance?.targetNodes },
        'resuming the rebalance recorded in the map',
      );
    }
    r.schedule(0);
    return r;
  }

  current(): PartitionMap | undefined {
    return this.maps.current();
  }

  /**
   * Plans the move to exactly `target` and records it in the map (a new epoch).
   * A rebalance under way is re-planned from where it stands.
   */
  async scale(target: readonly NodeInfo[]): Promise<PartitionMap> {
    for (let attempt = 0; ; attempt++) {
      const map = this.maps.current() ?? (await this.maps.refresh());
      if (!map) throw new RebalancerError('no_map', 'there is no partition map to rebalance');
      const next = planRebalance(map, target, this.now());
      if (next === map) return map;
      if (await this.opts.store.compareAndSet(next, map.epoch)) {
        this.accept(next);
        this.opts.log.info(
          {
            epoch: next.epoch,
            moves: next.moves.length,
            target: target.map((n) => n.id),
            draining: next.nodes.filter((n) => !target.some((t) => t.id === n.id)).map((n) => n.id),
          },
          'rebalance planned',
        );
        this.schedule(0);
        return next;
      }
      if (attempt >= 5) {
        throw new RebalancerError('map_race', 'the partition map kept changing while planning the rebalance');
      }
      await this.maps.refresh(map.epoch + 1);
    }
  }

  /** The map's plan joined with what every node reports of its incoming moves. */
  async progress(): Promise<RebalanceProgress> {
    const map = this.maps.current() ?? (await this.maps.refresh());
    if (!map) throw new RebalancerError('no_map', 'there is no partition map yet');
    const infos = await this.infos(map.nodes.map((n) => n.id));
    return rebalanceProgress(map, infos);
  }

  /** Resolves when the map has no moves and no rebalance record. */
  idle(): Promise<void> {
    return new Promise((resolve) => {
      if (this.isIdle()) return resolve();
      this.idleWaiters.push(resolve);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.round;
    this.maps.stop();
    this.pool.close();
    this.wakeIdleWaiters(true);
  }

  private isIdle(): boolean {
    const map = this.maps.current();
    return !map || (map.moves.length === 0 && map.rebalance === undefined);
  }

  private wakeIdleWaiters(force = false): void {
    if (!force && !this.isIdle()) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private accept(map: PartitionMap): void {
    // The holder emits 'change' (pool update, 'map' event, idle waiters) for a newer epoch.
    this.maps.accept(map);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.round) return this.schedule(this.opts.pollIntervalMs ?? 500);
      this.round = this.step()
        .catch((err: unknown) => this.opts.log.warn({ err: errorMessage(err) }, 'rebalance round failed'))
        .finally(() => {
          this.round = undefined;
          this.schedule(this.opts.pollIntervalMs ?? 500);
        });
    }, delayMs);
  }

  /** One round: switch what is safe to switch; finish a rebalance whose moves are all done. */
  private async step(): Promise<void> {
    const map = this.maps.current();
    if (!map || (map.moves.length === 0 && !map.rebalance)) return;
    const done = map.moves.length === 0 ? [] : await this.switchable(map);
    if (map.moves.length > 0 && done.length === 0) return;
    const next = completeMoves(map, done);
    if (!(await this.opts.store.compareAndSet(next, map.epoch))) {
      this.opts.log.info({ epoch: map.epoch }, 'the map changed under the rebalancer; re-reading it');
      await this.maps.refresh(map.epoch + 1);
      return;
    }
    this.accept(next);
    if (next.rebalance) {
      this.opts.log.info(
        { epoch: next.epoch, switched: done.length, left: next.moves.length },
        'partition moves switched',
      );
    } else {
      this.opts.log.info(
        { epoch: next.epoch, switched: done.length, nodes: next.nodes.map((n) => n.id) },
        'rebalance finished',
      );
    }
  }

  /** Moves whose new replica is verified equal to its source, if every reachable node is on this epoch. */
  private async switchable(map: PartitionMap): Promise<PartitionMove[]> {
    const infos = await this.infos(map.nodes.map((n) => n.id));
    const behind = [...infos].filter(([, i]) => i.epoch < map.epoch).map(([id]) => id);
    if (behind.length > 0) {
      this.opts.log.debug({ behind, epoch: map.epoch }, 'waiting for nodes to reach the epoch');
      return [];
    }
    const candidates = map.moves.filter((m) =>
      infos
        .get(m.to)
        ?.incoming?.some((i) => i.partition === m.partition && i.from === m.from && i.state === 'ready'),
    );
    if (candidates.length === 0) return [];
    // One tree-roots call per node involved, for all its candidate partitions.
    const wanted = new Map<string, Set<number>>();
    for (const m of candidates) {
      for (const node of [m.from, m.to]) {
        let set = wanted.get(node);
        if (!set) wanted.set(node, (set = new Set()));
        set.add(m.partition);
      }
    }
    const roots = new Map<string, Map<number, Buffer>>();
    await Promise.all(
      [...wanted].map(async ([node, set]) => {
        const partitions = [...set];
        const client = this.pool.get(node);
        if (!client) return;
        try {
          const reply = await client.call({ op: 'tree-roots', partitions });
          if (!Array.isArray(reply?.roots) || reply.roots.length !== partitions.length) return;
          roots.set(node, new Map(partitions.map((p, i) => [p, reply.roots[i]])));
        } catch (err) {
          this.opts.log.debug({ node, err: errorMessage(err) }, 'tree-roots failed');
        }
      }),
    );
    return candidates.filter((m) => {
      const a = roots.get(m.from)?.get(m.partition);
      const b = roots.get(m.to)?.get(m.partition);
      return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
    });
  }

  /** `info` of each node that answers; nodes that do not are left out. */
  private async infos(ids: readonly string[]): Promise<Map<string, InfoReply>> {
    const out = new Map<string, InfoReply>();
    await Promise.all(
      ids.map(async (id) => {
        const client = this.pool.get(id);
        if (!client) return;
        try {
          const info = await client.call({ op: 'info' });
          if (typeof info?.epoch === 'number') out.set(id, info);
        } catch (err) {
          this.opts.log.debug({ node: id, err: errorMessage(err) }, 'info failed');
        }
      }),
    );
    return out;
  }
}

export class RebalancerError extends KvError {}
