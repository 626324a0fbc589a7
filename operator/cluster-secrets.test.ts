import { createHash } from 'node:crypto';
import type { KubernetesObject, V1Secret } from '@kubernetes/client-node';
import { parseKVClusterSpec } from '../crds/kvcluster-spec';
import { ApiKeySet } from '../common/api-keys';
import { ensureClusterSecrets, newInternalToken, secretValue, type SecretApi } from './cluster-secrets';
import { KubeApiError } from './kube-api';
import type { ClusterRef } from './specs/names';

/*
 * The API server is faked in memory here (create refuses an existing name with 409, as the real
 * one does); e2e/k8s/operator.test.ts checks the same Secrets on a real API server.
 */
class FakeSecrets implements SecretApi {
  readonly stored = new Map<string, V1Secret>();
  readonly applied: KubernetesObject[] = [];
  /** names that another writer creates just before our create lands */
  readonly raced = new Map<string, V1Secret>();

  async getSecret(_ns: string, name: string): Promise<V1Secret | undefined> {
    const s = this.stored.get(name);
    // The API server answers data base64-encoded, never stringData.
    if (!s) return undefined;
    const data: Record<string, string> = {};
    for (const [k, v] of Object.entries(s.stringData ?? {})) data[k] = Buffer.from(v).toString('base64');
    return { ...s, stringData: undefined, data };
  }
  async createSecret(secret: V1Secret): Promise<V1Secret> {
    const name = secret.metadata?.name ?? '';
    const racer = this.raced.get(name);
    if (racer) this.stored.set(name, racer);
    if (this.stored.has(name)) {
      throw new KubeApiError({ op: 'create', kind: 'Secret', name }, 409, 'AlreadyExists');
    }
    this.stored.set(name, secret);
    return secret;
  }
  async apply(object: KubernetesObject): Promise<KubernetesObject> {
    this.applied.push(object);
    this.stored.set(object.metadata?.name ?? '', object as V1Secret);
    return object;
  }
}

const ref: ClusterRef = { name: 'demo', namespace: 'prod', uid: 'uid-1' };
let n = 0;
const tokens = { internal: () => `internal-${++n}`.padEnd(40, 'x'), apiKey: () => `kvs_admin-${++n}` };

describe('ensureClusterSecrets', () => {
  test('generates the internal token and an admin key once; later passes keep them', async () => {
    const api = new FakeSecrets();
    const first = await ensureClusterSecrets(api, ref, parseKVClusterSpec({}), tokens);
    const admin = secretValue(await api.getSecret('prod', 'demo-admin-token'), 'token');
    expect(admin).toMatch(/^kvs_admin-/);
    expect(first.internalToken).toMatch(/^internal-/);

    const second = await ensureClusterSecrets(api, ref, parseKVClusterSpec({}), tokens);
    expect(second.internalToken).toBe(first.internalToken);
    expect(secretValue(await api.getSecret('prod', 'demo-admin-token'), 'token')).toBe(admin);

    // The gateway's key file holds the admin key's hash, never the key.
    const keysFile = secretValue(await api.getSecret('prod', 'demo-api-keys'), 'keys.json') ?? '';
    expect(keysFile).not.toContain(admin);
    expect(JSON.parse(keysFile)).toEqual({
      keys: [
        {
          id: 'admin',
          role: 'admin',
          sha256: createHash('sha256')
            .update(admin ?? '')
            .digest('hex'),
        },
      ],
    });
    // The gateway reads that file and knows the admin key by it (a real token, as kvctl makes them).
    const real = new FakeSecrets();
    await ensureClusterSecrets(real, ref, parseKVClusterSpec({}));
    const realToken = secretValue(await real.getSecret('prod', 'demo-admin-token'), 'token') ?? '';
    const realKeys = ApiKeySet.parse(
      secretValue(await real.getSecret('prod', 'demo-api-keys'), 'keys.json') ?? '',
      'keys.json',
    );
    expect(realKeys.verify(realToken)).toEqual({ keyId: 'admin', role: 'admin', prefix: undefined });
    expect(realKeys.verify(`${realToken}x`)).toBeUndefined();
    // Every generated Secret is owned by the KVCluster: deleting it deletes them.
    for (const s of api.stored.values()) {
      expect(s.metadata?.ownerReferences).toEqual([
        expect.objectContaining({ kind: 'KVCluster', name: 'demo', uid: 'uid-1', controller: true }),
      ]);
    }
  });

  test('no admin key when the user brings API keys or disables auth', async () => {
    for (const auth of [{ secretRef: { name: 'team-keys' } }, { disabled: true }]) {
      const api = new FakeSecrets();
      await ensureClusterSecrets(api, ref, parseKVClusterSpec({ auth }), tokens);
      expect([...api.stored.keys()]).toEqual(['demo-internal-token']);
    }
  });

  test('a Secret created by someone else in between is the one kept', async () => {
    const api = new FakeSecrets();
    api.raced.set('demo-internal-token', {
      metadata: { name: 'demo-internal-token' },
      stringData: { token: 'theirs'.padEnd(40, 'y') },
    });
    const out = await ensureClusterSecrets(
      api,
      ref,
      parseKVClusterSpec({ auth: { disabled: true } }),
      tokens,
    );
    expect(out.internalToken).toBe('theirs'.padEnd(40, 'y'));
  });

  test('an emptied internal token Secret is an error that says what to do', async () => {
    const api = new FakeSecrets();
    api.stored.set('demo-internal-token', { metadata: { name: 'demo-internal-token' }, stringData: {} });
    await expect(
      ensureClusterSecrets(api, ref, parseKVClusterSpec({ auth: { disabled: true } }), tokens),
    ).rejects.toMatchObject({ code: 'cluster_secret_invalid', message: expect.stringMatching(/delete it/) });
  });

  test('generated tokens are long and distinct', () => {
    const a = newInternalToken();
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(newInternalToken()).not.toBe(a);
  });
});
