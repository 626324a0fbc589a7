import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { intOption, runMain } from '../common/cli-options';
import { HybridLogicalClock } from '../common/hlc';
import { createLogger } from '../common/logger';
import { PartitionMapHolder } from '../common/metadata-store';
import { openMetadataStore } from '../common/open-metadata-store';
import { PeerPool } from '../common/peer-pool';
import { createGatewayApp } from './app';
import { Coordinator } from './coordinator';
import { GatewayMetrics } from './metrics';
import { DEFAULT_LIMITS } from './request-input';

const USAGE = `usage: kvstore-gateway [--id ID] [--cluster NAME] [--host HOST] [--port PORT]
       (--metadata-file PATH | --redis URL | --kube-namespace NS [--redis URL]) [--rpc-timeout-ms MS]
       [--max-key-bytes N] [--max-value-bytes N]`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      id: { type: 'string' },
      cluster: { type: 'string', default: 'local' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      'metadata-file': { type: 'string' },
      redis: { type: 'string' },
      'kube-namespace': { type: 'string' },
      'rpc-timeout-ms': { type: 'string' },
      'max-key-bytes': { type: 'string' },
      'max-value-bytes': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  // The id breaks version ties between gateways, so it must differ between any two running at once.
  const id = values.id ?? `gw-${randomBytes(4).toString('hex')}`;
  const cluster = values.cluster;
  const port = intOption('port', values.port, 3000, 0, 65535);
  const timeoutMs = intOption('rpc-timeout-ms', values['rpc-timeout-ms'], 2000, 10, 600_000);
  const limits = {
    maxKeyBytes: intOption('max-key-bytes', values['max-key-bytes'], DEFAULT_LIMITS.maxKeyBytes, 1, 1976),
    maxValueBytes: intOption(
      'max-value-bytes',
      values['max-value-bytes'],
      DEFAULT_LIMITS.maxValueBytes,
      0,
      64 * 1024 * 1024 - 4096,
    ),
  };

  const log = createLogger('gateway', { gateway: id, cluster });
  const clock = new HybridLogicalClock(id);
  const metrics = new GatewayMetrics({ gateway: id, cluster });
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
  const pool = new PeerPool({ clock, epoch, timeoutMs, log });
  metrics.nodeStatus = () =>
    (maps.current()?.nodes ?? []).map((n) => ({ node: n.id, status: pool.status(n.id) }));
  const onMap = (): void => {
    const map = maps.current();
    if (map) pool.update(map);
    metrics.mapEpoch.set(epoch());
  };
  onMap();
  maps.on('change', onMap);

  const coordinator = new Coordinator(maps, pool, clock, metrics, log);
  const app = createGatewayApp({ coordinator, maps, pool, metrics, log, limits });
  const server = app.listen(port, values.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  // Slow or stalled clients must not hold sockets forever.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 65_000;
  const addr = server.address() as AddressInfo;
  log.info(
    { url: `http://${addr.address}:${addr.port}`, epoch: epoch(), timeoutMs, limits },
    'gateway started',
  );

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'gateway stopping');
    server.close(() => {
      pool.close();
      maps.stop();
      store
        .close()
        .catch((err: unknown) => log.warn({ err }, 'metadata store did not close cleanly'))
        .finally(() => {
          log.info('gateway stopped');
          process.exit(0);
        });
    });
    server.closeIdleConnections();
    // In-flight requests get a bounded time to finish; then we go regardless.
    setTimeout(() => {
      server.closeAllConnections();
    }, 5_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

runMain('kvstore-gateway', main);
