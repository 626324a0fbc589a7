import type { Command } from 'commander';
import type { ListedEntry, ListOptions } from '../../client';
import { intOption, UsageError } from '../../common/cli-options';
import { dataTarget, withGatewayClient, type DataTarget } from '../data-target';
import { EXIT_OK, type KvctlIo } from '../io';
import { globalValues, kvctlCommand, type CommandSetup } from '../options';
import { LS_USAGE } from '../usage';
import { jsonValue } from './get';

/** `kvctl ls [PREFIX] [--start A] [--end B] [--limit N] [--values]`: keys in byte order, a page at a time. */

export interface LsArgs extends DataTarget {
  readonly prefix?: string;
  readonly start?: string;
  readonly end?: string;
  /** keys to print at most; undefined: all */
  readonly limit?: number;
  readonly values: boolean;
}

/** Keys per request: the gateway's default page. */
const PAGE = 1000;

export function lsCommand(setup: CommandSetup<LsArgs>): Command {
  return kvctlCommand('ls', LS_USAGE, setup.sink)
    .argument('[prefix]')
    .option('--start <key>', 'list from this key (inclusive)')
    .option('--end <key>', 'list up to this key (exclusive)')
    .option('--limit <n>', 'print at most N keys')
    .option('--values', 'print each value beside its key')
    .action(
      (
        prefix: string | undefined,
        opts: { start?: string; end?: string; limit?: string; values?: boolean },
        cmd: Command,
      ) => {
        if (prefix !== undefined && (opts.start !== undefined || opts.end !== undefined)) {
          throw new UsageError('give a PREFIX or --start/--end, not both');
        }
        setup.accept({
          ...dataTarget(globalValues(cmd), setup.env),
          ...(prefix === undefined ? {} : { prefix }),
          ...(opts.start === undefined ? {} : { start: opts.start }),
          ...(opts.end === undefined ? {} : { end: opts.end }),
          ...(opts.limit === undefined
            ? {}
            : { limit: intOption('limit', opts.limit, 0, 1, Number.MAX_SAFE_INTEGER) }),
          values: opts.values === true,
        });
      },
    );
}

export function runLs(args: LsArgs, io: KvctlIo): Promise<number> {
  return withGatewayClient(args, io, async (client) => {
    const list: ListOptions = {
      ...(args.prefix === undefined ? {} : { prefix: args.prefix }),
      ...(args.start === undefined ? {} : { start: args.start }),
      ...(args.end === undefined ? {} : { end: args.end }),
      pageSize: Math.min(PAGE, args.limit ?? PAGE),
      keysOnly: !args.values,
    };
    let printed = 0;
    for await (const entry of client.list(list)) {
      if (args.limit !== undefined && printed >= args.limit) break;
      io.stdout.write(`${format(entry, args)}\n`);
      printed++;
    }
    return EXIT_OK;
  });
}

/** A line: the key (and its value, text or `base64:`), or with -o json a JSON object (JSON lines). */
function format(e: ListedEntry, args: LsArgs): string {
  if (args.json) {
    const value = e.value === undefined ? {} : jsonValue(e.value);
    return JSON.stringify({
      key: e.key,
      version: e.version,
      ...value,
      ...(e.contentType === undefined ? {} : { contentType: e.contentType }),
    });
  }
  if (!args.values || e.value === undefined) return e.key;
  const v = jsonValue(e.value);
  return `${e.key}\t${'value' in v ? JSON.stringify(v.value) : `base64:${v.valueBase64}`}`;
}
