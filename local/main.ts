import path from 'node:path';
import { parseArgs } from 'node:util';
import { intOption, runMain } from '../common/cli-options';
import { createLogger } from '../common/logger';
import { LocalCluster } from './cluster';

const USAGE = `usage: npm start -- [--port 3000] [--nodes N] [--replication-factor RF] [--partitions P]
                    [--data-dir ./.kvstore-data] [--redis URL] [--cluster NAME]

Runs N storage nodes and a gateway as local processes on 127.0.0.1.
Started again on the same --data-dir, every key is still there.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      nodes: { type: 'string' },
      'replication-factor': { type: 'string' },
      partitions: { type: 'string' },
      'data-dir': { type: 'string', default: '.kvstore-data' },
      redis: { type: 'string' },
      cluster: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const port = intOption('port', values.port, 3000, 1, 65535 - 200);
  const opt = (name: string, raw: string | undefined, max: number): number | undefined =>
    raw === undefined ? undefined : intOption(name, raw, 0, 1, max);
  const dataDir = path.resolve(values['data-dir']);
  const log = createLogger('local');
  const cluster = await LocalCluster.start({
    dataDir,
    port,
    nodes: opt('nodes', values.nodes, 99),
    replicationFactor: opt('replication-factor', values['replication-factor'], 99),
    partitionCount: opt('partitions', values.partitions, 65535),
    cluster: values.cluster,
    redisUrl: values.redis,
    restart: true,
    log,
  });
  const m = cluster.map;
  const relative = path.relative(process.cwd(), dataDir) || '.';
  const rel = relative.startsWith('..') ? dataDir : relative;
  process.stdout.write(
    [
      '',
      `kvstore is running: ${m.nodes.length} nodes, replication factor ${m.replicationFactor}, ${m.partitionCount} partitions`,
      `  gateway   ${cluster.url}`,
      `  data      ${rel}  (logs in ${path.join(rel, 'logs')})`,
      `  metadata  ${values.redis ? values.redis : path.join(rel, 'partition-map.json')}`,
      '',
      `  try       curl -X PUT --data-binary 'hello' ${cluster.url}/v1/kv/greeting`,
      `            curl ${cluster.url}/v1/kv/greeting`,
      `            npx kvctl --url ${cluster.url} cluster`,
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
    cluster
      .stop()
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
