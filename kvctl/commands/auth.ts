import type { Command } from 'commander';
import {
  ApiKeyFileError,
  ApiKeySet,
  hashToken,
  newToken,
  ROLES,
  type ApiKeyEntry,
  type Role,
} from '../../common/api-keys';
import { UsageError } from '../../common/cli-options';
import { EXIT_OK, printUsageError, type KvctlIo } from '../io';
import { globalValues, jsonOutput, kvctlCommand, type CommandSetup } from '../options';

/**
 * `kvctl auth create-key`: makes a new API key for the gateway's key file
 * (`--auth-file`, or `keys.json` of the Secret a KVCluster's `spec.auth.secretRef`
 * names). Nothing is sent anywhere: it prints the token once, and the entry,
 * holding only the token's SHA-256, to add to the file's "keys" array.
 */

export const AUTH_USAGE = `usage: kvctl auth create-key --id ID --role read|readwrite|admin [--prefix P] [-o json|table]

Makes a new API key: prints its token (shown once: store it now, only its hash is kept) and the entry to
add to the "keys" array of the gateway's key file (--auth-file, or keys.json in the Secret named by
spec.auth.secretRef). The gateway re-reads the file within seconds.

options:
  --id ID        a name for the key, unique in the file (logged on refusals; never the token)
  --role ROLE    read: GET keys; readwrite: also PUT and DELETE; admin: everything, incl. /v1/admin/*
  --prefix P     limit the key to keys that start with P (not for admin keys)
  -o json        print {"token", "entry"} as JSON, for scripts (also --json)

exit status: 0 made, 2 usage error`;

export interface CreateKeyArgs {
  readonly id: string;
  readonly role: Role;
  readonly prefix?: string;
  readonly json: boolean;
}

interface CreateKeyValues {
  id?: string;
  role?: string;
  prefix?: string;
  json?: boolean;
}

/** `auth`, whose one subcommand is `create-key`; both print AUTH_USAGE for --help. */
export function authCommand(setup: CommandSetup<CreateKeyArgs>): Command {
  const createKey = kvctlCommand('create-key', AUTH_USAGE, setup.sink)
    .option('--id <id>', 'a name for the key, unique in the file')
    .option('--role <role>', 'read, readwrite or admin')
    .option('--prefix <p>', 'limit the key to keys that start with P')
    .option('--json', 'print {"token", "entry"} as JSON')
    .action((opts: CreateKeyValues, cmd: Command) =>
      setup.accept(createKeyArgs({ ...opts, json: jsonOutput({ ...globalValues(cmd), ...opts }) })),
    );
  return kvctlCommand('auth', AUTH_USAGE, setup.sink)
    .argument('[subcommand]')
    .allowExcessArguments()
    .action((subcommand: string | undefined) => {
      // Reached only when the word after `auth` is not a subcommand commander knows.
      if (subcommand === undefined) throw new UsageError('auth needs a subcommand: create-key');
      throw new UsageError(`unknown auth subcommand ${JSON.stringify(subcommand)}; use create-key`);
    })
    .addCommand(createKey);
}

/** The values of `create-key`'s options to its arguments; throws UsageError. Pure. */
export function createKeyArgs(values: CreateKeyValues): CreateKeyArgs {
  if (values.id === undefined) throw new UsageError('--id ID is required');
  if (values.role === undefined) throw new UsageError(`--role is required: one of ${ROLES.join(', ')}`);
  const role = values.role;
  if (!(ROLES as readonly string[]).includes(role)) {
    throw new UsageError(`--role must be one of ${ROLES.join(', ')}, got ${JSON.stringify(role)}`);
  }
  return {
    id: values.id,
    role: role as Role,
    ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
    json: values.json === true,
  };
}

/**
 * A new key: its token and the key-file entry for it. The entry is checked with the gateway's own rules
 * (ApiKeySet.parse), so what this prints is what the gateway accepts; throws ApiKeyFileError otherwise.
 */
export function createKey(
  args: Pick<CreateKeyArgs, 'id' | 'role' | 'prefix'>,
  random?: (n: number) => Buffer,
): { token: string; entry: ApiKeyEntry } {
  const token = newToken(random);
  const entry: ApiKeyEntry = {
    id: args.id,
    sha256: hashToken(token),
    role: args.role,
    ...(args.prefix !== undefined ? { prefix: args.prefix } : {}),
  };
  ApiKeySet.parse(JSON.stringify({ keys: [entry] }), 'the new key');
  return { token, entry };
}

/** Runs `kvctl auth create-key`; returns the exit status, never throws. */
export function runAuth(args: CreateKeyArgs, io: KvctlIo): number {
  let made: { token: string; entry: ApiKeyEntry };
  try {
    made = createKey(args);
  } catch (err) {
    if (!(err instanceof ApiKeyFileError)) throw err;
    // The gateway's rules name the entry of a file; here it is the command line.
    const message = err.message.replace(/^the new key: keys\[0\] /, '');
    return printUsageError(new UsageError(message), 'kvctl auth --help', io.stderr);
  }
  if (args.json) {
    io.stdout.write(`${JSON.stringify(made, null, 2)}\n`);
    return EXIT_OK;
  }
  io.stdout.write(
    [
      `token (shown once; keep it secret, only its hash is stored):`,
      `  ${made.token}`,
      '',
      `add this entry to the "keys" array of the key file (--auth-file, or keys.json in the auth Secret):`,
      `  ${JSON.stringify(made.entry)}`,
      '',
      `then: kvctl --token <token> ...  (or export KVSTORE_TOKEN=<token>)`,
      '',
    ].join('\n'),
  );
  return EXIT_OK;
}
