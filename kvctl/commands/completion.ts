import { Argument, type Command } from 'commander';
import { KVSTORE_VERSION } from '../../common/version';
import { completionScript, SHELLS, type Shell } from '../completion';
import { EXIT_OK, type KvctlIo } from '../io';
import { kvctlCommand, type CommandSetup } from '../options';

/** `kvctl completion bash|zsh`: prints a completion script made from kvctl's own command tree. */

export const COMPLETION_USAGE = `usage: kvctl completion bash|zsh

Prints a shell completion script for kvctl's commands, subcommands and options, generated from the
commands themselves. Load it in the current shell, or install it for every new one:

  bash:  source <(kvctl completion bash)
         kvctl completion bash > ~/.local/share/bash-completion/completions/kvctl
  zsh:   source <(kvctl completion zsh)       (after compinit)
         kvctl completion zsh > "\${fpath[1]}/_kvctl"

exit status: 0 printed, 2 usage error (a shell other than bash or zsh)`;

export interface CompletionArgs {
  readonly shell: Shell;
  readonly script: string;
}

export function completionCommand(setup: CommandSetup<CompletionArgs>): Command {
  return kvctlCommand('completion', COMPLETION_USAGE, setup.sink)
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(SHELLS))
    .action((shell: Shell, _opts: unknown, cmd: Command) => {
      // The program this command belongs to is the tree the script completes.
      const program = cmd.parent ?? cmd;
      setup.accept({ shell, script: completionScript(shell, program, KVSTORE_VERSION) });
    });
}

export function runCompletion(args: CompletionArgs, io: KvctlIo): number {
  io.stdout.write(args.script);
  return EXIT_OK;
}
