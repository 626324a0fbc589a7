import { DiskGuard } from './disk-guard';
import { DEFAULT_DISK_WATERMARK, type DiskWatermark } from './disk-space';
import type { AddressInfo } from 'node:net';
import { UsageError } from '../common/cli-options';
import { errorMessage } from '../common/errors';
import { HybridLogicalClock } from '../common/hlc';
import { INTERNAL_TOKEN_ENV, type InternalTokens } from '../common/internal-token';
import { createLogger, type Logger } from '../common/logger';
import { PartitionMapHolder, type MetadataStore } from '../common/metadata-store';
import { openMetadataStore, type MetadataLocation } from '../common/open-metadata-store';
import { PeerPool } from '../common/peer-pool';
import { splitAddress } from '../common/rpc-client';
import { AdminServer } from './admin-server';
import { AntiEntropy } from './anti-entropy';
import { DEFAULT_MAX_HINT_BYTES } from './hint-store';
import { DEFAULT_HINT_REPLAY_INTERVAL_MS, HintedHandoff } from './hinted-handoff';
import { NodeMetrics } from './metrics';
import { DEFAULT_MOVED_DATA_GRACE_MS, MovedDataCleanup } from './moved-data-cleanup';
import { DEFAULT_MOVE_MAX_BYTES_PER_SECOND, PartitionReceiver } from './partition-receiver';
import { DEFAULT_TOMBSTONE_GRACE_MS } from './purge';
import { NodeRequestHandler } from './request-handler';
import { rpcRepairPeer } from './repair-peer';
import { RpcServer } from './rpc-server';
import { Storage } from './storage';

/** What a storage node runs with when not told otherwise (the `kvstore-node` flags' defaults). */
export const STORAGE_NODE_DEFAULTS = {
  listen: '127.0.0.1:7001',
  adminListen: '127.0.0.1:7101',
  maxHintBytes: DEFAULT_MAX_HINT_BYTES,
  hintReplayIntervalMs: DEFAULT_HINT_REPLAY_INTERVAL_MS,
  antiEntropyIntervalMs: 60_000,
  antiEntropyMaxKeysPerSecond: 5000,
  tombstoneGraceMs: DEFAULT_TOMBSTONE_GRACE_MS,
  moveMaxBytesPerSecond: DEFAULT_MOVE_MAX_BYTES_PER_SECOND,
  moveConcurrency: 2,
  movedDataGraceMs: DEFAULT_MOVED_DATA_GRACE_MS,
} as const;

export interface StorageNodeOptions {
  readonly nodeId: string;
  readonly cluster: string;
  /** the LMDB directory (absolute, or relative to the working directory) */
  readonly dataDir: string;
  /** where the partition map is: a file, Redis, a ConfigMap (common/open-metadata-store.ts) */
  readonly metadata: Omit<MetadataLocation, 'cluster'>;
  /** HOST:PORT of the internal RPC listener */
  readonly listen?: string;
  /** HOST:PORT of the health, readiness and metrics listener */
  readonly adminListen?: string;
  /** the cluster's internal tokens: presented to peers, required of callers; undefined: no auth */
  readonly internalTokens?: InternalTokens;
  readonly maxHintBytes?: number;
  readonly hintReplayIntervalMs?: number;
  /** 0: only on `kvctl repair` (and while refilling an empty disk) */
  readonly antiEntropyIntervalMs?: number;
  readonly antiEntropyMaxKeysPerSecond?: number;
  readonly tombstoneGraceMs?: number;
  readonly moveMaxBytesPerSecond?: number;
  readonly moveConcurrency?: number;
  readonly movedDataGraceMs?: number;
  /** bytes of writes held while they wait for their commit (node/request-handler.ts) */
  readonly maxPendingWriteBytes?: number;
  /** when writes that grow the data are refused (node/disk-space.ts); default DEFAULT_DISK_WATERMARK */
  readonly diskWatermark?: DiskWatermark;
  /** default: JSON logs to stdout (common/logger.ts) */
  readonly log?: Logger;
  /** the node's connections to its peers; tests pass a pool that injects faults */
  readonly createPeerPool?: (opts: ConstructorParameters<typeof PeerPool>[0]) => PeerPool;
  /**
   * A background failure the node cannot serve past (its disk cannot be read to build the hash
   * trees): the binary exits; an in-process test fails. Logged as fatal before the call.
   */
  readonly onFatal: (err: unknown) => void;
}

/** A running storage node: everything `kvstore-node` composes, stopped by `close`. */
export interface StorageNode {
  readonly nodeId: string;
  /** host:port the internal RPC listener is bound to */
  readonly rpcAddress: string;
  /** host:port of /healthz, /readyz and /metrics */
  readonly adminAddress: string;
  readonly storage: Storage;
  readonly antiEntropy: AntiEntropy;
  readonly hints: HintedHandoff;
  readonly receiver: PartitionReceiver;
  readonly maps: PartitionMapHolder;
  readonly peers: PeerPool;
  readonly metrics: NodeMetrics;
  /** Stops serving, then the background work, then closes the map store and the database. Idempotent. */
  close(): Promise<void>;
}

function formatAddress(a: AddressInfo): string {
  return `${a.address}:${a.port}`;
}

/** Opens the node's data directory and map, wires its services and starts serving. */
export async function startStorageNode(options: StorageNodeOptions): Promise<StorageNode> {
  const o = { ...STORAGE_NODE_DEFAULTS, ...stripUndefined(options) };
  const { nodeId, cluster, dataDir } = o;
  let listen, admin;
  try {
    listen = splitAddress(o.listen);
    admin = splitAddress(o.adminListen);
  } catch (err) {
    throw new UsageError(`--listen and --admin-listen take HOST:PORT (${errorMessage(err)})`);
  }
  const internalToken = o.internalTokens?.present;

  const log = o.log ?? createLogger('node', { node: nodeId, cluster });
  const storage = Storage.open(dataDir, { nodeId, cluster });
  const clock = new HybridLogicalClock(nodeId);
  const metrics = new NodeMetrics({ node: nodeId, cluster }, () => storage.stats(), dataDir);
  const disk = new DiskGuard({
    dataDir,
    usage: () => storage.diskUsage(),
    watermark: o.diskWatermark ?? DEFAULT_DISK_WATERMARK,
    log,
    registry: metrics.registry,
  });
  storage.admitWritesBy(disk);
  const { store, maps } = await followMap({ ...o.metadata, cluster }, log, storage);
  const epoch = (): number => maps.current()?.epoch ?? 0;
  // Connections to peers, for hint replay and anti-entropy.
  const peerOptions = { clock, epoch, timeoutMs: 5000, log, token: internalToken };
  const peers = o.createPeerPool ? o.createPeerPool(peerOptions) : new PeerPool(peerOptions);
  const onMap = (): void => {
    const map = maps.current();
    if (map) peers.update(map);
    metrics.mapEpoch.set(epoch());
  };
  onMap();
  maps.on('change', onMap);
  // A peer's epoch (from a stale_epoch refusal or a newer request) lets the load read past a lagging copy.
  const refreshMap = (theirEpoch?: number): void => {
    maps.refresh(theirEpoch).catch((err: unknown) => log.warn({ err }, 'map refresh failed'));
  };
  const hints = HintedHandoff.open(storage, {
    nodeId,
    storage,
    peers,
    map: () => maps.current(),
    onStaleEpoch: refreshMap,
    log,
    registry: metrics.registry,
    maxBytes: o.maxHintBytes,
    intervalMs: o.hintReplayIntervalMs,
    maxHintAgeMs: o.tombstoneGraceMs,
  });
  const antiEntropy = new AntiEntropy({
    storage,
    nodeId,
    map: () => maps.current(),
    peer: (id) => {
      const client = peers.get(id);
      return client ? rpcRepairPeer(client) : undefined;
    },
    onStaleEpoch: refreshMap,
    log,
    registry: metrics.registry,
    intervalMs: o.antiEntropyIntervalMs,
    maxKeysPerSecond: o.antiEntropyMaxKeysPerSecond,
    tombstoneGraceMs: o.tombstoneGraceMs,
  });
  // From a snapshot of the disk while the node already serves (a million keys take seconds to scan);
  // a record that cannot be read is a broken volume, and the node stops as it would have at start.
  antiEntropy.buildInBackground().catch((err: unknown) => {
    log.fatal({ err }, 'cannot build hash trees from disk');
    o.onFatal(err);
  });
  maps.on('change', () => antiEntropy.onMapChange());
  const receiver = new PartitionReceiver({
    storage,
    nodeId,
    map: () => maps.current(),
    peer: (id) => peers.get(id),
    sync: (p, from) => antiEntropy.syncWith(p, from),
    onStaleEpoch: (theirEpoch) => maps.refresh(theirEpoch),
    log,
    registry: metrics.registry,
    maxBytesPerSecond: o.moveMaxBytesPerSecond,
    concurrency: o.moveConcurrency,
  });
  const cleanup = new MovedDataCleanup({
    storage,
    nodeId,
    map: () => maps.current(),
    log,
    registry: metrics.registry,
    graceMs: o.movedDataGraceMs,
  });
  maps.on('change', () => {
    receiver.onMapChange();
    cleanup.check();
  });

  const handler = new NodeRequestHandler(
    storage,
    clock,
    {
      nodeId,
      epoch,
      onNewerEpoch: refreshMap,
      // An empty disk being refilled answers everything but reads.
      ready: () => maps.current() !== undefined && antiEntropy.readyForReads(),
    },
    metrics,
    log,
    {
      hints,
      repair: antiEntropy,
      moves: receiver,
      ...(o.maxPendingWriteBytes === undefined ? {} : { maxPendingWriteBytes: o.maxPendingWriteBytes }),
    },
  );
  const tokens = o.internalTokens;
  const rpc = new RpcServer(
    (req) => handler.handle(req),
    log,
    tokens === undefined
      ? undefined
      : {
          token: tokens.accepted,
          onFailure: (reason) => metrics.rpcAuthFailures.inc({ reason }),
        },
  );
  if (internalToken === undefined) {
    log.warn(
      `the internal API is unauthenticated: anyone who reaches ${o.listen} can read and write data (pass --internal-token-file or set ${INTERNAL_TOKEN_ENV})`,
    );
  }
  const adminServer = new AdminServer(
    metrics,
    () => {
      const map = maps.current();
      // A full disk stays ready: it still serves reads (and says so here).
      if (!map) return { ready: false, reason: 'no partition map yet', epoch: 0, disk: disk.status() };
      const refilling = antiEntropy.notReadyReason();
      return refilling
        ? { ready: false, reason: refilling, epoch: map.epoch, disk: disk.status() }
        : { ready: true, epoch: map.epoch, disk: disk.status() };
    },
    log,
  );

  let closing: Promise<void> | undefined;
  const stopAll = async (): Promise<void> => {
    disk.stop();
    await rpc.close();
    await adminServer.close();
    peers.close();
    // After peers.close, so a replay waiting on a peer fails at once; before storage closes.
    await hints.stop();
    await receiver.stop();
    await cleanup.stop();
    await antiEntropy.stop();
    maps.stop();
    await store.close();
    await storage.close();
  };
  let rpcAddr: AddressInfo, adminAddr: AddressInfo;
  try {
    rpcAddr = await rpc.listen(listen.host, listen.port);
    adminAddr = await adminServer.listen(admin.host, admin.port);
  } catch (err) {
    // A port taken: the binary exits anyway, but an in-process caller may retry, so nothing stays open.
    await closeAfterFailedStart(log, [stopAll]);
    throw err;
  }
  disk.start();
  hints.start();
  antiEntropy.start();
  receiver.start();
  cleanup.start();
  const rpcAddress = formatAddress(rpcAddr);
  const adminAddress = formatAddress(adminAddr);
  log.info(
    {
      rpc: rpcAddress,
      admin: adminAddress,
      dataDir,
      epoch: epoch(),
      generation: storage.identity.generation,
      internalAuth: internalToken !== undefined,
    },
    'node started',
  );
  return {
    nodeId,
    rpcAddress,
    adminAddress,
    storage,
    antiEntropy,
    hints,
    receiver,
    maps,
    peers,
    metrics,
    close() {
      closing ??= stopAll();
      return closing;
    },
  };
}

/** The map store and its holder; on failure the storage opened before them is closed too. */
async function followMap(
  location: MetadataLocation,
  log: Logger,
  storage: Storage,
): Promise<{ store: MetadataStore; maps: PartitionMapHolder }> {
  let store: MetadataStore | undefined;
  try {
    store = openMetadataStore(location, log);
    return { store, maps: await PartitionMapHolder.follow(store, log) };
  } catch (err) {
    await closeAfterFailedStart(log, [() => store?.close(), () => storage.close()]);
    throw err;
  }
}

/** Undoes a start that failed part-way; the start's own error is what the caller hears of. */
async function closeAfterFailedStart(
  log: Logger,
  steps: readonly (() => Promise<void> | undefined)[],
): Promise<void> {
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      log.error({ err }, 'cannot close what a failed start opened');
    }
  }
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
