import { parseArgs, type ParseArgsConfig } from 'node:util';
import { intValue, UsageError } from './cli-options';
import { errorMessage } from './errors';
import type { Logger } from './logger';

/**
 * The command line of a server (node, gateway, operator, launcher), as cloud-native services take
 * theirs: every flag `--some-flag` can also be set by the environment variable `KVSTORE_SOME_FLAG`,
 * a flag on the command line winning over the variable. Pure given (argv, env), so every rule is
 * tested here once for all four.
 */

/** A server's flags, as node:util parseArgs takes them; `--help`/`-h` is added, and has no variable. */
export type ServerOptions = NonNullable<ParseArgsConfig['options']>;

type Parsed<O extends ServerOptions> = ReturnType<
  typeof parseArgs<{ options: O & typeof HELP; strict: true; allowPositionals: false }>
>['values'];

const HELP = { help: { type: 'boolean', short: 'h' } } as const;

/** The variable prefix; a variable is the flag in capitals with `_` for `-`. */
export const ENV_PREFIX = 'KVSTORE_';

/**
 * Variables of kvstore's other programs (kvctl, the client), which a shell set up for kvctl has
 * exported: not a server's settings, but not a typo either, so not warned about.
 */
export const CLIENT_ENV: readonly string[] = [
  'KVSTORE_URL',
  'KVSTORE_TOKEN',
  'KVSTORE_CA',
  'KVSTORE_ADMIN_URL',
];

export function envName(flag: string): string {
  return ENV_PREFIX + flag.toUpperCase().replace(/-/g, '_');
}

export interface ServerArgs<O extends ServerOptions> {
  /** the values, from the command line, else the environment, else the option's default */
  readonly values: Parsed<O>;
  readonly help: boolean;
  /**
   * `KVSTORE_*` variables that are no setting of this program (a typo, a Kubernetes service link):
   * ignored, and for the program to log as a warning once its logger is up.
   */
  readonly unknownEnv: readonly string[];
  /** Where a value came from, for messages: `--port`, or `KVSTORE_PORT` when the variable set it. */
  where(flag: keyof O & string): string;
  /** A whole-number flag in [min, max], or the fallback when neither flag nor variable is set. */
  int(flag: keyof O & string, fallback: number, min: number, max: number): number;
  /** A string flag that must be given (by flag or variable), non-empty. */
  required(flag: keyof O & string): string;
  /** A string flag that takes a boolean (`--leader-elect=false`): true, false, 1 or 0. */
  boolean(flag: keyof O & string): boolean | undefined;
}

export interface ServerArgsInput<O extends ServerOptions> {
  readonly options: O;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  /** other `KVSTORE_*` variables this program reads itself (e.g. KVSTORE_INTERNAL_TOKEN) */
  readonly alsoReads?: readonly string[];
}

export function parseServerArgs<const O extends ServerOptions>(input: ServerArgsInput<O>): ServerArgs<O> {
  const { options, env } = input;
  if ('help' in options) throw new TypeError('parseServerArgs adds --help itself');
  let parsed;
  try {
    parsed = parseArgs({
      args: [...input.argv],
      options: { ...options, ...HELP },
      strict: true,
      allowPositionals: false,
      tokens: true,
    });
  } catch (err) {
    // parseArgs' own errors (unknown flag, missing value) are usage errors: one line, exit 2.
    // (Matched by code: the TypeError may come from another realm, as under jest.)
    const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
    if (code.startsWith('ERR_PARSE_ARGS')) throw new UsageError(errorMessage(err), { code }, { cause: err });
    throw err;
  }
  const values: Record<string, unknown> = { ...parsed.values };
  const onCommandLine = new Set(parsed.tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : [])));
  const fromEnv = new Set<string>();
  const known = new Set<string>([...CLIENT_ENV, ...(input.alsoReads ?? [])]);
  for (const [flag, option] of Object.entries(options)) {
    const name = envName(flag);
    known.add(name);
    const raw = env[name];
    // Empty is unset, as a shell's `KVSTORE_X= cmd` or a blanked value in a manifest means.
    if (onCommandLine.has(flag) || raw === undefined || raw === '') continue;
    fromEnv.add(flag);
    if (option.type === 'boolean') {
      values[flag] = booleanValue(name, raw);
    } else if (option.multiple === true) {
      // Several values in one variable, separated by spaces (`--node-arg` takes flags, which have none).
      values[flag] = raw.split(/\s+/).filter((v) => v !== '');
    } else {
      values[flag] = raw;
    }
  }
  const unknownEnv = Object.keys(env)
    .filter((k) => k.startsWith(ENV_PREFIX) && !known.has(k))
    .sort();

  const where = (flag: string): string => (fromEnv.has(flag) ? envName(flag) : `--${flag}`);
  const stringValue = (flag: string): string | undefined => {
    const v = values[flag];
    if (v !== undefined && typeof v !== 'string') throw new TypeError(`--${flag} is not a string option`);
    return v;
  };
  const withHint = <T>(flag: string, read: () => T): T => {
    try {
      return read();
    } catch (err) {
      // The kubelet's service links (`KVSTORE_PORT=tcp://10.0.0.1:80` for a Service named kvstore)
      // look like our variables: say so, rather than leave a puzzling value.
      const raw = stringValue(flag);
      if (err instanceof UsageError && fromEnv.has(flag) && raw !== undefined && /^tcp:\/\//.test(raw)) {
        throw new UsageError(
          `${err.message} (set by a Kubernetes service link? give the pod enableServiceLinks: false)`,
          err.context,
          { cause: err },
        );
      }
      throw err;
    }
  };
  return {
    values: values as Parsed<O>,
    help: values.help === true,
    unknownEnv,
    where,
    int: (flag, fallback, min, max) =>
      withHint(flag, () => intValue(where(flag), stringValue(flag), fallback, min, max)),
    required: (flag) => {
      const v = stringValue(flag);
      if (v === undefined || v === '') throw new UsageError(`--${flag} (or ${envName(flag)}) is required`);
      return v;
    },
    boolean: (flag) => {
      const v = stringValue(flag);
      return v === undefined ? undefined : withHint(flag, () => booleanValue(where(flag), v));
    },
  };
}

function booleanValue(source: string, raw: string): boolean {
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new UsageError(`${source} takes true, false, 1 or 0, got ${JSON.stringify(raw)}`);
}

/** The line every server's `--help` ends with. */
export const ENV_HELP = `Every flag can also be set by an environment variable: --some-flag=V as KVSTORE_SOME_FLAG=V
(booleans: true, false, 1 or 0; empty is unset). A flag on the command line wins over its variable.`;

/** The warning for `unknownEnv`: a misspelt variable must not pass unnoticed. */
export function unknownEnvWarning(program: string, unknown: readonly string[]): string | undefined {
  if (unknown.length === 0) return undefined;
  return `ignoring ${unknown.join(', ')}: not a setting of ${program} (misspelt? --help lists them)`;
}

/** Logs the unknownEnv warning, if any, once the program's logger is up. */
export function warnUnknownEnv(
  log: Pick<Logger, 'warn'>,
  program: string,
  args: Pick<ServerArgs<ServerOptions>, 'unknownEnv'>,
): void {
  const warning = unknownEnvWarning(program, args.unknownEnv);
  if (warning !== undefined) log.warn({ variables: args.unknownEnv }, warning);
}
