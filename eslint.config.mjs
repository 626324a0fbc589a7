import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'packages/*/dist/**',
      '.test-tmp/**',
      'node_modules/**',
      'coverage/**',
      '.kvstore-data/**',
      '*.js',
      '*.mjs',
      // the original design's client, copied unchanged (e2e/original-design-client.test.ts)
      'e2e/original-design-client.js',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-empty': ['error', { allowEmptyCatch: false }],
    },
  },
  ...layerRules(),
);

/**
 * The folder layout is the architecture (docs/design.md, "Components and
 * folders"): each component imports only the folders listed for it, so a
 * cross-component import fails lint instead of growing a knot. `local/`,
 * `bench/` and `e2e/` assemble the components and may import any of them.
 * A component's tests may also use e2e/'s harnesses, which start real parts
 * (Redis, node processes).
 */
function layerRules() {
  const folders = [
    'common',
    'crds',
    'node',
    'gateway',
    'operator',
    'client',
    'kvctl',
    'verify',
    'local',
    'bench',
    'e2e',
  ];
  const allowed = {
    common: [],
    crds: ['common'],
    node: ['common'],
    gateway: ['common', 'crds'],
    operator: ['common', 'crds'],
    client: ['common'],
    verify: ['common', 'client'],
    kvctl: ['common', 'crds', 'client', 'verify'],
  };
  return Object.entries(allowed).flatMap(([folder, may]) => [
    rule([`${folder}/**/*.ts`], folder, may),
    rule([`${folder}/**/*.test.ts`], folder, [...may, 'e2e']),
  ]);

  function rule(files, folder, may) {
    const banned = folders.filter((f) => f !== folder && !may.includes(f));
    return {
      files,
      rules: {
        'no-restricted-imports': [
          'error',
          {
            patterns: [
              {
                regex: `^(\\.\\./)+(${banned.join('|')})(/|$)`,
                message: `${folder}/ may import only ${may.length ? may.join('/, ') + '/' : 'itself'} (docs/design.md, "Components and folders").`,
              },
            ],
          },
        ],
      },
    };
  }
}
