import path from 'node:path';
import { runMain, UsageError } from '../common/cli-options';
import { createLogger } from '../common/logger';
import { ENV_HELP, parseServerArgs, warnUnknownEnv } from '../common/server-args';
import { ApiKeyFile } from '../common/api-key-file';
import { ApiKeyFileError } from '../common/api-keys';
import { tlsFromFlags } from '../common/tls';
import { RunnerAdminServer } from './admin-server';
import { LocalCluster } from './cluster';
import { LocalClusterError } from './errors';
import { MAX_NODES } from './node-ports';

const USAGE = `usage: npm start -- [--port 3000] [--nodes N] [--replication-factor RF] [--partitions P]
                    [--data-dir ./.kvstore-data] [--redis URL] [--cluster NAME] [--auth-file PATH]
                    [--tls-cert PATH --tls-key PATH]  (the gateway serves HTTPS; renewed files are picked up)
                    [--node-arg=--FLAG=VALUE]...  (passed to every node, e.g. --node-arg=--move-max-bytes-per-second=1048576)

Runs N storage nodes and a gateway as local processes on 127.0.0.1, and an admin
listener on port+100 for \`kvctl scale\`. Started again on the same --data-dir, every
key is still there; a different --nodes scales the cluster to it. If this launcher
dies, the processes keep serving and the next launcher adopts them.

${ENV_HELP} The nodes and the gateway get
none of the launcher's KVSTORE_* variables: only what it passes them (--node-arg, LOG_LEVEL).`;

async function main(): Promise<void> {
  const args = parseServerArgs({
    argv: process.argv.slice(2),
    env: process.env,
    options: {
      port: { type: 'string' },
      nodes: { type: 'string' },
      'replication-factor': { type: 'string' },
      partitions: { type: 'string' },
      'data-dir': { type: 'string', default: '.kvstore-data' },
      redis: { type: 'string' },
      cluster: { type: 'string' },
      'node-arg': { type: 'string', multiple: true },
      'auth-file': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
    },
  });
  const { values } = args;
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const port = args.int('port', 3000, 1, 65535 - 200);
  const opt = (name: 'nodes' | 'replication-factor' | 'partitions', max: number): number | undefined =>
    values[name] === undefined ? undefined : args.int(name, 0, 1, max);
  const dataDir = path.resolve(values['data-dir']);
  // Checked here, so a missing or mismatched pair stops the launcher before any process starts.
  const tlsChecked = tlsFromFlags(values['tls-cert'], values['tls-key'], undefined);
  const tls = tlsChecked && {
    certFile: path.resolve(tlsChecked.files.certFile),
    keyFile: path.resolve(tlsChecked.files.keyFile),
  };
  const log = createLogger('local');
  warnUnknownEnv(log, 'the launcher', args);
  // Listening first: a busy admin port (another launcher on this --port) stops us before any process starts.
  // The gateway's API keys; the launcher's admin listener checks the same file (admin keys only).
  const authPath = values['auth-file'] === undefined ? undefined : path.resolve(values['auth-file']);
  const authFile =
    authPath === undefined
      ? undefined
      : await ApiKeyFile.open(authPath, log).catch((err: unknown) => {
          throw err instanceof ApiKeyFileError
            ? new UsageError(`${args.where('auth-file')}: ${err.message}`)
            : err;
        });
  const admin = new RunnerAdminServer(log, authFile ? { keys: () => authFile.current() } : undefined);
  const adminPort = port + 100;
  try {
    await admin.listen('127.0.0.1', adminPort);
  } catch (err) {
    throw new UsageError(
      `port ${adminPort} (the launcher's admin port, --port + 100) is unavailable on 127.0.0.1 (${(err as Error).message}); is another kvstore running? pick another --port`,
    );
  }
  const cluster = await LocalCluster.start({
    dataDir,
    port,
    nodes: opt('nodes', MAX_NODES),
    replicationFactor: opt('replication-factor', 99),
    partitionCount: opt('partitions', 65535),
    cluster: values.cluster,
    redisUrl: values.redis,
    nodeArgs: values['node-arg'] ?? [],
    ...(authPath !== undefined ? { authFile: authPath } : {}),
    ...(tls ? { tls } : {}),
    restart: true,
    detach: true,
    log,
  }).catch(async (err: unknown) => {
    await admin.close();
    // Another launcher on this data directory: a one-line answer, not a stack trace.
    if (err instanceof LocalClusterError && err.code === 'already_running') throw new UsageError(err.message);
    throw err;
  });
  admin.attach(cluster);
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const adopted = cluster.adoptedProcesses();
  const m = cluster.map;
  const relative = path.relative(process.cwd(), dataDir) || '.';
  const rel = relative.startsWith('..') ? dataDir : relative;
  const curl = `${tls ? 'curl --cacert CA.pem' : 'curl'}${authFile ? ' -H "Authorization: Bearer $KVSTORE_TOKEN"' : ''}`;
  process.stdout.write(
    [
      '',
      `kvstore is running: ${m.nodes.length} nodes, replication factor ${m.replicationFactor}, ${m.partitionCount} partitions`,
      `  gateway   ${cluster.url}`,
      ...(tls
        ? [
            `  tls       ${tls.certFile} (re-read every 30 s; clients trust the CA that signed it: curl --cacert, kvctl --ca)`,
          ]
        : []),
      `  data      ${rel}  (logs in ${path.join(rel, 'logs')})`,
      `  metadata  ${values.redis ? values.redis : path.join(rel, 'partition-map.json')}`,
      `  internal  ${path.join(rel, 'internal-token')}  (the token every node requires on its internal port)`,
      authFile
        ? `  auth      on: API keys from ${authPath} (${authFile.current().size} keys; send Authorization: Bearer <token>, kvctl --token)`
        : '  auth      off: every request is accepted (--auth-file PATH turns API keys on; kvctl auth create-key)',
      `  admin     ${adminUrl}  (npx kvctl scale --nodes N --admin-url ${adminUrl})`,
      ...(adopted.length > 0
        ? [`  adopted   ${adopted.join(', ')} (left running by a launcher that died)`]
        : []),
      ...(m.rebalance
        ? [
            `  rebalance ${m.moves.length} of ${m.rebalance.movesTotal} moves left, to ${m.rebalance.targetNodes.length} nodes (npx kvctl --url ${cluster.url} status --watch)`,
          ]
        : []),
      '',
      `  try       ${curl} -X PUT --data-binary 'hello' ${cluster.url}/v1/kv/greeting`,
      `            ${curl} ${cluster.url}/v1/kv/greeting`,
      `            npx kvctl --url ${cluster.url}${tls ? ' --ca CA.pem' : ''} cluster`,
      '',
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write('stopping kvstore...\n');
    admin
      .close()
      .then(() => {
        authFile?.stop();
        return cluster.stop();
      })
      .then(() => {
        process.stdout.write('stopped.\n');
        process.exit(0);
      })
      .catch((err: unknown) => {
        log.error({ err }, 'unclean stop');
        process.exit(1);
      });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

runMain('kvstore', main);
