import { parseArgs } from 'node:util';
import {
  ApiKeyFileError,
  ApiKeySet,
  hashToken,
  newToken,
  ROLES,
  type ApiKeyEntry,
  type Role,
} from '../common/api-keys';
import { COMMAND_EXIT_USAGE, GLOBAL_OPTIONS, namesCommand, type CommandIo } from './kvctl-command';

/**
 * `kvctl auth create-key`: makes a new API key for the gateway's key file
 * (`--auth-file`, or `keys.json` of the Secret a KVCluster's `spec.auth.secretRef`
 * names). Nothing is sent anywhere: it prints the token once, and the entry,
 * holding only the token's SHA-256, to add to the file's "keys" array.
 */

export const AUTH_USAGE = `usage: kvctl auth create-key --id ID --role read|readwrite|admin [--prefix P] [--json]

Makes a new API key: prints its token (shown once: store it now, only its hash is kept) and the entry to
add to the "keys" array of the gateway's key file (--auth-file, or keys.json in the Secret named by
spec.auth.secretRef). The gateway re-reads the file within seconds.

options:
  --id ID        a name for the key, unique in the file (logged on refusals; never the token)
  --role ROLE    read: GET keys; readwrite: also PUT and DELETE; admin: everything, incl. /v1/admin/*
  --prefix P     limit the key to keys that start with P (not for admin keys)
  --json         print {"token", "entry"} as JSON, for scripts

exit status: 0 made, 2 usage error`;

export const AUTH_EXIT_OK = 0;
export const AUTH_EXIT_USAGE = COMMAND_EXIT_USAGE;

export type AuthIo = CommandIo;

export class AuthUsageError extends Error {
  override readonly name = 'AuthUsageError';
}

export interface CreateKeyArgs {
  readonly id: string;
  readonly role: Role;
  readonly prefix?: string;
  readonly json: boolean;
}

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  id: { type: 'string' },
  role: { type: 'string' },
  prefix: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** True when kvctl's command line names the auth command. */
export function isAuthCommand(argv: readonly string[]): boolean {
  return namesCommand(argv, 'auth', OPTIONS);
}

/** Parses `kvctl ... auth create-key ...`; undefined for --help. Throws AuthUsageError. Pure. */
export function parseAuthArgs(argv: readonly string[]): CreateKeyArgs | undefined {
  let values: { id?: string; role?: string; prefix?: string; json?: boolean; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      options: OPTIONS,
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new AuthUsageError((err instanceof Error ? err.message : String(err)).replace(/^.*?: /, ''));
  }
  if (positionals[0] !== 'auth') throw new AuthUsageError('not an auth command line');
  if (values.help && positionals.length <= 2) return undefined;
  if (positionals.length < 2) throw new AuthUsageError('auth needs a subcommand: create-key');
  if (positionals[1] !== 'create-key') {
    throw new AuthUsageError(`unknown auth subcommand ${JSON.stringify(positionals[1])}; use create-key`);
  }
  if (positionals.length > 2)
    throw new AuthUsageError(`create-key takes no arguments, got ${positionals[2]}`);
  if (values.id === undefined) throw new AuthUsageError('--id ID is required');
  if (values.role === undefined) throw new AuthUsageError(`--role is required: one of ${ROLES.join(', ')}`);
  const role = values.role;
  if (!(ROLES as readonly string[]).includes(role)) {
    throw new AuthUsageError(`--role must be one of ${ROLES.join(', ')}, got ${JSON.stringify(role)}`);
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

/** Runs `kvctl auth ...`; returns the exit status, never throws. */
export function runAuth(argv: readonly string[], io: AuthIo): number {
  let args: CreateKeyArgs | undefined;
  let made: { token: string; entry: ApiKeyEntry };
  try {
    args = parseAuthArgs(argv);
    if (args === undefined) {
      io.stdout.write(`${AUTH_USAGE}\n`);
      return AUTH_EXIT_OK;
    }
    made = createKey(args);
  } catch (err) {
    if (!(err instanceof AuthUsageError || err instanceof ApiKeyFileError)) throw err;
    const message =
      err instanceof ApiKeyFileError ? err.message.replace(/^the new key: keys\[0\] /, '') : err.message;
    io.stderr.write(`kvctl: usage: ${message}\nRun 'kvctl auth --help' for usage.\n`);
    return AUTH_EXIT_USAGE;
  }
  if (args.json) {
    io.stdout.write(`${JSON.stringify(made, null, 2)}\n`);
    return AUTH_EXIT_OK;
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
  return AUTH_EXIT_OK;
}
