import fs from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KvClientError } from './index';

/**
 * What kvctl's subcommands (repair, status, scale) share: the global options
 * every one of them accepts, the parsing of their command line into one-line
 * usage errors, durations, defaults from the environment, and how a failed
 * request becomes an exit status.
 */

export const DEFAULT_GATEWAY_URL = 'http://127.0.0.1:3000';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * kvctl's global options. Every subcommand accepts them, so `kvctl --url U --token T <command>`
 * works whatever the command; one that has no use for an option ignores it.
 */
export const GLOBAL_OPTIONS = {
  url: { type: 'string' },
  token: { type: 'string' },
  consistency: { type: 'string' },
  ca: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * True when kvctl's command line names `command` (options may come before or after it).
 * Non-strict: other commands' options are unknown to the caller; those that take a
 * value must be in `options` so their value is not mistaken for the command.
 */
export function namesCommand(argv: readonly string[], command: string, options: Options): boolean {
  const { positionals } = parseArgs({
    args: [...argv],
    options: { ...options, ttl: { type: 'string' } },
    allowPositionals: true,
    strict: false,
  });
  return positionals[0] === command;
}

type StrictConfig<O extends Options> = {
  args: string[];
  options: O;
  allowPositionals: true;
  strict: true;
};

/** The typed `values` node:util's parseArgs returns for these options. */
export type CommandValues<O extends Options> = ReturnType<typeof parseArgs<StrictConfig<O>>>['values'];

/**
 * Parses `kvctl ... <command> [options]` strictly: an unknown option, a missing
 * value or a stray argument becomes `usage(message)` (thrown), with a message
 * that reads as one line after `kvctl: usage: `.
 */
export function parseCommandArgs<O extends Options>(
  argv: readonly string[],
  command: string,
  options: O,
  usage: (message: string) => Error,
): CommandValues<O> {
  let parsed: ReturnType<typeof parseArgs<StrictConfig<O>>>;
  try {
    parsed = parseArgs<StrictConfig<O>>({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (err) {
    // parseArgs's messages start with the error class and code, which say nothing to a person.
    throw usage((err instanceof Error ? err.message : String(err)).replace(/^.*?: /, ''));
  }
  const { positionals } = parsed;
  if (positionals[0] !== command) throw usage(`not a ${command} command line`);
  if (positionals.length > 1) throw usage(`${command} takes no arguments, got ${positionals[1]}`);
  return parsed.values;
}

/** `500ms`, `2s` or a bare number of seconds, within [minMs, maxMs]; throws `usage(message)`. */
export function parseInterval(
  text: string,
  minMs: number,
  maxMs: number,
  usage: (message: string) => Error,
  flag = '--interval',
): number {
  const m = /^(\d+)(ms|s)?$/.exec(text.trim());
  const ms = m ? Number(m[1]) * (m[2] === 'ms' ? 1 : 1000) : NaN;
  if (!(ms >= minMs && ms <= maxMs)) {
    throw usage(
      `${flag} takes a duration from ${formatLimit(minMs)} to ${formatLimit(maxMs)}, e.g. 500ms or 2s; got ${text}`,
    );
  }
  return ms;
}

function formatLimit(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** The gateway kvctl talks to, the token it sends and the CA file it trusts: the flag, else the environment, else the default. */
export function gatewayTarget(
  values: { url?: string; token?: string; ca?: string },
  env: Readonly<Record<string, string | undefined>>,
): { url: string; token?: string; caFile?: string } {
  const token = values.token ?? (env.KVSTORE_TOKEN || undefined);
  const caFile = caFileOption(values, env);
  return {
    url: values.url ?? (env.KVSTORE_URL || DEFAULT_GATEWAY_URL),
    ...(token ? { token } : {}),
    ...(caFile ? { caFile } : {}),
  };
}

/** `--ca FILE`, else `$KVSTORE_CA`; undefined: the system's trusted roots. */
export function caFileOption(
  values: { ca?: string },
  env: Readonly<Record<string, string | undefined>>,
): string | undefined {
  return values.ca ?? (env.KVSTORE_CA || undefined);
}

/** `--ca FILE` that cannot be used: a usage error (exit 2), nothing is sent. */
export class CaFileError extends Error {
  override readonly name = 'CaFileError';
}

/**
 * Reads the `--ca` file (PEM certificates of the CAs to trust for https URLs); undefined for
 * undefined. Throws CaFileError with a one-line message naming the file.
 */
export function readCaFile(file: string | undefined): Buffer | undefined {
  if (file === undefined) return undefined;
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CaFileError(`--ca ${file}: cannot read it (${e.code ?? e.message})`, { cause: err });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new CaFileError(`--ca ${file}: not a PEM certificate (no -----BEGIN CERTIFICATE----- line)`);
  }
  return pem;
}

/**
 * readCaFile for a subcommand's runner: the certificates, or, after printing the usage error
 * (pointing at `helpCommand`, e.g. `kvctl status --help`), the exit status to return.
 */
export function loadCaOrExit(
  file: string | undefined,
  helpCommand: string,
  stderr: { write(chunk: string): unknown },
): { ca: Buffer | undefined } | { exit: number } {
  try {
    return { ca: readCaFile(file) };
  } catch (err) {
    if (!(err instanceof CaFileError)) throw err;
    stderr.write(`kvctl: usage: ${err.message}\nRun '${helpCommand}' for usage.\n`);
    return { exit: COMMAND_EXIT_USAGE };
  }
}

/** What a kvctl subcommand writes to and reads its environment from (tests pass their own). */
export interface CommandIo {
  stdout: { write(chunk: string): unknown; isTTY?: boolean };
  stderr: { write(chunk: string): unknown };
  /** Defaults to process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

export const COMMAND_EXIT_USAGE = 2;
export const COMMAND_EXIT_FAILURE = 3;

/**
 * Prints why a subcommand's request failed and returns its exit status: 2 when the
 * client refused the request before sending it (a bad URL: the command line is at
 * fault), 3 for everything else (unreachable, the server's errors).
 */
export function reportFailure(err: unknown, stderr: { write(chunk: string): unknown }): number {
  if (err instanceof KvClientError) {
    stderr.write(`kvctl: ${err.code}: ${err.message}\n`);
    return err.status === undefined && err.code === 'bad_request' ? COMMAND_EXIT_USAGE : COMMAND_EXIT_FAILURE;
  }
  stderr.write(`kvctl: internal: ${err instanceof Error ? err.message : String(err)}\n`);
  return COMMAND_EXIT_FAILURE;
}
