import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import pino from 'pino';
import { ApiKeyFile } from './api-key-file';
import {
  ApiKeyFileError,
  ApiKeySet,
  authenticate,
  hashToken,
  prefixAllows,
  requiredAccess,
  roleAllows,
  type Access,
  type Principal,
  type Role,
} from './api-keys';

const READ = 'kvs_read-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
const WRITE = 'kvs_write-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb';
const ADMIN = 'kvs_admin-token-ccccccccccccccccccccccccccccccccccc';

const file = (keys: unknown[]): string => JSON.stringify({ keys });
const entry = (id: string, token: string, role: Role, prefix?: string): Record<string, string> => ({
  id,
  sha256: hashToken(token),
  role,
  ...(prefix !== undefined ? { prefix } : {}),
});

const keys = ApiKeySet.parse(
  file([
    entry('reader', READ, 'read'),
    entry('team-a', WRITE, 'readwrite', 'team-a/'),
    entry('ops', ADMIN, 'admin'),
  ]),
);

function parseError(text: string): string {
  try {
    ApiKeySet.parse(text, 'keys.json');
  } catch (err) {
    expect(err).toBeInstanceOf(ApiKeyFileError);
    return (err as Error).message;
  }
  throw new Error('expected the key file to be refused');
}

describe('the API key file', () => {
  it('finds the key a token belongs to, with its role and prefix', () => {
    expect(keys.size).toBe(3);
    expect(keys.verify(READ)).toEqual({ keyId: 'reader', role: 'read', prefix: undefined });
    expect(keys.verify(WRITE)).toEqual({
      keyId: 'team-a',
      role: 'readwrite',
      prefix: Buffer.from('team-a/'),
    });
    expect(keys.verify(ADMIN)?.keyId).toBe('ops');
  });

  it('knows no other token', () => {
    for (const t of ['', 'kvs_', `${READ} `, READ.toUpperCase(), READ.slice(0, -1), 'x'.repeat(10_000)]) {
      expect(keys.verify(t)).toBeUndefined();
    }
    expect(ApiKeySet.EMPTY.verify(READ)).toBeUndefined();
  });

  it('accepts the sha256 in either case', () => {
    const upper = ApiKeySet.parse(
      file([{ ...entry('a', READ, 'read'), sha256: hashToken(READ).toUpperCase() }]),
    );
    expect(upper.verify(READ)?.keyId).toBe('a');
  });

  it('refuses a file that is not the expected JSON, naming the file', () => {
    expect(parseError('')).toMatch(/^keys.json is not valid JSON/);
    expect(parseError('[]')).toMatch(/^keys.json must be a JSON object \{ "keys"/);
    expect(parseError('{}')).toMatch(/keys/);
    expect(parseError('{"keys": {}}')).toMatch(/keys/);
    expect(parseError(JSON.stringify({ keys: [], extra: 1 }))).toMatch(/extra/);
  });

  it('refuses a bad entry, naming its index, its id and the field at fault', () => {
    const good = entry('good', READ, 'read');
    expect(parseError(file([good, { ...entry('bad-role', WRITE, 'read'), role: 'write' }]))).toMatch(
      /^keys.json: keys\[1\] \(id "bad-role"\): role/,
    );
    expect(parseError(file([{ ...good, sha256: 'abc' }]))).toMatch(
      /keys\[0\] \(id "good"\): sha256: must be 64 hex/,
    );
    expect(parseError(file([{ ...good, sha256: `${hashToken(READ).slice(0, 63)}g` }]))).toMatch(/sha256/);
    expect(parseError(file([{ ...good, id: '' }]))).toMatch(/keys\[0\].*id/);
    expect(parseError(file([{ ...good, id: 'has space' }]))).toMatch(/keys\[0\].*id/);
    expect(parseError(file([{ sha256: hashToken(READ), role: 'read' }]))).toMatch(/keys\[0\]: id:/);
    expect(parseError(file([{ ...good, prefix: '' }]))).toMatch(/prefix: must not be empty/);
    expect(parseError(file([{ ...good, token: READ }]))).toMatch(/keys\[0\] \(id "good"\).*token/);
    expect(parseError(file(['reader']))).toMatch(/keys\[0\]/);
  });

  it('refuses a duplicate id or hash, and an admin key with a prefix', () => {
    expect(parseError(file([entry('a', READ, 'read'), entry('a', WRITE, 'read')]))).toMatch(
      /keys\[1\] \(id "a"\): the id is used twice/,
    );
    expect(
      parseError(
        file([
          entry('a', READ, 'read'),
          { ...entry('b', READ, 'admin'), sha256: hashToken(READ).toUpperCase() },
        ]),
      ),
    ).toMatch(/keys\[1\] \(id "b"\): has the same sha256 as "a"/);
    expect(parseError(file([entry('root', ADMIN, 'admin', 'x/')]))).toMatch(
      /keys\[0\] \(id "root"\): an admin key is cluster-wide and may not have a prefix/,
    );
  });

  it('accepts an empty key list (every request needing a key is refused)', () => {
    expect(ApiKeySet.parse(file([])).size).toBe(0);
  });

  it('verifies any token exactly when its hash is in the file', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 80 }), { minLength: 1, maxLength: 8 }),
        fc.string({ minLength: 1, maxLength: 80 }),
        (tokens, probe) => {
          const set = ApiKeySet.parse(file(tokens.map((t, i) => entry(`k${i}`, t, 'read'))));
          tokens.forEach((t, i) => expect(set.verify(t)?.keyId).toBe(`k${i}`));
          const at = tokens.indexOf(probe);
          expect(set.verify(probe)?.keyId).toBe(at === -1 ? undefined : `k${at}`);
        },
      ),
      { seed: 8, numRuns: 300 },
    );
  });
});

describe('authenticate', () => {
  it('takes a known token from Authorization: Bearer', () => {
    expect(authenticate(keys, `Bearer ${READ}`)).toEqual({ ok: true, principal: keys.verify(READ) });
    // The scheme is case-insensitive (RFC 7235); extra spaces around the token are tolerated.
    expect(authenticate(keys, `bearer  ${WRITE} `).ok).toBe(true);
  });

  it('says missing without a header, invalid for anything else that is not a known token', () => {
    expect(authenticate(keys, undefined)).toEqual({ ok: false, reason: 'missing' });
    expect(authenticate(keys, '')).toEqual({ ok: false, reason: 'missing' });
    for (const h of [
      'Bearer',
      'Bearer ',
      READ,
      `Basic ${Buffer.from(`u:${READ}`).toString('base64')}`,
      `Bearer ${READ} extra`,
      `Bearer ${READ},Bearer ${READ}`,
      `Bearer kvs_unknown`,
      `Bearer ${READ}\u00e9`,
      ['Bearer a', 'Bearer b'],
    ]) {
      expect(authenticate(keys, h)).toEqual({ ok: false, reason: 'invalid' });
    }
  });
});

describe('what a key may do', () => {
  it('grants each role what it covers', () => {
    const table: Record<Role, Record<Exclude<Access, 'open'>, boolean>> = {
      read: { any: true, read: true, write: false, admin: false },
      readwrite: { any: true, read: true, write: true, admin: false },
      admin: { any: true, read: true, write: true, admin: true },
    };
    for (const [role, row] of Object.entries(table)) {
      for (const [access, allowed] of Object.entries(row)) {
        expect([role, access, roleAllows(role as Role, access as Access)]).toEqual([role, access, allowed]);
      }
    }
  });

  it('limits a prefixed key to keys that start with its prefix, byte for byte', () => {
    const p: Principal = { keyId: 'a', role: 'readwrite', prefix: Buffer.from('team-a/') };
    expect(prefixAllows(p, Buffer.from('team-a/x'))).toBe(true);
    expect(prefixAllows(p, Buffer.from('team-a/'))).toBe(true);
    expect(prefixAllows(p, Buffer.from('team-a'))).toBe(false);
    expect(prefixAllows(p, Buffer.from('team-b/x'))).toBe(false);
    expect(prefixAllows(p, Buffer.from('TEAM-A/x'))).toBe(false);
    expect(prefixAllows({ ...p, prefix: undefined }, Buffer.from('anything'))).toBe(true);
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.string(), (prefix, key) => {
        const pb = Buffer.from(prefix, 'utf8');
        const kb = Buffer.from(key, 'utf8');
        const expected = kb.length >= pb.length && kb.subarray(0, pb.length).equals(pb);
        expect(prefixAllows({ ...p, prefix: pb }, kb)).toBe(expected);
        expect(prefixAllows({ ...p, prefix: pb }, Buffer.concat([pb, kb]))).toBe(true);
      }),
      { seed: 8, numRuns: 500 },
    );
  });

  it('classifies every route of the public API', () => {
    const cases: Array<[string, string, Access]> = [
      ['GET', '/healthz', 'open'],
      ['HEAD', '/readyz', 'open'],
      ['GET', '/metrics?x=1', 'open'],
      ['GET', '/Metrics/', 'open'],
      ['POST', '/healthz', 'any'],
      ['GET', '/v1/cluster', 'any'],
      ['GET', '/v1/kv/a', 'read'],
      ['HEAD', '/v1/kv/a', 'read'],
      ['PUT', '/v1/kv/a', 'write'],
      ['DELETE', '/v1/kv/a/', 'write'],
      ['PATCH', '/v1/kv/a', 'any'],
      ['GET', '/get?key=a', 'read'],
      ['POST', '/put', 'write'],
      ['POST', '/PUT/', 'write'],
      ['DELETE', '/delete?key=a', 'write'],
      ['GET', '/v1/admin/repair', 'admin'],
      ['POST', '/V1/Admin/Repair/', 'admin'],
      ['GET', '/v1/admin', 'admin'],
      ['GET', '/', 'any'],
      ['GET', '/nothing', 'any'],
      ['POST', '/put//', 'write'],
      ['GET', '/healthz//', 'open'],
      ['POST', 'http://host/put', 'admin'],
      ['GET', '*', 'admin'],
      ['GET', '', 'admin'],
    ];
    for (const [method, url, access] of cases)
      expect([method, url, requiredAccess(method, url)]).toEqual([method, url, access]);
  });
});

describe('the auth file on disk', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-keys-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = pino({ level: 'silent' });

  it('refuses to open a missing or invalid file', async () => {
    await expect(ApiKeyFile.open(path.join(dir, 'none.json'), log, { pollMs: 0 })).rejects.toThrow(
      /cannot read the auth file/,
    );
    fs.writeFileSync(path.join(dir, 'bad.json'), '{"keys": [{}]}');
    await expect(ApiKeyFile.open(path.join(dir, 'bad.json'), log, { pollMs: 0 })).rejects.toThrow(
      /keys\[0\]/,
    );
  });

  it('takes a changed file, and keeps the last good keys when the new file is bad or gone', async () => {
    const p = path.join(dir, 'keys.json');
    fs.writeFileSync(p, file([entry('reader', READ, 'read')]));
    const outcomes: string[] = [];
    const f = await ApiKeyFile.open(p, log, { pollMs: 0, onReload: (o) => outcomes.push(o) });
    expect(f.current().verify(READ)?.keyId).toBe('reader');

    // As a Secret volume changes: a new file swapped in under the same name.
    fs.writeFileSync(`${p}.new`, file([entry('writer', WRITE, 'readwrite')]));
    fs.renameSync(`${p}.new`, p);
    await f.poll();
    expect(f.current().verify(READ)).toBeUndefined();
    expect(f.current().verify(WRITE)?.keyId).toBe('writer');

    fs.writeFileSync(p, '{"keys": [');
    await f.poll();
    expect(f.current().verify(WRITE)?.keyId).toBe('writer');
    fs.rmSync(p);
    await f.poll();
    expect(f.current().verify(WRITE)?.keyId).toBe('writer');
    expect(outcomes).toEqual(['ok', 'error', 'error']);
    f.stop();
  });
});
