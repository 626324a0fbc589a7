import path from 'node:path';
import { runMain } from '../common/cli-options';
import { INTERNAL_TOKEN_ENV, loadInternalTokens } from '../common/internal-token';
import { createLogger } from '../common/logger';
import { ENV_HELP, parseServerArgs, warnUnknownEnv } from '../common/server-args';
import { shareOfMemoryLimit } from '../common/memory-limit';
import { DEFAULT_DISK_WATERMARK } from './disk-space';
import { DEFAULT_MAX_PENDING_WRITE_BYTES } from './request-handler';
import { startStorageNode, STORAGE_NODE_DEFAULTS as DEFAULTS } from './storage-node';

const USAGE = `usage: kvstore-node --id ID --data-dir DIR [--cluster NAME] [--listen HOST:PORT]
       [--admin-listen HOST:PORT] (--metadata-file PATH | --redis URL | --kube-namespace NS [--redis URL])
       [--max-hint-bytes N] [--hint-replay-interval-ms MS]
       [--anti-entropy-interval-ms MS (0: only on kvctl repair)] [--anti-entropy-max-keys-per-second N]
       [--tombstone-grace-ms MS] [--move-max-bytes-per-second N] [--move-concurrency N]
       [--moved-data-grace-ms MS] [--internal-token-file PATH (or $KVSTORE_INTERNAL_TOKEN)]
       [--max-pending-write-bytes N]  (writes held while they wait for their commit; more get overloaded at once.
                                        Default: 1/8 of the container's memory limit, 32 MiB to 1 GiB; 256 MiB without one)
       [--disk-min-free-bytes N] [--disk-min-free-percent P] [--max-data-bytes N]
         (writes that grow the data are refused, reads served, with less room than the larger of
          N bytes (default ${DEFAULT_DISK_WATERMARK.minFreeBytes}) and P% (default ${DEFAULT_DISK_WATERMARK.minFreeRatio * 100}) of the data volume,
          or once the data uses --max-data-bytes (default 0: no quota))

${ENV_HELP}`;

async function main(): Promise<void> {
  const args = parseServerArgs({
    argv: process.argv.slice(2),
    env: process.env,
    alsoReads: [INTERNAL_TOKEN_ENV],
    options: {
      id: { type: 'string' },
      cluster: { type: 'string', default: 'local' },
      'data-dir': { type: 'string' },
      listen: { type: 'string', default: DEFAULTS.listen },
      'admin-listen': { type: 'string', default: DEFAULTS.adminListen },
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
      'disk-min-free-bytes': { type: 'string' },
      'max-pending-write-bytes': { type: 'string' },
      'disk-min-free-percent': { type: 'string' },
      'max-data-bytes': { type: 'string' },
    },
  });
  const { values } = args;
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const nodeId = args.required('id');
  const cluster = values.cluster;
  const dataDir = path.resolve(args.required('data-dir'));
  const maxHintBytes = args.int('max-hint-bytes', DEFAULTS.maxHintBytes, 1, 2 ** 50);
  const hintReplayIntervalMs = args.int(
    'hint-replay-interval-ms',
    DEFAULTS.hintReplayIntervalMs,
    10,
    3_600_000,
  );
  const antiEntropyIntervalMs = args.int(
    'anti-entropy-interval-ms',
    DEFAULTS.antiEntropyIntervalMs,
    0,
    7 * 24 * 3_600_000,
  );
  const antiEntropyMaxKeysPerSecond = args.int(
    'anti-entropy-max-keys-per-second',
    DEFAULTS.antiEntropyMaxKeysPerSecond,
    1,
    10_000_000,
  );
  const tombstoneGraceMs = args.int(
    'tombstone-grace-ms',
    DEFAULTS.tombstoneGraceMs,
    0,
    10 * 365 * 24 * 3_600_000,
  );
  const moveMaxBytesPerSecond = args.int(
    'move-max-bytes-per-second',
    DEFAULTS.moveMaxBytesPerSecond,
    1024,
    2 ** 40,
  );
  const moveConcurrency = args.int('move-concurrency', DEFAULTS.moveConcurrency, 1, 64);
  const movedDataGraceMs = args.int('moved-data-grace-ms', DEFAULTS.movedDataGraceMs, 0, 30 * 24 * 3_600_000);
  const maxPendingWriteBytes = args.int(
    'max-pending-write-bytes',
    shareOfMemoryLimit(1 / 8, 32 * 1024 * 1024, 1024 * 1024 * 1024, DEFAULT_MAX_PENDING_WRITE_BYTES),
    64 * 1024,
    2 ** 40,
  );
  const diskWatermark = {
    minFreeBytes: args.int('disk-min-free-bytes', DEFAULT_DISK_WATERMARK.minFreeBytes, 0, 2 ** 50),
    minFreeRatio: args.int('disk-min-free-percent', DEFAULT_DISK_WATERMARK.minFreeRatio * 100, 0, 90) / 100,
    quotaBytes: args.int('max-data-bytes', DEFAULT_DISK_WATERMARK.quotaBytes, 0, 2 ** 50),
  };
  // Checked before anything opens: a bad token file is a startup error, not a node that refuses everyone.
  const internalTokens = loadInternalTokens({ file: values['internal-token-file'] });

  const log = createLogger('node', { node: nodeId, cluster });
  warnUnknownEnv(log, 'kvstore-node', args);
  const node = await startStorageNode({
    nodeId,
    cluster,
    dataDir,
    metadata: {
      file: values['metadata-file'],
      redisUrl: values.redis,
      kubeNamespace: values['kube-namespace'],
    },
    listen: values.listen,
    adminListen: values['admin-listen'],
    internalTokens,
    maxHintBytes,
    hintReplayIntervalMs,
    antiEntropyIntervalMs,
    antiEntropyMaxKeysPerSecond,
    tombstoneGraceMs,
    moveMaxBytesPerSecond,
    moveConcurrency,
    movedDataGraceMs,
    diskWatermark,
    maxPendingWriteBytes,
    log,
    onFatal: () => process.exit(1),
  });
  // lmdb-js rejects a failed commit's transaction (Storage answers the writer with write_failed and
  // refuses writes for a while) and, besides, one promise of its own that no caller holds. That one
  // is expected and logged; any other unhandled rejection is a bug and ends the process, as Node would.
  process.on('unhandledRejection', (reason: unknown) => {
    if (reason instanceof Error && 'commitError' in reason) {
      log.warn({ err: reason }, 'LMDB commit failure (already answered to its writer)');
      return;
    }
    log.fatal({ err: reason }, 'unhandled rejection');
    process.exit(1);
  });

  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'node stopping');
    await node.close();
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
