import fs from 'node:fs';
import { Command } from 'commander';
import { UsageError } from '../common/cli-options';
import { CONSISTENCY_LEVELS, isConsistency, type Consistency } from '../client';
import { EXIT_USAGE, printUsageError, type Env, type KvctlIo } from './io';

/**
 * What kvctl's commands share on the command line: the global options, defaults from
 * the environment, durations, the CA file, and how a command is set up on commander.
 */

export const DEFAULT_GATEWAY_URL = 'http://127.0.0.1:3000';

/** kvctl's global options, given before or after the command; one that has no use for an option ignores it. */
export interface GlobalValues {
  url?: string;
  token?: string;
  consistency?: string;
  ca?: string;
  output?: string;
}

/** What -o takes: table (for people) or json (for scripts). */
export const OUTPUT_FORMATS = ['table', 'json'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/**
 * Whether to print JSON: `-o json`, or a command's older `--json` (cluster, status, auth create-key);
 * an unknown format, or `--json -o table`, is a usage error.
 */
export function jsonOutput(values: { output?: string; json?: boolean }): boolean {
  const output = values.output;
  if (output !== undefined && !(OUTPUT_FORMATS as readonly string[]).includes(output)) {
    throw new UsageError(`-o/--output takes ${OUTPUT_FORMATS.join(' or ')}, got ${JSON.stringify(output)}`);
  }
  if (values.json === true && output === 'table') throw new UsageError('--json and -o table disagree');
  return output === 'json' || values.json === true;
}

/** Declares the global options on the program. */
export function addGlobalOptions(program: Command): Command {
  return program
    .option('--url <url>', 'gateway URL')
    .option('--consistency <level>', 'one, quorum or all')
    .option('--token <token>', 'bearer token')
    .option('--ca <file>', 'PEM CA certificate(s) to trust for an https URL')
    .option('-o, --output <format>', 'table or json');
}

/** The global options as a command's action sees them. */
export function globalValues(cmd: Command): GlobalValues {
  return cmd.optsWithGlobals<GlobalValues>();
}

/** Where the help a command prints goes: parsing is pure, so it is handed back rather than written. */
export interface HelpSink {
  help(text: string): void;
}

/**
 * A commander command that never exits the process or writes to it: errors are thrown
 * (exitOverride), its --help prints `usage` (kvctl's own text, as the README shows it) to `sink`.
 */
export function kvctlCommand(name: string, usage: string, sink: HelpSink): Command {
  return new Command(name)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => sink.help(text),
      // Errors reach the caller as thrown CommanderErrors, printed once in kvctl's format.
      writeErr: () => undefined,
      outputError: () => undefined,
    })
    .configureHelp({ formatHelp: () => `${usage}\n` });
}

/** The value of `--consistency` when given; a usage error when it is not a level. */
export function consistencyOption(raw: string | undefined): Consistency | undefined {
  if (raw === undefined) return undefined;
  if (!isConsistency(raw)) {
    throw new UsageError(
      `--consistency must be one of ${CONSISTENCY_LEVELS.join(', ')}, got ${JSON.stringify(raw)}`,
    );
  }
  return raw;
}

/** Collects a repeatable option's values (commander keeps only the last otherwise). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** `--token`, else `$KVSTORE_TOKEN`; undefined: none sent. */
export function tokenOption(values: GlobalValues, env: Env): string | undefined {
  return values.token ?? (env.KVSTORE_TOKEN || undefined);
}

/** The gateway a command talks to, the token it sends and the CA file it trusts. */
export interface GatewayTarget {
  readonly url: string;
  readonly token?: string;
  /** PEM CA file to trust for an https URL (--ca, $KVSTORE_CA) */
  readonly caFile?: string;
}

/** The gateway target: the flag, else the environment, else the default. */
export function gatewayTarget(values: GlobalValues, env: Env): GatewayTarget {
  const token = tokenOption(values, env);
  const caFile = caFileOption(values, env);
  return {
    url: values.url ?? (env.KVSTORE_URL || DEFAULT_GATEWAY_URL),
    ...(token ? { token } : {}),
    ...(caFile ? { caFile } : {}),
  };
}

/** `--ca FILE`, else `$KVSTORE_CA`; undefined: the system's trusted roots. */
export function caFileOption(values: { ca?: string }, env: Env): string | undefined {
  return values.ca ?? (env.KVSTORE_CA || undefined);
}

/**
 * Reads the `--ca` file (PEM certificates of the CAs to trust for https URLs); undefined for
 * undefined. A file that cannot be used is a usage error (exit 2, nothing sent) naming the file.
 */
export function readCaFile(file: string | undefined): Buffer | undefined {
  if (file === undefined) return undefined;
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new UsageError(`--ca ${file}: cannot read it (${e.code ?? e.message})`, { file }, { cause: err });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new UsageError(`--ca ${file}: not a PEM certificate (no -----BEGIN CERTIFICATE----- line)`, {
      file,
    });
  }
  return pem;
}

/**
 * readCaFile for a command's runner: the certificates, or, after printing the usage error
 * (pointing at `helpCommand`, e.g. `kvctl status --help`), the exit status to return.
 */
export function loadCaOrExit(
  file: string | undefined,
  helpCommand: string,
  stderr: KvctlIo['stderr'],
): { ca: Buffer | undefined } | { exit: number } {
  try {
    return { ca: readCaFile(file) };
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    printUsageError(err, helpCommand, stderr);
    return { exit: EXIT_USAGE };
  }
}

/** What a command's definition is given: the environment for defaults, where help goes, and where its parsed arguments go. */
export interface CommandSetup<A> {
  readonly env: Env;
  readonly sink: HelpSink;
  accept(args: A): void;
}
