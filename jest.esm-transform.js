/**
 * Jest 30 cannot require() an ES module before Node 24.9, and @kubernetes/client-node 1.x and a few of
 * its dependencies ship only ESM (plain Node >= 20.19 requires them fine, so dist/ needs nothing). This
 * transformer compiles those packages to CommonJS with TypeScript's own transpiler, for jest only;
 * jest.config.js routes the ESM-only packages here and leaves the rest of node_modules untouched.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const ts = require('typescript');

const selfHash = crypto.createHash('sha1').update(fs.readFileSync(__filename)).digest('hex');

module.exports = {
  process(sourceText, sourcePath) {
    const out = ts.transpileModule(sourceText, {
      compilerOptions: {
        module: ts.ModuleKind.CommonJS,
        target: ts.ScriptTarget.ES2022,
        esModuleInterop: true,
        allowJs: true,
      },
      fileName: sourcePath,
    });
    return { code: out.outputText };
  },
  // The default key ignores this file and the TypeScript version: a change to either must recompile.
  getCacheKey(sourceText, sourcePath) {
    return crypto
      .createHash('sha1')
      .update(selfHash)
      .update(ts.version)
      .update(sourcePath)
      .update(sourceText)
      .digest('hex');
  },
};
