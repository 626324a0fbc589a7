import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Code comments cite the design of record as `docs/design.md, "Section"`; every citation must
 * name a heading that exists, so a renamed section cannot leave comments pointing nowhere.
 */
const root = path.resolve(__dirname, '..');
const headings = new Set(
  fs
    .readFileSync(path.join(root, 'docs/design.md'), 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('## '))
    .map((line) => line.slice(3).trim()),
);

/** Every tracked source file that mentions docs/design.md, with comment line breaks folded into spaces. */
function citingFiles(): Array<{ file: string; text: string }> {
  const out = execFileSync('git', ['grep', '-l', 'docs/design.md', '--', '*.ts', '*.mjs', '*.sh'], {
    cwd: root,
    encoding: 'utf8',
  });
  return out
    .split('\n')
    .filter((file) => file !== '' && file !== 'common/design-citations.test.ts')
    .map((file) => ({
      file,
      text: fs.readFileSync(path.join(root, file), 'utf8').replace(/\n\s*(\*|\/\/|#)\s*/g, ' '),
    }));
}

test('the design document has the sections the code cites', () => {
  expect(headings.size).toBeGreaterThan(5);
});

test('every citation of docs/design.md names an existing section', () => {
  const problems: string[] = [];
  const files = citingFiles();
  expect(files.length).toBeGreaterThan(10);
  for (const { file, text } of files) {
    for (const m of text.matchAll(/docs\/design\.md(, "([^"]+)")?/g)) {
      const section = m[2];
      // A string that names the file, as a lint message does, is not a citation.
      if (section === undefined && /^['`]/.test(text.slice(m.index + m[0].length))) continue;
      if (section === undefined)
        problems.push(`${file}: ${text.slice(m.index, m.index + 60)}... (no section named)`);
      else if (!headings.has(section)) problems.push(`${file}: no heading "${section}"`);
    }
  }
  expect(problems).toEqual([]);
});
