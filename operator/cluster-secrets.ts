import { randomBytes } from 'node:crypto';
import type { V1Secret } from '@kubernetes/client-node';
import { errorMessage, KvError } from '../common/errors';
import { parseInternalTokens } from '../common/internal-token';
import type { KVClusterSpec } from '../crds/kvcluster-spec';
import { hashToken, newToken, type ApiKeyEntry } from '../common/api-keys';
import type { KubeApi } from './kube-api';
import { isConflict } from './kube-api';
import {
  adminTokenSecretName,
  API_KEYS_FILE,
  generatedApiKeysSecretName,
  INTERNAL_TOKEN_KEY,
  internalTokenSecretName,
  objectLabels,
  ownerReference,
  type ClusterRef,
} from './specs/names';

/**
 * The Secrets the operator generates for a cluster, once:
 * - `<cluster>-internal-token`: the token nodes, gateways and the operator present on the nodes'
 *   internal API, so reaching a node's port is not enough to read data;
 * - without spec.auth.secretRef (and auth not disabled): an admin API key for the user in
 *   `<cluster>-admin-token` (as ECK does for its `elastic` user), and `<cluster>-api-keys` holding
 *   only its SHA-256, which is what the gateways mount.
 * Generated values are created, never applied: a later reconcile must not replace them.
 */

/** The key of the admin token Secret, and the id of the generated admin key. */
export const ADMIN_TOKEN_KEY = 'token';
export const GENERATED_ADMIN_KEY_ID = 'admin';

export type SecretApi = Pick<KubeApi, 'getSecret' | 'createSecret' | 'apply'>;

export interface ClusterSecrets {
  /** what the operator's own calls to the nodes present */
  readonly internalToken: string;
}

/** 32 random bytes as hex (an API key is made as `kvctl auth create-key` makes one: newToken). */
export function newInternalToken(): string {
  return randomBytes(32).toString('hex');
}

function secret(cluster: ClusterRef, name: string, data: Record<string, string>): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name,
      namespace: cluster.namespace,
      labels: objectLabels(cluster.name, 'credentials'),
      // Deleting the KVCluster deletes its generated credentials with it.
      ownerReferences: [ownerReference(cluster)],
    },
    stringData: data,
  };
}

export function internalTokenSecret(cluster: ClusterRef, token: string): V1Secret {
  return secret(cluster, internalTokenSecretName(cluster.name), { [INTERNAL_TOKEN_KEY]: token });
}

export function adminTokenSecret(cluster: ClusterRef, token: string): V1Secret {
  return secret(cluster, adminTokenSecretName(cluster.name), { [ADMIN_TOKEN_KEY]: token });
}

/** The gateway's key file with the generated admin key, stored as its hash only. */
export function generatedApiKeysSecret(cluster: ClusterRef, adminToken: string): V1Secret {
  const admin: ApiKeyEntry = { id: GENERATED_ADMIN_KEY_ID, sha256: hashToken(adminToken), role: 'admin' };
  const keys = { keys: [admin] };
  return secret(cluster, generatedApiKeysSecretName(cluster.name), {
    [API_KEYS_FILE]: `${JSON.stringify(keys, null, 2)}\n`,
  });
}

/** One value of a Secret as text (the API returns `data` base64-encoded). */
export function secretValue(s: V1Secret | undefined, key: string): string | undefined {
  const b64 = s?.data?.[key];
  if (b64 !== undefined) return Buffer.from(b64, 'base64').toString('utf8');
  return s?.stringData?.[key];
}

/** Creates the Secret unless it exists; either way answers the one that is stored. */
async function createOnce(api: SecretApi, wanted: V1Secret): Promise<V1Secret> {
  const namespace = wanted.metadata?.namespace ?? '';
  const name = wanted.metadata?.name ?? '';
  const existing = await api.getSecret(namespace, name);
  if (existing) return existing;
  try {
    return await api.createSecret(wanted);
  } catch (err) {
    // Created in between (another operator replica, or a retry): keep that one.
    if (!isConflict(err)) throw err;
    const stored = await api.getSecret(namespace, name);
    if (!stored) throw err;
    return stored;
  }
}

/** A generated Secret that exists but cannot be used (someone emptied it). */
export class ClusterSecretError extends KvError {
  constructor(secretName: string, message: string) {
    super('cluster_secret_invalid', message, { secret: secretName });
  }
}

/** Makes sure the cluster's generated Secrets exist; answers what the operator needs from them. */
export async function ensureClusterSecrets(
  api: SecretApi,
  cluster: ClusterRef,
  spec: KVClusterSpec,
  tokens: { internal: () => string; apiKey: () => string } = {
    internal: newInternalToken,
    apiKey: () => newToken(),
  },
): Promise<ClusterSecrets> {
  const internal = await createOnce(api, internalTokenSecret(cluster, tokens.internal()));
  const stored = secretValue(internal, INTERNAL_TOKEN_KEY);
  if (!stored?.trim()) {
    throw new ClusterSecretError(
      internalTokenSecretName(cluster.name),
      `Secret ${internalTokenSecretName(cluster.name)} has no ${INTERNAL_TOKEN_KEY}: delete it and the operator makes a new one`,
    );
  }
  let internalToken: string;
  try {
    // The first line: what every process presents (a second line is the next token, during a rotation).
    internalToken = parseInternalTokens(stored, `Secret ${internalTokenSecretName(cluster.name)}`).present;
  } catch (err) {
    throw new ClusterSecretError(internalTokenSecretName(cluster.name), errorMessage(err));
  }
  if (!spec.auth.disabled && !spec.auth.secretRef) {
    const admin = await createOnce(api, adminTokenSecret(cluster, tokens.apiKey()));
    const adminToken = secretValue(admin, ADMIN_TOKEN_KEY)?.trim();
    if (!adminToken) {
      throw new ClusterSecretError(
        adminTokenSecretName(cluster.name),
        `Secret ${adminTokenSecretName(cluster.name)} has no ${ADMIN_TOKEN_KEY}: delete it and the operator makes a new admin key`,
      );
    }
    // Derived from the admin token, so applying it every pass is idempotent and repairs edits.
    await api.apply(generatedApiKeysSecret(cluster, adminToken));
  }
  return { internalToken };
}
