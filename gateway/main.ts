import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { runMain, UsageError } from '../common/cli-options';
import { HybridLogicalClock } from '../common/hlc';
import { INTERNAL_TOKEN_ENV, loadInternalToken } from '../common/internal-token';
import { createLogger } from '../common/logger';
import { ENV_HELP, parseServerArgs, warnUnknownEnv } from '../common/server-args';
import { PartitionMapHolder } from '../common/metadata-store';
import { openMetadataStore } from '../common/open-metadata-store';
import { PeerPool } from '../common/peer-pool';
import { ApiKeyFile } from '../common/api-key-file';
import { ApiKeyFileError } from '../common/api-keys';
import { DEFAULT_MAX_REQUESTS_PER_CONNECTION } from './connection-cap';
import { DEFAULT_READ_HEDGE_MS, MAX_READ_HEDGE_MS } from '../common/read-hedge';
import { Coordinator } from './coordinator';
import { GatewayMetrics } from './metrics';
import { attachProtocolErrorHandlers } from './protocol-errors';
import { rateLimitAdmission, RequestRateLimiter } from './rate-limit';
import { shareOfMemoryLimit } from '../common/memory-limit';
import { DEFAULT_IN_FLIGHT_LIMITS } from './in-flight-budget';
import { createRequestListener } from './request-listener';
import { DEFAULT_LIMITS, DEFAULT_MAX_BATCH_BYTES } from './request-input';
import { SERVER_LIMITS } from './server-limits';
import { DEFAULT_TLS_RELOAD_MS, TlsReloader, tlsFromFlags, tlsServerOptions } from '../common/tls';

const USAGE = `usage: kvstore-gateway [--id ID] [--cluster NAME] [--host HOST] [--port PORT]
       (--metadata-file PATH | --redis URL | --kube-namespace NS [--redis URL]) [--rpc-timeout-ms MS]
       [--read-hedge-ms MS]  (a read short of R answers asks one more replica every MS, default 50; 0: only on failures)
       (--auth-file PATH | --no-auth) [--max-requests-per-connection N]
       [--max-key-bytes N] [--max-value-bytes N] [--max-batch-bytes N]  (a POST /v1/batch body, default ${DEFAULT_MAX_BATCH_BYTES})
       [--internal-token-file PATH (or $KVSTORE_INTERNAL_TOKEN)]
       [--tls-cert PATH --tls-key PATH [--tls-reload-ms MS]]  (HTTPS; the files are re-read every MS, default ${DEFAULT_TLS_RELOAD_MS})
       [--rate-limit-per-key N] [--rate-limit-per-address N] [--rate-limit-window-s S]
         (requests per S seconds, default 1; 0, the default, is no limit; shared through --redis when given)
       [--max-inflight-bytes N] [--max-inflight-requests N] [--inflight-queue-ms MS]
         (request bodies and requests held at once; past them a request waits up to MS, default 100,
          then gets 503 overloaded at once. Default bytes: 1/16 of the container's memory limit,
          between 16 and 256 MiB, 64 MiB without a limit)
       [--shutdown-delay-ms MS]  (on SIGTERM, keep serving for MS with /readyz failing before closing; default 0)

${ENV_HELP}`;

/**
 * The bound on request bodies held at once, from the memory the gateway may use: 1/16 of its
 * cgroup's limit (each body is held about four times over: read, encoded, one frame per replica),
 * between 16 and 256 MiB; 64 MiB when there is no limit.
 */
function defaultInFlightBytes(): number {
  return shareOfMemoryLimit(1 / 16, 16 * 1024 * 1024, 256 * 1024 * 1024, DEFAULT_IN_FLIGHT_LIMITS.maxBytes);
}

async function main(): Promise<void> {
  const args = parseServerArgs({
    argv: process.argv.slice(2),
    env: process.env,
    alsoReads: [INTERNAL_TOKEN_ENV],
    options: {
      id: { type: 'string' },
      cluster: { type: 'string', default: 'local' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      'metadata-file': { type: 'string' },
      redis: { type: 'string' },
      'kube-namespace': { type: 'string' },
      'rpc-timeout-ms': { type: 'string' },
      'read-hedge-ms': { type: 'string' },
      'max-key-bytes': { type: 'string' },
      'max-value-bytes': { type: 'string' },
      'max-batch-bytes': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-reload-ms': { type: 'string' },
      'internal-token-file': { type: 'string' },
      'auth-file': { type: 'string' },
      'no-auth': { type: 'boolean' },
      'max-requests-per-connection': { type: 'string' },
      'max-inflight-bytes': { type: 'string' },
      'max-inflight-requests': { type: 'string' },
      'inflight-queue-ms': { type: 'string' },
      'rate-limit-per-key': { type: 'string' },
      'rate-limit-per-address': { type: 'string' },
      'rate-limit-window-s': { type: 'string' },
      'shutdown-delay-ms': { type: 'string' },
    },
  });
  const { values } = args;
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  // The id breaks version ties between gateways, so it must differ between any two running at once.
  const id = values.id ?? `gw-${randomBytes(4).toString('hex')}`;
  const cluster = values.cluster;
  const port = args.int('port', 3000, 0, 65535);
  const timeoutMs = args.int('rpc-timeout-ms', 2000, 10, 600_000);
  // 0 turns hedging off: a read then asks another replica only when one fails or times out.
  const hedgeOption = args.int('read-hedge-ms', DEFAULT_READ_HEDGE_MS, 0, MAX_READ_HEDGE_MS);
  const readHedgeMs = hedgeOption === 0 ? undefined : hedgeOption;
  const shutdownDelayMs = args.int('shutdown-delay-ms', 0, 0, 300_000);
  const limits = {
    maxKeyBytes: args.int('max-key-bytes', DEFAULT_LIMITS.maxKeyBytes, 1, 1976),
    maxValueBytes: args.int('max-value-bytes', DEFAULT_LIMITS.maxValueBytes, 0, 64 * 1024 * 1024 - 4096),
    // At most 48 MiB: a round's write RPC to one node carries every value (3/4 of their base64), under the 64 MiB frame.
    maxBatchBytes: args.int('max-batch-bytes', DEFAULT_MAX_BATCH_BYTES, 1024, 48 * 1024 * 1024),
  };

  // Checked before anything connects: a missing or mismatched pair is a usage error (exit 2).
  const tlsReloadMs =
    values['tls-reload-ms'] === undefined
      ? undefined
      : args.int('tls-reload-ms', DEFAULT_TLS_RELOAD_MS, 10, 86_400_000);
  const tlsConfig = tlsFromFlags(values['tls-cert'], values['tls-key'], tlsReloadMs);
  // Auth is off only when asked for by name: a forgotten flag must not open the cluster to everyone.
  const authPath = values['auth-file'];
  if ((authPath === undefined) === (values['no-auth'] !== true)) {
    throw new UsageError(
      'give exactly one of --auth-file PATH (API keys, see kvctl auth create-key) or --no-auth (every request is accepted), as flags or as KVSTORE_AUTH_FILE / KVSTORE_NO_AUTH=true',
    );
  }
  if (authPath === '') throw new UsageError(`${args.where('auth-file')} needs a path`);
  const maxRequestsPerConnection = args.int(
    'max-requests-per-connection',
    DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    1,
    10_000,
  );
  const inFlight = {
    maxBytes: args.int('max-inflight-bytes', defaultInFlightBytes(), 64 * 1024, 2 ** 40),
    maxRequests: args.int('max-inflight-requests', DEFAULT_IN_FLIGHT_LIMITS.maxRequests, 1, 1_000_000),
    queueMs: args.int('inflight-queue-ms', DEFAULT_IN_FLIGHT_LIMITS.queueMs, 0, 60_000),
  };
  const rateLimits = {
    perKey: args.int('rate-limit-per-key', 0, 0, 1_000_000_000),
    perAddress: args.int('rate-limit-per-address', 0, 0, 1_000_000_000),
    windowSeconds: args.int('rate-limit-window-s', 1, 1, 86_400),
  };
  // Presented to every node; a node that requires it refuses the gateway's requests without it.
  const internalToken = loadInternalToken({ file: values['internal-token-file'] });

  const log = createLogger('gateway', { gateway: id, cluster });
  warnUnknownEnv(log, 'kvstore-gateway', args);
  const clock = new HybridLogicalClock(id);
  const metrics = new GatewayMetrics({ gateway: id, cluster });
  // The same Redis as the partition map, when there is one: one Redis per cluster to run.
  const limiter = new RequestRateLimiter({ cluster, ...rateLimits, redis: values.redis, metrics, log });
  if (limiter.enabled) {
    log.info(
      { rateLimits, shared: limiter.shared },
      limiter.shared
        ? 'rate limits on, shared by all gateways through Redis'
        : 'rate limits on, counted in memory: without --redis each gateway replica allows the full limit',
    );
    // So the first requests do not fall back to memory while the client is still connecting.
    if (limiter.shared && !(await limiter.waitForRedis(2000)))
      log.warn('Redis for rate limits not reachable yet: counting in memory until it answers');
  }
  let authFile: ApiKeyFile | undefined;
  if (authPath !== undefined) {
    authFile = await ApiKeyFile.open(authPath, log, {
      onReload: (outcome) => metrics.authKeyReloads.inc({ outcome }),
    }).catch((err: unknown) => {
      // A missing or invalid key file is a configuration mistake: one line and exit 2, as for a bad flag.
      throw err instanceof ApiKeyFileError
        ? new UsageError(`${args.where('auth-file')}: ${err.message}`)
        : err;
    });
    log.info({ path: authPath, keys: authFile.current().size }, 'auth on: API keys from the auth file');
  } else {
    log.warn('auth off (--no-auth): every request is accepted, with admin rights, without a key');
  }
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
  const pool = new PeerPool({ clock, epoch, timeoutMs, log, token: internalToken });
  // A node's status (/v1/cluster, kvstore_gateway_node_up, replica order) from answers, even when idle.
  pool.startHeartbeat(1000);
  metrics.nodeStatus = () =>
    (maps.current()?.nodes ?? []).map((n) => ({ node: n.id, status: pool.status(n.id) }));
  const onMap = (): void => {
    const map = maps.current();
    if (map) pool.update(map);
    metrics.mapEpoch.set(epoch());
  };
  onMap();
  maps.on('change', onMap);

  const coordinator = new Coordinator(maps, pool, clock, metrics, log, { readHedgeMs });
  /** set on SIGTERM with --shutdown-delay-ms: see stop() */
  let draining = false;
  const keyFile = authFile;
  const listener = createRequestListener({
    coordinator,
    maps,
    pool,
    metrics,
    log,
    limits,
    auth: keyFile ? { keys: () => keyFile.current() } : 'off',
    maxRequestsPerConnection,
    inFlight,
    ...(limiter.enabled ? { admission: rateLimitAdmission(limiter) } : {}),
    draining: () => draining,
  });
  // With TLS the same listener behind an https server (any server options added here belong to both).
  const httpsServer = tlsConfig
    ? https.createServer({ ...SERVER_LIMITS, ...tlsServerOptions(tlsConfig.pair) }, listener)
    : undefined;
  const server: http.Server | https.Server = httpsServer ?? http.createServer(SERVER_LIMITS, listener);
  // While draining, every answer closes its connection, so keep-alive clients reconnect through the
  // Service (to a gateway that stays) instead of reusing a socket this one is about to close.
  server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    if (draining) res.setHeader('Connection', 'close');
  });
  // Malformed requests and CONNECT get the API's JSON error, not Node's bare 400 or silence.
  attachProtocolErrorHandlers(server, log);
  server.listen(port, values.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  // Slow or stalled clients must not hold sockets forever.
  server.requestTimeout = SERVER_LIMITS.requestTimeout;
  server.headersTimeout = SERVER_LIMITS.headersTimeout;
  server.keepAliveTimeout = SERVER_LIMITS.keepAliveTimeout;
  // Renewed certificates (a Secret updated in place) are picked up without a restart.
  const reloader =
    httpsServer && tlsConfig ? new TlsReloader(httpsServer, tlsConfig.files, tlsConfig.pair, log) : undefined;
  reloader?.start(tlsReloadMs ?? DEFAULT_TLS_RELOAD_MS);
  const addr = server.address() as AddressInfo;
  log.info(
    {
      url: `${httpsServer ? 'https' : 'http'}://${addr.address}:${addr.port}`,
      epoch: epoch(),
      timeoutMs,
      limits,
      ...(tlsConfig
        ? {
            tls: { subject: tlsConfig.pair.subject, validTo: tlsConfig.pair.validTo, files: tlsConfig.files },
          }
        : {}),
    },
    'gateway started',
  );

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    if (shutdownDelayMs > 0) {
      // Kubernetes removes a terminating pod from its Service at about the time it sends SIGTERM, not
      // before: requests keep arriving for a moment. Serve them (readiness failing, connections
      // closing after each answer) for the delay, then stop as below.
      draining = true;
      log.info({ signal, shutdownDelayMs }, 'gateway draining');
      setTimeout(() => close(signal), shutdownDelayMs);
      return;
    }
    close(signal);
  };
  const close = (signal: string): void => {
    log.info({ signal }, 'gateway stopping');
    reloader?.stop();
    authFile?.stop();
    server.close(() => {
      pool.close();
      maps.stop();
      limiter.close().catch((err: unknown) => log.warn({ err }, 'rate limiter did not close cleanly'));
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
