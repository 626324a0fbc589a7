import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { argsOf } from './kvctl.fixtures';
import { parseKvctlArgs } from './main';

/**
 * The completion scripts, run in the real shells: sourced, then their function driven as the shell's
 * completion would (bash: COMP_WORDS/COMP_CWORD, COMPREPLY; zsh: words/CURRENT, compadd).
 */

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvctl-completion-'));
  for (const shell of ['bash', 'zsh'] as const) {
    fs.writeFileSync(path.join(dir, shell), argsOf('completion', ['completion', shell]).script);
  }
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** bash's candidates for the command line `words`, the last one being completed. */
function bashComplete(...words: string[]): string[] {
  const script = `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _kvctl; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const out = execFileSync(
    'bash',
    ['--norc', '--noprofile', '-c', script, 'bash', path.join(dir, 'bash'), ...words],
    {
      encoding: 'utf8',
    },
  );
  return out.split('\n').filter(Boolean);
}

/** zsh's candidates, with compadd replaced by a print of what it is given that matches, as compadd matches. */
function zshComplete(...words: string[]): string[] {
  const script = [
    'autoload -Uz compinit && compinit -u -d "$2"',
    'source "$1"',
    'shift 2',
    // compadd keeps the candidates the word under the cursor starts (cur, _kvctl's local).
    'compadd() { shift; local w; for w in "$@"; do [[ $w == ${cur}* ]] && print -r -- $w; done; return 0; }',
    'words=("$@"); CURRENT=$#',
    '_kvctl',
  ].join('\n');
  const out = execFileSync(
    'zsh',
    ['-fc', script, 'zsh', path.join(dir, 'zsh'), path.join(dir, 'zcompdump'), ...words],
    {
      encoding: 'utf8',
    },
  );
  return out.split('\n').filter(Boolean);
}

const COMMANDS = [
  'put',
  'get',
  'delete',
  'batch',
  'ls',
  'cluster',
  'status',
  'verify',
  'repair',
  'scale',
  'auth',
  'completion',
  'help',
];

describe('kvctl completion', () => {
  it('is a usage error for a shell it does not write', () => {
    expect(() => parseKvctlArgs(['completion', 'fish'], {})).toThrow(/Allowed choices are bash, zsh/);
    expect(() => parseKvctlArgs(['completion'], {})).toThrow(/missing required argument 'shell'/);
  });

  describe.each([
    ['bash', bashComplete],
    ['zsh', zshComplete],
  ] as const)('%s', (_shell, complete) => {
    it('completes the commands, and a prefix to the ones it starts', () => {
      expect(complete('kvctl', '')).toEqual(COMMANDS);
      expect(complete('kvctl', 's').sort()).toEqual(['scale', 'status']);
    });

    it("completes a command's own options and the global ones, wherever the globals stand", () => {
      const statusOptions = complete('kvctl', '--url', 'http://127.0.0.1:1', 'status', '--');
      expect(statusOptions).toEqual(
        expect.arrayContaining(['--watch', '--interval', '--url', '--output', '--help']),
      );
      expect(statusOptions).not.toContain('--nodes');
      expect(complete('kvctl', 'scale', '--n')).toEqual(['--nodes']);
      expect(complete('kvctl', 'verify', '--du')).toEqual(['--duration']);
    });

    it('completes subcommands, their options and option values from fixed sets', () => {
      expect(complete('kvctl', 'auth', '')).toEqual(['create-key']);
      expect(complete('kvctl', 'auth', 'create-key', '--r')).toEqual(['--role']);
      expect(complete('kvctl', 'auth', 'create-key', '--role', '')).toEqual(['read', 'readwrite', 'admin']);
      expect(complete('kvctl', '-o', '')).toEqual(['table', 'json']);
      expect(complete('kvctl', 'get', 'k', '--consistency', '')).toEqual(['one', 'quorum', 'all']);
      expect(complete('kvctl', 'completion', '')).toEqual(['bash', 'zsh']);
      expect(complete('kvctl', 'help', 're')).toEqual(['repair']);
    });

    it('does not take an option value for a command', () => {
      // `status` here is --token's value, not the command: the commands still complete.
      expect(complete('kvctl', '--token', 'status', '')).toEqual(COMMANDS);
    });
  });

  it('loads in zsh and registers _kvctl for kvctl', () => {
    execFileSync('zsh', ['-n', path.join(dir, 'zsh')]);
    const out = execFileSync(
      'zsh',
      [
        '-fc',
        'autoload -Uz compinit && compinit -u -d "$2"; source "$1"; whence -w _kvctl; print -r -- $_comps[kvctl]',
        'zsh',
        path.join(dir, 'zsh'),
        path.join(dir, 'zcompdump'),
      ],
      { encoding: 'utf8' },
    );
    expect(out).toBe('_kvctl: function\n_kvctl\n');
  });
});
