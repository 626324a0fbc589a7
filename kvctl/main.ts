#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { UsageError } from '../common/cli-options';
import { KVSTORE_VERSION } from '../common/version';
import { authCommand, runAuth, type CreateKeyArgs } from './commands/auth';
import { clusterCommand, runCluster, type ClusterArgs } from './commands/cluster';
import { completionCommand, runCompletion, type CompletionArgs } from './commands/completion';
import { batchCommand, runBatch, type BatchArgs } from './commands/batch';
import { lsCommand, runLs, type LsArgs } from './commands/ls';
import { deleteCommand, runDelete } from './commands/delete';
import { getCommand, runGet, type KeyArgs } from './commands/get';
import { putCommand, runPut, type PutArgs } from './commands/put';
import { repairCommand, runRepair, type RepairArgs } from './commands/repair';
import { runScale, scaleCommand, type ScaleArgs } from './commands/scale';
import { runStatus, statusCommand, type StatusArgs } from './commands/status';
import { runVerify, verifyCommand, type VerifyArgs } from './commands/verify';
import { EXIT_FAILURE, EXIT_OK, printUsageError, type Env, type KvctlIo, type RunOptions } from './io';
import { addGlobalOptions, kvctlCommand, type CommandSetup, type HelpSink } from './options';
import { USAGE } from './usage';

/**
 * kvctl, the command line of the kvstore client: the commands are registered on
 * commander here, each defined in commands/. Parsing is pure (parseKvctlArgs: the
 * command line to one Invocation, or a UsageError); runKvctl runs it.
 */

/** Each command's checked arguments. */
export interface CommandArgs {
  put: PutArgs;
  get: KeyArgs;
  delete: KeyArgs;
  batch: BatchArgs;
  ls: LsArgs;
  cluster: ClusterArgs;
  status: StatusArgs;
  verify: VerifyArgs;
  repair: RepairArgs;
  scale: ScaleArgs;
  auth: CreateKeyArgs;
  completion: CompletionArgs;
}

/** A command line, parsed: which command, with its checked arguments, or the help (or version) to print. */
export type Invocation =
  | { readonly command: 'help'; readonly text: string }
  | { [C in keyof CommandArgs]: { readonly command: C; readonly args: CommandArgs[C] } }[keyof CommandArgs];

/** Where a usage error of `command` points for help: every command has its own. */
function helpCommandFor(command: string | undefined): string {
  return command !== undefined ? `kvctl ${command} --help` : 'kvctl --help';
}

function buildProgram(env: Env, sink: HelpSink, accept: (inv: Invocation) => void): Command {
  const setup = <A>(wrap: (args: A) => Invocation): CommandSetup<A> => ({
    env,
    sink,
    accept: (args) => accept(wrap(args)),
  });
  const program = addGlobalOptions(kvctlCommand('kvctl', USAGE, sink))
    .version(KVSTORE_VERSION, '-V, --version', "print kvctl's version")
    .argument('[command]')
    .allowExcessArguments()
    // commander adds `help [command]` by itself only to a program without an action.
    .helpCommand(true)
    .action((name: string | undefined) => {
      // Reached only when no registered command was named.
      throw new UsageError(
        name === undefined ? 'missing command' : `unknown command ${JSON.stringify(name)}`,
      );
    });
  program.addCommand(putCommand(setup((args) => ({ command: 'put', args }))));
  program.addCommand(getCommand(setup((args) => ({ command: 'get', args }))));
  program.addCommand(deleteCommand(setup((args) => ({ command: 'delete', args }))));
  program.addCommand(batchCommand(setup((args) => ({ command: 'batch', args }))));
  program.addCommand(lsCommand(setup((args) => ({ command: 'ls', args }))));
  program.addCommand(clusterCommand(setup((args) => ({ command: 'cluster', args }))));
  program.addCommand(statusCommand(setup((args) => ({ command: 'status', args }))));
  program.addCommand(verifyCommand(setup((args) => ({ command: 'verify', args }))));
  program.addCommand(repairCommand(setup((args) => ({ command: 'repair', args }))));
  program.addCommand(scaleCommand(setup((args) => ({ command: 'scale', args }))));
  program.addCommand(authCommand(setup((args) => ({ command: 'auth', args }))));
  program.addCommand(completionCommand(setup((args) => ({ command: 'completion', args }))));
  return program;
}

/** commander's message in kvctl's words: without its `error: ` prefix, with kvctl's hints. */
function commanderMessage(err: CommanderError, command: string | undefined): string {
  const message = err.message.replace(/^error: /, '');
  if (err.code === 'commander.unknownOption') {
    return `${message} (a key or value that starts with '-' goes after '--')`;
  }
  if (err.code === 'commander.excessArguments' && command === 'put') {
    return `${message} (quote a value that has spaces)`;
  }
  return message;
}

const HELP_CODES = new Set(['commander.help', 'commander.helpDisplayed', 'commander.version']);

/**
 * Parses the command line; throws UsageError with a one-line message, its `context.help`
 * naming the help to point at. Pure: no I/O (help is returned as an Invocation).
 */
export function parseKvctlArgs(argv: readonly string[], env: Env): Invocation {
  let parsed: Invocation | undefined;
  let help = '';
  let command: string | undefined;
  const program = buildProgram(env, { help: (text) => (help += text) }, (inv) => (parsed = inv));
  program.hook('preSubcommand', (_program, sub) => {
    command = sub.name();
  });
  try {
    program.parse([...argv], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help, -h, `help [command]` and --version end parsing, the text written to the sink. By code, not
      // exit status: commander's `help` takes its status from process.exitCode, which an earlier run may have set.
      if (HELP_CODES.has(err.code)) return { command: 'help', text: help };
      throw new UsageError(commanderMessage(err, command), { help: helpCommandFor(command) });
    }
    if (err instanceof UsageError) {
      throw new UsageError(err.message, { ...err.context, help: helpCommandFor(command) }, { cause: err });
    }
    throw err;
  }
  // The program's own action throws when no command matched, so one always has.
  if (parsed === undefined) throw new Error(`kvctl: no command parsed from ${JSON.stringify(argv)}`);
  return parsed;
}

function run(inv: Invocation, io: KvctlIo, opts: RunOptions): Promise<number> | number {
  switch (inv.command) {
    case 'help':
      io.stdout.write(inv.text);
      return EXIT_OK;
    case 'put':
      return runPut(inv.args, io);
    case 'get':
      return runGet(inv.args, io);
    case 'delete':
      return runDelete(inv.args, io);
    case 'batch':
      return runBatch(inv.args, io);
    case 'ls':
      return runLs(inv.args, io);
    case 'cluster':
      return runCluster(inv.args, io);
    case 'status':
      return runStatus(inv.args, io, opts);
    case 'verify':
      return runVerify(inv.args, io);
    case 'repair':
      return runRepair(inv.args, io, opts);
    case 'scale':
      return runScale(inv.args, io, opts);
    case 'auth':
      return runAuth(inv.args, io);
    case 'completion':
      return runCompletion(inv.args, io);
  }
}

/**
 * Runs one kvctl invocation and returns its exit status; never throws, never exits the process.
 * `opts` replaces the clock and sleeps of the commands that poll (tests).
 */
export async function runKvctl(argv: readonly string[], io: KvctlIo, opts: RunOptions = {}): Promise<number> {
  try {
    return await run(parseKvctlArgs(argv, io.env ?? process.env), io, opts);
  } catch (err) {
    if (err instanceof UsageError) {
      const help = typeof err.context.help === 'string' ? err.context.help : 'kvctl --help';
      return printUsageError(err, help, io.stderr);
    }
    io.stderr.write(`kvctl: internal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return EXIT_FAILURE;
  }
}

if (require.main === module) {
  // `kvctl get k | head -c 10` closes the pipe early; that is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT_OK);
    throw err;
  });
  void runKvctl(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
  }).then((code) => {
    // exitCode, not exit(): lets a large value finish flushing to a pipe.
    process.exitCode = code;
  });
}
