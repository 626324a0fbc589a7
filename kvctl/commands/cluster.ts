import type { Command } from 'commander';
import type { ClusterInfo } from '../../common/rest-api';
import { dataTarget, withGatewayClient, type DataTarget } from '../data-target';
import { EXIT_OK, type KvctlIo } from '../io';
import { globalValues, jsonOutput, kvctlCommand, type CommandSetup } from '../options';
import { table } from '../table';
import { CLUSTER_USAGE } from '../usage';

/** `kvctl cluster [-o json]`: the partition map: nodes, replicas, moves in progress. */

export interface ClusterArgs extends DataTarget {
  readonly json: boolean;
}

export function clusterCommand(setup: CommandSetup<ClusterArgs>): Command {
  return kvctlCommand('cluster', CLUSTER_USAGE, setup.sink)
    .option('--json', 'print the JSON instead of a summary (as -o json)')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const values = { ...globalValues(cmd), ...opts };
      setup.accept({ ...dataTarget(values, setup.env), json: jsonOutput(values) });
    });
}

export function runCluster(args: ClusterArgs, io: KvctlIo): Promise<number> {
  return withGatewayClient(args, io, async (client) => {
    const info = await client.cluster();
    io.stdout.write(args.json ? `${JSON.stringify(info, null, 2)}\n` : formatCluster(info));
    return EXIT_OK;
  });
}

/** Moves listed in the summary; the rest are counted (all of them are in --json). */
const MAX_MOVES_SHOWN = 20;

/** A readable summary of GET /v1/cluster, for people; scripts use --json. */
export function formatCluster(info: ClusterInfo): string {
  const down = info.nodes.filter((n) => n.status === 'down').length;
  const underReplicated = info.partitions.filter((owners) => owners.length < info.replicationFactor).length;
  const lines = [
    `cluster      ${info.cluster}`,
    `epoch        ${info.epoch}`,
    `replication  ${info.replicationFactor} replicas per partition`,
    `partitions   ${info.partitionCount}${underReplicated ? ` (${underReplicated} with fewer than ${info.replicationFactor} replicas)` : ''}`,
    `nodes        ${info.nodes.length}${down ? ` (${down} down)` : ''}`,
    '',
    ...table([
      ['NODE', 'ADDRESS', 'ZONE', 'STATUS', 'REPLICAS'],
      ...info.nodes.map((n) => [n.id, n.address, n.zone ?? '-', n.status, String(n.partitions)]),
    ]),
    '',
  ];
  if (info.moves.length === 0) {
    lines.push('moves in progress: none');
  } else {
    lines.push(`moves in progress: ${info.moves.length}`);
    const shown = info.moves.slice(0, MAX_MOVES_SHOWN);
    lines.push(
      ...table([['PARTITION', 'FROM', 'TO'], ...shown.map((m) => [String(m.partition), m.from, m.to])]).map(
        (l) => `  ${l}`,
      ),
    );
    if (info.moves.length > shown.length) {
      lines.push(`  ... and ${info.moves.length - shown.length} more (--json lists all)`);
    }
  }
  return `${lines.join('\n')}\n`;
}
