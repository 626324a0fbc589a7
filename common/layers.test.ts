import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * The import rules of docs/design.md, "Components and folders", are lint
 * rules; this checks that they bite, so a cross-component import cannot land
 * because a pattern stopped matching.
 */
const root = path.resolve(__dirname, '..');

/** ESLint's config is an ES module, which jest's runtime cannot load: lint in one child process. */
function restrictedImports(sources: ReadonlyArray<{ file: string; source: string }>): string[][] {
  const script = `
    import { ESLint } from 'eslint';
    const eslint = new ESLint({ cwd: process.cwd() });
    const out = [];
    for (const { file, source } of JSON.parse(process.argv[1])) {
      const [result] = await eslint.lintText(source, { filePath: file });
      out.push(result.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message));
    }
    console.log(JSON.stringify(out));
  `;
  const stdout = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', script, JSON.stringify(sources)],
    {
      cwd: root,
      encoding: 'utf8',
    },
  );
  return JSON.parse(stdout) as string[][];
}

const cases: ReadonlyArray<readonly [file: string, from: string, allowed: boolean]> = [
  ['crds/x.ts', '../gateway/coordinator', false],
  ['crds/x.ts', '../common/errors', true],
  ['node/x.ts', '../gateway/app', false],
  ['node/x.ts', '../crds/kvcluster-spec', false],
  ['gateway/x.ts', '../node/storage', false],
  ['gateway/x.ts', '../crds/kvcluster-spec', true],
  ['operator/x.ts', '../client/client', false],
  ['operator/x.ts', '../crds/kvcluster-spec', true],
  ['client/x.ts', '../gateway/app', false],
  ['client/x.ts', '../local/cluster', false],
  ['client/sub/x.ts', '../../operator/main', false],
  ['client/x.ts', '../kvctl/main', false],
  ['client/x.ts', '../verify/workload', false],
  ['verify/x.ts', '../gateway/app', false],
  ['verify/x.ts', '../kvctl/main', false],
  ['verify/x.ts', '../client', true],
  ['kvctl/x.ts', '../verify/workload', true],
  ['kvctl/commands/x.ts', '../../verify/history-checker', true],
  ['kvctl/x.ts', '../client', true],
  ['kvctl/x.ts', '../node/storage', false],
  ['kvctl/x.ts', '../local/cluster', false],
  ['common/x.ts', '../node/storage', false],
  ['common/x.ts', './errors', true],
  ['gateway/x.test.ts', '../e2e/redis-server', true],
  ['gateway/x.test.ts', '../operator/main', false],
  ['local/x.ts', '../gateway/app', true],
  ['e2e/x.ts', '../node/storage', true],
];

const results = restrictedImports(
  cases.map(([file, from]) => ({
    file: path.join(root, file),
    source: `import { thing } from '${from}';\nexport const x = thing;\n`,
  })),
);

test.each(cases.map((c, i) => [...c, i] as const))(
  '%s importing %s: allowed %s',
  (_file, _from, allowed, i) => {
    const messages = results[i]!;
    expect(messages).toHaveLength(allowed ? 0 : 1);
    if (!allowed) expect(messages[0]).toContain('docs/design.md');
  },
);
