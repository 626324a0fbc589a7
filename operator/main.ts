import fs from 'node:fs';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { runMain, UsageError } from '../common/cli-options';
import { loadDefaultKubeConfig } from '../common/configmap-metadata-store';
import { createLogger } from '../common/logger';
import { MetadataError } from '../common/metadata-store';
import { ENV_HELP, parseServerArgs, warnUnknownEnv } from '../common/server-args';
import { splitAddress } from '../common/rpc-client';
import { DEFAULT_LEASE_NAME } from './leader-election';
import { Operator } from './operator';

const USAGE = `usage: kvstore-operator [--namespace NS (default: all namespaces)] [--leader-elect=true|false]
       [--lease-namespace NS (default: the pod's namespace)] [--lease-name ${DEFAULT_LEASE_NAME}]
       [--metrics-listen 0.0.0.0:8080] [--managed-redis-url redis://...]

Reconciles KVCluster resources (kvstore.io/v1alpha1) into storage node StatefulSets, gateways and
partition maps. Finds the API server with KUBECONFIG, ~/.kube/config or the in-cluster service
account. Serves /healthz, /readyz and /metrics on --metrics-listen.

${ENV_HELP}`;

/** Where a pod's service account says it runs; the Lease goes there unless told otherwise. */
const SERVICE_ACCOUNT_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

async function main(): Promise<void> {
  const args = parseServerArgs({
    argv: process.argv.slice(2),
    env: process.env,
    options: {
      namespace: { type: 'string' },
      'leader-elect': { type: 'string', default: 'true' },
      'lease-namespace': { type: 'string' },
      'lease-name': { type: 'string', default: DEFAULT_LEASE_NAME },
      'metrics-listen': { type: 'string', default: '0.0.0.0:8080' },
      'managed-redis-url': { type: 'string' },
    },
  });
  const { values } = args;
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const leaderElect = args.boolean('leader-elect') ?? true;
  let metricsListen;
  try {
    metricsListen = splitAddress(values['metrics-listen']);
  } catch (err) {
    throw new UsageError(`${args.where('metrics-listen')} takes HOST:PORT (${(err as Error).message})`);
  }
  if (values['managed-redis-url'] !== undefined && !/^rediss?:\/\/\S+$/.test(values['managed-redis-url'])) {
    throw new UsageError(`${args.where('managed-redis-url')} must be a redis:// or rediss:// URL`);
  }
  const leaseNamespace = values['lease-namespace'] ?? podNamespace();
  // Unique even when two instances share a host name (tests, a restarted pod seen twice).
  const identity = `${process.env.POD_NAME ?? os.hostname()}_${randomBytes(4).toString('hex')}`;
  const log = createLogger('operator', { identity });
  warnUnknownEnv(log, 'kvstore-operator', args);

  let kubeConfig;
  try {
    kubeConfig = loadDefaultKubeConfig();
  } catch (err) {
    if (err instanceof MetadataError) throw new UsageError(err.message);
    throw err;
  }
  const operator = await Operator.start({
    kubeConfig,
    log,
    identity,
    ...(values.namespace ? { namespace: values.namespace } : {}),
    leaderElect,
    leaseNamespace,
    leaseName: values['lease-name'],
    metricsListen,
    ...(values['managed-redis-url'] ? { managedRedisUrl: values['managed-redis-url'] } : {}),
  });
  const address = operator.metricsAddress();
  log.info(
    {
      namespace: values.namespace ?? '(all)',
      leaderElect,
      lease: `${leaseNamespace}/${values['lease-name']}`,
      metrics: address ? `${address.address}:${address.port}` : undefined,
    },
    'operator started',
  );

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'operator stopping');
    // Releasing the Lease lets a standby take over at once instead of after the lease expires.
    operator.stop().then(
      () => {
        log.info('operator stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'operator did not stop cleanly');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function podNamespace(): string {
  if (process.env.POD_NAMESPACE) return process.env.POD_NAMESPACE;
  try {
    return fs.readFileSync(SERVICE_ACCOUNT_NAMESPACE, 'utf8').trim() || 'default';
  } catch (err) {
    // Outside a pod (a developer's kubeconfig): the default namespace, as kubectl would use.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'default';
    throw err;
  }
}

runMain('kvstore-operator', main);
