import type { UsageError } from '../common/cli-options';
import { KvClientError } from '../client';

/** What every kvctl command shares at run time: its streams, its exit statuses, how a failure is printed. */

export type Env = Readonly<Record<string, string | undefined>>;

/** Where kvctl reads and writes; process streams when run as a command, buffers in tests. */
export interface KvctlIo {
  stdout: { write(chunk: string | Uint8Array): unknown; isTTY?: boolean };
  stderr: { write(chunk: string): unknown };
  /** what `put <key> -` stores; defaults to process.stdin */
  stdin?: AsyncIterable<string | Uint8Array>;
  /** Defaults to process.env. */
  env?: Env;
}

/**
 * Whether kvctl may write ANSI escapes (colours, in-place redraws) to stdout: only to a terminal, and
 * never when NO_COLOR is set to anything (no-color.org) or TERM is dumb. The one place that decides.
 */
export function terminalEscapes(io: KvctlIo): boolean {
  const env = io.env ?? process.env;
  return io.stdout.isTTY === true && !env.NO_COLOR && env.TERM !== 'dumb';
}

/** Colours for words that say how things stand; plain text where terminalEscapes says no. */
export interface Palette {
  good(text: string): string;
  bad(text: string): string;
}

const PLAIN: Palette = { good: (t) => t, bad: (t) => t };
const ANSI: Palette = { good: (t) => `\x1b[32m${t}\x1b[39m`, bad: (t) => `\x1b[1;31m${t}\x1b[22;39m` };

export function palette(io: KvctlIo): Palette {
  return terminalEscapes(io) ? ANSI : PLAIN;
}

export const EXIT_OK = 0;
/** get: the key is absent; status: the cluster is degraded; verify: violations found */
export const EXIT_NOT_FOUND = 1;
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 3;

/** Prints a usage error the way every command does: the reason, then where the help is. */
export function printUsageError(err: UsageError, helpCommand: string, stderr: KvctlIo['stderr']): number {
  stderr.write(`kvctl: usage: ${err.message}\nRun '${helpCommand}' for usage.\n`);
  return EXIT_USAGE;
}

/**
 * Prints why a command's request failed and returns its exit status: 2 when the
 * client refused the request before sending it (a bad key or URL: the command line
 * is at fault), 3 for everything else (unreachable, the server's errors).
 */
export function reportFailure(err: unknown, stderr: KvctlIo['stderr']): number {
  if (err instanceof KvClientError) {
    stderr.write(`kvctl: ${err.code}: ${err.message}\n`);
    return err.status === undefined && err.code === 'bad_request' ? EXIT_USAGE : EXIT_FAILURE;
  }
  stderr.write(`kvctl: internal: ${err instanceof Error ? err.message : String(err)}\n`);
  return EXIT_FAILURE;
}

/** Time and cancellation for the commands that poll (status --watch, repair --watch, scale --wait); tests pass their own. */
export interface RunOptions {
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  /** stops status --watch (the command itself runs until Ctrl-C) */
  signal?: AbortSignal;
}

export function sleepOf(opts: RunOptions): (ms: number) => Promise<void> {
  return opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
}
