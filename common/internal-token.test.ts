import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ensureInternalTokenFile,
  generateInternalToken,
  INTERNAL_TOKEN_ENV,
  InternalTokenError,
  InternalTokenVerifier,
  loadInternalToken,
  loadInternalTokens,
  MAX_INTERNAL_TOKENS,
  MIN_INTERNAL_TOKEN_LENGTH,
  parseInternalTokens,
  readInternalTokenFile,
} from './internal-token';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-token-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const TOKEN = 'a'.repeat(MIN_INTERNAL_TOKEN_LENGTH);

describe('loading the internal token', () => {
  it('reads a Secret-style file, trimming the trailing newline', () => {
    const file = path.join(dir, 'token');
    fs.writeFileSync(file, `  ${TOKEN}\n`);
    expect(readInternalTokenFile(file)).toBe(TOKEN);
    expect(loadInternalToken({ file, env: {} })).toBe(TOKEN);
  });

  it('refuses a token shorter than the minimum, naming its source but not its content', () => {
    const file = path.join(dir, 'token');
    const short = 's3cret-but-short';
    fs.writeFileSync(file, short);
    const err = (() => {
      try {
        readInternalTokenFile(file);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InternalTokenError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toContain(`at least ${MIN_INTERNAL_TOKEN_LENGTH}`);
    expect((err as Error).message).not.toContain(short);
    // Whitespace does not count toward the length.
    fs.writeFileSync(file, ` ${'b'.repeat(MIN_INTERNAL_TOKEN_LENGTH - 1)} \n`);
    expect(() => readInternalTokenFile(file)).toThrow(InternalTokenError);
  });

  it('turns a missing file into a startup error', () => {
    expect(() => loadInternalToken({ file: path.join(dir, 'absent') })).toThrow(/cannot read/);
  });

  it('falls back to the environment variable, and to none', () => {
    expect(loadInternalToken({ env: { [INTERNAL_TOKEN_ENV]: `${TOKEN}\n` } })).toBe(TOKEN);
    expect(loadInternalToken({ env: {} })).toBeUndefined();
    expect(loadInternalToken({ env: { [INTERNAL_TOKEN_ENV]: '' } })).toBeUndefined();
    expect(() => loadInternalToken({ env: { [INTERNAL_TOKEN_ENV]: 'short' } })).toThrow(
      new RegExp(`\\$${INTERNAL_TOKEN_ENV}`),
    );
  });

  it('prefers the file to the environment', () => {
    const file = path.join(dir, 'token');
    fs.writeFileSync(file, TOKEN);
    expect(loadInternalToken({ file, env: { [INTERNAL_TOKEN_ENV]: 'z'.repeat(40) } })).toBe(TOKEN);
  });
});

describe('the launcher token file', () => {
  it('is created once, 0600, 64 hex characters, and kept on later runs', () => {
    const file = path.join(dir, 'internal-token');
    const first = ensureInternalTokenFile(file);
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(ensureInternalTokenFile(file)).toBe(first);
    expect(generateInternalToken()).not.toBe(first);
  });
});

describe('several tokens, for a rotation', () => {
  const NEXT = 'b'.repeat(40);
  it('presents the first line and accepts every line', () => {
    const file = path.join(dir, 'token');
    fs.writeFileSync(file, `${TOKEN}\n\n  ${NEXT}\n`);
    expect(loadInternalTokens({ file, env: {} })).toEqual({ present: TOKEN, accepted: [TOKEN, NEXT] });
    expect(loadInternalToken({ file, env: {} })).toBe(TOKEN);
    expect(parseInternalTokens(`${NEXT}\r\n${TOKEN}`, 'env')).toEqual({
      present: NEXT,
      accepted: [NEXT, TOKEN],
    });
  });
  it('refuses a short line by its number, an empty value and too many tokens', () => {
    expect(() => parseInternalTokens(`${TOKEN}\nshort`, 'f')).toThrow(/on line 2 from f has 5 characters/);
    expect(() => parseInternalTokens(' \n\n', 'f')).toThrow(/is empty/);
    const many = Array.from({ length: MAX_INTERNAL_TOKENS + 1 }, () => TOKEN).join('\n');
    expect(() => parseInternalTokens(many, 'f')).toThrow(InternalTokenError);
  });
  it('a verifier of several tokens accepts each and nothing else', () => {
    const v = new InternalTokenVerifier([TOKEN, NEXT]);
    expect(v.matches(TOKEN)).toBe(true);
    expect(v.matches(NEXT)).toBe(true);
    expect(v.matches('c'.repeat(40))).toBe(false);
  });
});

describe('InternalTokenVerifier', () => {
  it('accepts exactly the configured token', () => {
    const v = new InternalTokenVerifier(TOKEN);
    expect(v.matches(TOKEN)).toBe(true);
    expect(v.matches(`${TOKEN}x`)).toBe(false);
    expect(v.matches(TOKEN.slice(1))).toBe(false);
    expect(v.matches('')).toBe(false);
    expect(v.matches(undefined)).toBe(false);
    expect(v.matches(42)).toBe(false);
    expect(v.matches(Buffer.from(TOKEN))).toBe(false);
  });
});
