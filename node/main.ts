import path from 'node:path';
import { parseArgs } from 'node:util';
import { intOption, requiredOption, runMain, UsageError } from '../common/cli-options';
import { HybridLogicalClock } from '../common/hlc';
import { INTERNAL_TOKEN_ENV, loadInternalTokens } from '../common/internal-token';
import { createLogger } from '../common/logger';
import { PartitionMapHolder } from '../common/metadata-store';
import { openMetadataStore } from '../common/open-metadata-store';
import { PeerPool } from '../common/peer-pool';
import { splitAddress } from '../common/rpc-client';
import { AdminServer } from './admin-server';
import { AntiEntropy, rpcRepairPeer } from './anti-entropy';
import { DEFAULT_MAX_HINT_BYTES } from './hint-store';
import { DEFAULT_HINT_REPLAY_INTERVAL_MS, HintedHandoff } from './hinted-handoff';
import { NodeMetrics } from './metrics';
import { DEFAULT_MOVED_DATA_GRACE_MS, MovedDataCleanup } from './moved-data-cleanup';
import { DEFAULT_MOVE_MAX_BYTES_PER_SECOND, PartitionReceiver } from './partition-receiver';
import { DEFAULT_TOMBSTONE_GRACE_MS } from './purge';
import { NodeRequestHandler } from './request-handler';
import { RpcServer } from './rpc-server';
import { Storage } from './storage';

const USAGE = `usage: kvstore-node --id ID --data-dir DIR [--cluster NAME] [--listen HOST:PORT]
       [--admin-listen HOST:PORT] (--metadata-file PATH | --redis URL | --kube-namespace NS [--redis URL])
       [--max-hint-bytes N] [--hint-replay-interval-ms MS]
       [--anti-entropy-interval-ms MS (0: only on kvctl repair)] [--anti-entropy-max-keys-per-second N]
       [--tombstone-grace-ms MS] [--move-max-bytes-per-second N] [--move-concurrency N]
       [--moved-data-grace-ms MS] [--internal-token-file PATH (or $KVSTORE_INTERNAL_TOKEN)]`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      id: { type: 'string' },
      cluster: { type: 'string', default: 'local' },
      'data-dir': { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:7001' },
      'admin-listen': { type: 'string', default: '127.0.0.1:7101' },
      'metadata-file': { type: 'string' },
      redis: { type: 'string' },
      'kube-namespace': { type: 'string' },
      'max-hint-bytes': { type: 'string' },
      'hint-replay-interval-ms': { type: 'string' },
      'anti-entropy-interval-ms': { type: 'string' },
      'anti-entropy-max-keys-per-second': { type: 'string' },
      'tombstone-grace-ms': { type: 'string' },
      'move-max-bytes-per-second': { type: 'string' },
      'move-concurrency': { type: 'string' },
      'moved-data-grace-ms': { type: 'string' },
      'internal-token-file': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const nodeId = requiredOption('id', values.id);
  const cluster = values.cluster;
  const dataDir = path.resolve(requiredOption('data-dir', values['data-dir']));
  const maxHintBytes = intOption(
    'max-hint-bytes',
    values['max-hint-bytes'],
    DEFAULT_MAX_HINT_BYTES,
    1,
    2 ** 50,
  );
  const hintReplayIntervalMs = intOption(
    'hint-replay-interval-ms',
    values['hint-replay-interval-ms'],
    DEFAULT_HINT_REPLAY_INTERVAL_MS,
    10,
    3_600_000,
  );
  const antiEntropyIntervalMs = intOption(
    'anti-entropy-interval-ms',
    values['anti-entropy-interval-ms'],
    60_000,
    0,
    7 * 24 * 3_600_000,
  );
  const antiEntropyMaxKeysPerSecond = intOption(
    'anti-entropy-max-keys-per-second',
    values['anti-entropy-max-keys-per-second'],
    5000,
    1,
    10_000_000,
  );
  const tombstoneGraceMs = intOption(
    'tombstone-grace-ms',
    values['tombstone-grace-ms'],
    DEFAULT_TOMBSTONE_GRACE_MS,
    0,
    10 * 365 * 24 * 3_600_000,
  );
  const moveMaxBytesPerSecond = intOption(
    'move-max-bytes-per-second',
    values['move-max-bytes-per-second'],
    DEFAULT_MOVE_MAX_BYTES_PER_SECOND,
    1024,
    2 ** 40,
  );
  const moveConcurrency = intOption('move-concurrency', values['move-concurrency'], 2, 1, 64);
  const movedDataGraceMs = intOption(
    'moved-data-grace-ms',
    values['moved-data-grace-ms'],
    DEFAULT_MOVED_DATA_GRACE_MS,
    0,
    30 * 24 * 3_600_000,
  );
  // Checked before anything opens: a bad token file is a startup error, not a node that refuses everyone.
  const internalTokens = loadInternalTokens({ file: values['internal-token-file'] });
  const internalToken = internalTokens?.present;
  let listen, admin;
  try {
    listen = splitAddress(values.listen);
    admin = splitAddress(values['admin-listen']);
  } catch (err) {
    throw new UsageError(`--listen and --admin-listen take HOST:PORT (${(err as Error).message})`);
  }

  const log = createLogger('node', { node: nodeId, cluster });
  const storage = Storage.open(dataDir, { nodeId, cluster });
  const clock = new HybridLogicalClock(nodeId);
  const metrics = new NodeMetrics({ node: nodeId, cluster }, () => storage.stats(), dataDir);
  const store = openMetadataStore(
    {
      cluster,
      file: values['metadata-file'],
      redisUrl: values.redis,
      kubeNamespace: values['kube-namespace'],
    },
    log,
  );
  const maps = await PartitionMapHolder.follow(store, log);
  const epoch = (): number => maps.current()?.epoch ?? 0;
  // Connections to peers, for hint replay and anti-entropy.
  const peers = new PeerPool({ clock, epoch, timeoutMs: 5000, log, token: internalToken });
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
    maxBytes: maxHintBytes,
    intervalMs: hintReplayIntervalMs,
    maxHintAgeMs: tombstoneGraceMs,
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
    intervalMs: antiEntropyIntervalMs,
    maxKeysPerSecond: antiEntropyMaxKeysPerSecond,
    tombstoneGraceMs,
  });
  // From a snapshot of the disk while the node already serves (a million keys take seconds to scan);
  // a record that cannot be read is a broken volume, and the node stops as it would have at start.
  antiEntropy.buildInBackground().catch((err: unknown) => {
    log.fatal({ err }, 'cannot build hash trees from disk');
    process.exit(1);
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
    maxBytesPerSecond: moveMaxBytesPerSecond,
    concurrency: moveConcurrency,
  });
  const cleanup = new MovedDataCleanup({
    storage,
    nodeId,
    map: () => maps.current(),
    log,
    registry: metrics.registry,
    graceMs: movedDataGraceMs,
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
    { hints, repair: antiEntropy, moves: receiver },
  );
  const rpc = new RpcServer(
    (req) => handler.handle(req),
    log,
    internalTokens === undefined
      ? undefined
      : {
          token: internalTokens.accepted,
          onFailure: (reason) => metrics.rpcAuthFailures.inc({ reason }),
        },
  );
  if (internalToken === undefined) {
    log.warn(
      `the internal API is unauthenticated: anyone who reaches ${values.listen} can read and write data (pass --internal-token-file or set ${INTERNAL_TOKEN_ENV})`,
    );
  }
  const adminServer = new AdminServer(
    metrics,
    () => {
      const map = maps.current();
      if (!map) return { ready: false, reason: 'no partition map yet', epoch: 0 };
      const refilling = antiEntropy.notReadyReason();
      return refilling
        ? { ready: false, reason: refilling, epoch: map.epoch }
        : { ready: true, epoch: map.epoch };
    },
    log,
  );
  const rpcAddr = await rpc.listen(listen.host, listen.port);
  const adminAddr = await adminServer.listen(admin.host, admin.port);
  hints.start();
  antiEntropy.start();
  receiver.start();
  cleanup.start();
  log.info(
    {
      rpc: `${rpcAddr.address}:${rpcAddr.port}`,
      admin: `${adminAddr.address}:${adminAddr.port}`,
      dataDir,
      epoch: epoch(),
      generation: storage.identity.generation,
      internalAuth: internalToken !== undefined,
    },
    'node started',
  );

  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'node stopping');
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
    log.info('node stopped');
    process.exit(0);
  };
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      stop(sig).catch((err: unknown) => {
        log.error({ err }, 'unclean stop');
        process.exit(1);
      });
    });
  }
}

runMain('kvstore-node', main);
