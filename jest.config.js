/** Unit tests sit next to the code; e2e suites start real processes from dist/ (npm test builds first). */
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.json' }];
// ES-module-only packages (@kubernetes/client-node 1.x and what it pulls in): Node 20 loads them,
// jest's CommonJS runtime cannot, so jest alone compiles them to CommonJS (jest.esm-transform.js).
const esmOnly = '@kubernetes/client-node|openid-client|oauth4webapi|jose';
const transform = {
  '^.+\\.ts$': tsJest,
  [`/node_modules/(${esmOnly})/.+\\.js$`]: '<rootDir>/jest.esm-transform.js',
};
const transformIgnorePatterns = [`/node_modules/(?!(${esmOnly})/)`];
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      transform,
      transformIgnorePatterns,
      testMatch: [
        '<rootDir>/{common,node,gateway,operator,crds,client,kvctl,verify,local,bench}/**/*.test.ts',
      ],
    },
    {
      displayName: 'e2e',
      testEnvironment: 'node',
      transform,
      transformIgnorePatterns,
      testMatch: ['<rootDir>/e2e/**/*.test.ts'],
    },
  ],
};
