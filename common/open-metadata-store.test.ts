import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { FileMetadataStore } from './file-metadata-store';
import { openMetadataStore } from './open-metadata-store';
import { RedisMetadataStore } from './redis-metadata-store';

/*
 * The flag combinations. The --kube-namespace stores themselves run against a real API server in
 * e2e/k8s/configmap-metadata-store.test.ts.
 */

const silent = pino({ level: 'silent' });

describe('openMetadataStore', () => {
  it('opens the file store for --metadata-file, without loading the Kubernetes client', async () => {
    // @kubernetes/client-node is loaded only for --kube-namespace: file and Redis setups start fast.
    const store = openMetadataStore(
      { cluster: 'c1', file: path.join(os.tmpdir(), 'kv-open-test.json') },
      silent,
    );
    try {
      expect(store).toBeInstanceOf(FileMetadataStore);
      expect(Object.keys(require.cache).some((k) => k.includes('@kubernetes/client-node'))).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('opens Redis for --redis, which wins over --metadata-file as before', async () => {
    const store = openMetadataStore(
      { cluster: 'c1', redisUrl: 'redis://127.0.0.1:1', file: '/nonexistent/map.json' },
      silent,
    );
    try {
      expect(store).toBeInstanceOf(RedisMetadataStore);
    } finally {
      await store.close();
    }
  });

  it('refuses a missing location and --metadata-file with --kube-namespace, as usage errors', () => {
    expect(() => openMetadataStore({ cluster: 'c1' }, silent)).toThrow(
      expect.objectContaining({ code: 'usage', message: expect.stringMatching(/--kube-namespace/) }),
    );
    expect(() =>
      openMetadataStore({ cluster: 'c1', file: '/tmp/map.json', kubeNamespace: 'kv' }, silent),
    ).toThrow(expect.objectContaining({ code: 'usage' }));
  });
});
