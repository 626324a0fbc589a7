import { UsageError } from './cli-options';
import { envName, parseServerArgs, unknownEnvWarning } from './server-args';

const options = {
  port: { type: 'string' },
  host: { type: 'string', default: '127.0.0.1' },
  'rpc-timeout-ms': { type: 'string' },
  'no-auth': { type: 'boolean' },
  'leader-elect': { type: 'string', default: 'true' },
  'node-arg': { type: 'string', multiple: true },
  id: { type: 'string' },
} as const;

function parse(argv: string[], env: Record<string, string | undefined> = {}) {
  return parseServerArgs({ options, argv, env, alsoReads: ['KVSTORE_INTERNAL_TOKEN'] });
}

function usageError(f: () => unknown): UsageError {
  try {
    f();
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  throw new Error('no usage error');
}

describe('parseServerArgs', () => {
  it('names the variable of a flag: capitals, _ for -', () => {
    expect(envName('rpc-timeout-ms')).toBe('KVSTORE_RPC_TIMEOUT_MS');
    expect(envName('port')).toBe('KVSTORE_PORT');
  });

  it('reads a flag from its variable when the command line does not give it', () => {
    const a = parse([], { KVSTORE_RPC_TIMEOUT_MS: '5000', KVSTORE_HOST: '0.0.0.0' });
    expect(a.int('rpc-timeout-ms', 2000, 10, 600_000)).toBe(5000);
    expect(a.values.host).toBe('0.0.0.0');
    expect(a.where('rpc-timeout-ms')).toBe('KVSTORE_RPC_TIMEOUT_MS');
  });

  it('lets a flag on the command line win over its variable, in either spelling', () => {
    const env = { KVSTORE_RPC_TIMEOUT_MS: '5000', KVSTORE_HOST: '0.0.0.0' };
    const a = parse(['--rpc-timeout-ms=100', '--host', '::1'], env);
    expect(a.int('rpc-timeout-ms', 2000, 10, 600_000)).toBe(100);
    expect(a.values.host).toBe('::1');
    expect(a.where('rpc-timeout-ms')).toBe('--rpc-timeout-ms');
  });

  it('falls back to the default, then the fallback, when neither is set', () => {
    const a = parse([]);
    expect(a.values.host).toBe('127.0.0.1');
    expect(a.values.port).toBeUndefined();
    expect(a.int('port', 3000, 0, 65535)).toBe(3000);
  });

  it('takes an empty variable as unset', () => {
    const a = parse([], { KVSTORE_PORT: '', KVSTORE_HOST: '' });
    expect(a.int('port', 3000, 0, 65535)).toBe(3000);
    expect(a.values.host).toBe('127.0.0.1');
  });

  it('names where a bad value came from: the flag or the variable', () => {
    expect(usageError(() => parse(['--port=x']).int('port', 3000, 0, 65535)).message).toBe(
      '--port must be a whole number, got "x"',
    );
    expect(usageError(() => parse([], { KVSTORE_PORT: 'x' }).int('port', 3000, 0, 65535)).message).toBe(
      'KVSTORE_PORT must be a whole number, got "x"',
    );
    expect(usageError(() => parse([], { KVSTORE_PORT: '70000' }).int('port', 3000, 0, 65535)).message).toBe(
      'KVSTORE_PORT must be between 0 and 65535, got 70000',
    );
  });

  it("points at service links when the kubelet's KVSTORE_PORT=tcp://... is what was read", () => {
    const err = usageError(() =>
      parse([], { KVSTORE_PORT: 'tcp://10.0.0.1:80' }).int('port', 3000, 0, 65535),
    );
    expect(err.message).toMatch(/^KVSTORE_PORT must be a whole number, got "tcp:\/\/10.0.0.1:80"/);
    expect(err.message).toMatch(/enableServiceLinks: false/);
  });

  it('reads a boolean flag from true, false, 1 or 0 only, naming the variable otherwise', () => {
    for (const [raw, want] of [
      ['true', true],
      ['1', true],
      ['false', false],
      ['0', false],
    ] as const) {
      expect(parse([], { KVSTORE_NO_AUTH: raw }).values['no-auth']).toBe(want);
    }
    for (const raw of ['yes', 'TRUE', 'on', ' 1']) {
      expect(usageError(() => parse([], { KVSTORE_NO_AUTH: raw })).message).toBe(
        `KVSTORE_NO_AUTH takes true, false, 1 or 0, got ${JSON.stringify(raw)}`,
      );
    }
    expect(parse(['--no-auth'], { KVSTORE_NO_AUTH: 'false' }).values['no-auth']).toBe(true);
    expect(parse([]).values['no-auth']).toBeUndefined();
  });

  it('reads a string flag that takes a boolean with the same words, naming its source', () => {
    expect(parse([]).boolean('leader-elect')).toBe(true);
    expect(parse([], { KVSTORE_LEADER_ELECT: '0' }).boolean('leader-elect')).toBe(false);
    expect(parse(['--leader-elect=false'], { KVSTORE_LEADER_ELECT: 'true' }).boolean('leader-elect')).toBe(
      false,
    );
    expect(usageError(() => parse(['--leader-elect=no']).boolean('leader-elect')).message).toBe(
      '--leader-elect takes true, false, 1 or 0, got "no"',
    );
    expect(usageError(() => parse([], { KVSTORE_LEADER_ELECT: 'no' }).boolean('leader-elect')).message).toBe(
      'KVSTORE_LEADER_ELECT takes true, false, 1 or 0, got "no"',
    );
  });

  it('splits a repeatable flag from its variable on spaces; the command line replaces it whole', () => {
    expect(parse([], { KVSTORE_NODE_ARG: '--a=1  --b=2 ' }).values['node-arg']).toEqual(['--a=1', '--b=2']);
    expect(
      parse(['--node-arg=--c=3', '--node-arg=--d=4'], { KVSTORE_NODE_ARG: '--a=1' }).values['node-arg'],
    ).toEqual(['--c=3', '--d=4']);
  });

  it('says which flag is required and by which variable it may come', () => {
    expect(usageError(() => parse([]).required('id')).message).toBe('--id (or KVSTORE_ID) is required');
    expect(parse([], { KVSTORE_ID: 'n1' }).required('id')).toBe('n1');
  });

  it('lists KVSTORE_ variables that are no setting, for a warning, and ignores the rest', () => {
    const a = parse([], {
      KVSTORE_RPC_TIMEOUT: '5',
      KVSTORE_PORT: '3001',
      KVSTORE_INTERNAL_TOKEN: 't',
      KVSTORE_URL: 'http://x',
      KVSTORE_SERVICE_HOST: '10.0.0.1',
      PATH: '/bin',
    });
    expect(a.unknownEnv).toEqual(['KVSTORE_RPC_TIMEOUT', 'KVSTORE_SERVICE_HOST']);
    expect(unknownEnvWarning('kvstore-gateway', a.unknownEnv)).toBe(
      'ignoring KVSTORE_RPC_TIMEOUT, KVSTORE_SERVICE_HOST: not a setting of kvstore-gateway (misspelt? --help lists them)',
    );
    expect(unknownEnvWarning('kvstore-gateway', [])).toBeUndefined();
  });

  it('has --help and -h, which no variable turns on', () => {
    expect(parse(['--help']).help).toBe(true);
    expect(parse(['-h']).help).toBe(true);
    expect(parse([], { KVSTORE_HELP: 'true' }).help).toBe(false);
    expect(parse([], { KVSTORE_HELP: 'true' }).unknownEnv).toEqual(['KVSTORE_HELP']);
  });

  it('makes an unknown flag, a missing value or a stray argument a usage error', () => {
    expect(usageError(() => parse(['--rpc-timeout=5'])).message).toMatch(/--rpc-timeout/);
    expect(usageError(() => parse(['--port'])).message).toMatch(/--port/);
    expect(usageError(() => parse(['extra'])).message).toMatch(/extra/);
  });
});
