import fs from 'node:fs';
import path from 'node:path';
import { generatedFiles } from './generate';

/**
 * `npm run generate`: writes the CRD, the chart's copy of it, the chart's
 * values.schema.json and crds/kvcluster-types.ts. With --check it writes nothing
 * and exits 1 when a committed file differs (for CI without jest).
 */
function main(): void {
  const check = process.argv.includes('--check');
  // Runs as dist/crds/generate-main.js: the repository root is two folders up.
  const root = path.resolve(__dirname, '..', '..');
  let stale = 0;
  for (const file of generatedFiles(root)) {
    const target = path.join(root, file.path);
    const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : undefined;
    if (current === file.content) continue;
    if (check) {
      stale++;
      process.stderr.write(`${file.path} is out of date: run npm run generate\n`);
      continue;
    }
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, file.content);
    process.stdout.write(`wrote ${file.path}\n`);
  }
  if (stale > 0) process.exitCode = 1;
}

main();
