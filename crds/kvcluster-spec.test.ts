import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import type {
  KVClusterSpec as ClientSpec,
  KVClusterSpecInput as ClientSpecInput,
  KVClusterStatus as ClientStatus,
} from './kvcluster-types';
import { KvError } from '../common/errors';
import { GENERATED_FILES, crdObject, generatedFiles, valuesSchemaObject } from './generate';
import {
  InvalidKVClusterSpecError,
  KVClusterSpec,
  KVClusterStatus,
  checkKVClusterSpecUpdate,
  parseKVClusterSpec,
  type KVClusterSpecInput,
} from './kvcluster-spec';
import { SchemaConversionError, toStructuralSchema, type JsonObject } from './openapi';

const root = path.resolve(__dirname, '..');

const ALL_DEFAULTS = {
  replicas: 3,
  replicationFactor: 3,
  partitions: 256,
  image: 'kvstore:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  storage: { size: '1Gi' },
  resources: {},
  gateway: {
    replicas: 2,
    port: 80,
    serviceType: 'ClusterIP',
    rateLimit: { perKey: 0, perAddress: 0, windowSeconds: 1 },
    readHedgeMs: 50,
  },
  redis: { managed: false },
  auth: { disabled: false },
  monitoring: { serviceMonitor: { enabled: false, interval: '30s' } },
  deletionPolicy: 'Retain',
  logLevel: 'info',
};

describe('generated files', () => {
  test('every committed generated file equals what the generator produces now', () => {
    const stale = generatedFiles(root)
      .filter((file) => {
        const target = path.join(root, file.path);
        return !fs.existsSync(target) || fs.readFileSync(target, 'utf8') !== file.content;
      })
      .map(
        (file) => `${file.path} differs from crds/kvcluster-spec.ts: run \`npm run generate\` and commit it`,
      );
    expect(stale).toEqual([]);
  }, 60_000);

  test('the chart carries the same CRD bytes as crds/', () => {
    expect(fs.readFileSync(path.join(root, 'charts/kvstore/crds/kvcluster.yaml'), 'utf8')).toBe(
      fs.readFileSync(path.join(root, 'crds/kvcluster.yaml'), 'utf8'),
    );
    expect(GENERATED_FILES.map((f) => f.path)).toEqual([
      'crds/kvcluster.yaml',
      'charts/kvstore/crds/kvcluster.yaml',
      'charts/kvstore/values.schema.json',
      'crds/kvcluster-types.ts',
      'docs/openapi.json',
    ]);
  });
});

describe('the CRD', () => {
  const crd = YAML.parse(fs.readFileSync(path.join(root, 'crds/kvcluster.yaml'), 'utf8')) as {
    spec: {
      versions: Array<{
        schema: { openAPIV3Schema: { properties: { spec: JsonObject } } };
        subresources: JsonObject;
        additionalPrinterColumns: Array<{ name: string; jsonPath: string }>;
      }>;
    };
  };
  const version = crd.spec.versions[0];
  const spec = version?.schema.openAPIV3Schema.properties.spec;

  test('is the object the generator builds (the YAML round-trips)', () => {
    expect(crd).toEqual(crdObject());
  });

  test('spec defaults to exactly what parseKVClusterSpec fills in', () => {
    expect(spec?.default).toEqual(ALL_DEFAULTS);
    expect(parseKVClusterSpec({})).toEqual(ALL_DEFAULTS);
  });

  test('carries the CEL rules: RF <= replicas, partitions immutable', () => {
    expect(spec?.['x-kubernetes-validations']).toEqual([
      {
        rule: 'self.replicationFactor <= self.replicas',
        message: 'replicationFactor must not exceed replicas',
        fieldPath: '.replicationFactor',
      },
      {
        rule: 'self.partitions == oldSelf.partitions',
        message: 'partitions is immutable',
        fieldPath: '.partitions',
        reason: 'FieldValueForbidden',
      },
    ]);
  });

  test('has the status and scale subresources and the printer columns', () => {
    expect(version?.subresources).toEqual({
      status: {},
      scale: {
        specReplicasPath: '.spec.replicas',
        statusReplicasPath: '.status.replicas',
        labelSelectorPath: '.status.selector',
      },
    });
    expect(version?.additionalPrinterColumns.map((c) => c.name)).toEqual([
      'Replicas',
      'Ready',
      'Phase',
      'Epoch',
      'Moving',
      'Age',
    ]);
  });

  test('the schema converter refuses what a structural schema cannot say, naming where', () => {
    expect(() => toStructuralSchema(z.object({ v: z.union([z.string(), z.boolean()]) }))).toThrow(
      new SchemaConversionError(
        'schema.v',
        'unions are not structural: use an object with optional fields instead',
      ),
    );
    expect(() => toStructuralSchema(z.object({ v: z.tuple([z.string()]) }))).toThrow(SchemaConversionError);
    expect(() => toStructuralSchema(z.object({ v: z.unknown() }))).toThrow(/needs a type/);
  });
});

describe('values.schema.json', () => {
  const schema = valuesSchemaObject() as {
    additionalProperties: boolean;
    properties: { cluster: { additionalProperties: boolean; properties: Record<string, JsonObject> } };
  };

  test('the cluster section is the spec plus enabled and name; other top-level keys are free', () => {
    expect(schema.additionalProperties).toBe(true);
    expect(Object.keys(schema.properties.cluster.properties).sort()).toEqual(
      ['enabled', 'name', ...Object.keys(ALL_DEFAULTS), 'affinity', 'topologySpreadConstraints'].sort(),
    );
    // A misspelt key fails `helm install` instead of vanishing.
    expect(schema.properties.cluster.additionalProperties).toBe(false);
    expect(schema.properties.cluster.properties.replicas).toMatchObject({
      type: 'integer',
      minimum: 1,
      maximum: 64,
    });
    // Opaque Kubernetes objects stay open.
    expect(schema.properties.cluster.properties.affinity).toEqual({
      description: expect.any(String),
      type: 'object',
    });
  });

  test('carries no Kubernetes extension keywords', () => {
    expect(JSON.stringify(schema)).not.toMatch(/"x-kubernetes|"x-kvstore/);
  });
});

describe('parseKVClusterSpec', () => {
  test('fills every default in, nested ones too, and keeps what is given', () => {
    expect(parseKVClusterSpec(undefined)).toEqual(ALL_DEFAULTS);
    expect(parseKVClusterSpec(null)).toEqual(ALL_DEFAULTS);
    const spec = parseKVClusterSpec({
      replicas: 5,
      gateway: { replicas: 0 },
      monitoring: { serviceMonitor: { enabled: true } },
      auth: { secretRef: { name: 'kv-api-keys' } },
      affinity: { podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [] } },
    });
    expect(spec.replicas).toBe(5);
    expect(spec.gateway).toEqual({
      replicas: 0,
      port: 80,
      serviceType: 'ClusterIP',
      rateLimit: { perKey: 0, perAddress: 0, windowSeconds: 1 },
      readHedgeMs: 50,
    });
    expect(spec.monitoring.serviceMonitor).toEqual({ enabled: true, interval: '30s' });
    expect(spec.auth.secretRef?.name).toBe('kv-api-keys');
    expect(spec.affinity).toEqual({
      podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [] },
    });
  });

  test('quantities may be written as integers (as in a Pod spec) and come out as strings', () => {
    const spec = parseKVClusterSpec({
      storage: { size: 10737418240, storageClassName: 'fast' },
      resources: { node: { requests: { cpu: 2, memory: '512Mi' }, limits: { cpu: '2500m' } } },
    });
    expect(spec.storage).toEqual({ size: '10737418240', storageClassName: 'fast' });
    expect(spec.resources.node).toEqual({
      requests: { cpu: '2', memory: '512Mi' },
      limits: { cpu: '2500m' },
    });
  });

  test.each<[string, string, unknown, RegExp]>([
    [
      'RF above replicas',
      'spec.replicationFactor',
      { replicas: 2, replicationFactor: 3 },
      /must not exceed replicas/,
    ],
    ['zero replicas', 'spec.replicas', { replicas: 0 }, /expected number to be >=1/],
    ['too many replicas', 'spec.replicas', { replicas: 65 }, /<=64/],
    ['fractional replicas', 'spec.replicas', { replicas: 2.5 }, /expected int/],
    ['RF 0', 'spec.replicationFactor', { replicationFactor: 0 }, />=1/],
    ['partitions out of range', 'spec.partitions', { partitions: 70000 }, /<=65535/],
    [
      'bad pull policy',
      'spec.imagePullPolicy',
      { imagePullPolicy: 'Sometimes' },
      /"Always"\|"IfNotPresent"\|"Never"/,
    ],
    ['empty image', 'spec.image', { image: '' }, />=1 characters/],
    [
      'redis url and managed',
      'spec.redis.url',
      { redis: { url: 'redis://r:6379', managed: true } },
      /mutually exclusive/,
    ],
    [
      'redis url not redis',
      'spec.redis.url',
      { redis: { url: 'http://r:6379' } },
      /redis:\/\/ or rediss:\/\//,
    ],
    ['bad storage size', 'spec.storage.size', { storage: { size: 'lots' } }, /Kubernetes quantity/],
    ['negative cpu', 'spec.resources.node.limits.cpu', { resources: { node: { limits: { cpu: -1 } } } }, /./],
    ['bad service type', 'spec.gateway.serviceType', { gateway: { serviceType: 'Ingress' } }, /ClusterIP/],
    [
      'own API keys and auth disabled',
      'spec.auth.disabled',
      { auth: { secretRef: { name: 'keys' }, disabled: true } },
      /mutually exclusive/,
    ],
    [
      'TLS Secret not a name',
      'spec.gateway.tls.secretRef.name',
      { gateway: { tls: { secretRef: { name: 'Not_A_Name' } } } },
      /Secret name/,
    ],
    [
      'negative rate limit',
      'spec.gateway.rateLimit.perKey',
      { gateway: { rateLimit: { perKey: -1 } } },
      />=0/,
    ],
    ['gateway port 0', 'spec.gateway.port', { gateway: { port: 0 } }, />=1/],
    ['secretRef without name', 'spec.auth.secretRef.name', { auth: { secretRef: {} } }, /expected string/],
    [
      'bad secret name',
      'spec.auth.secretRef.name',
      { auth: { secretRef: { name: 'Not_A_Name' } } },
      /Secret name/,
    ],
    [
      'bad interval',
      'spec.monitoring.serviceMonitor.interval',
      { monitoring: { serviceMonitor: { interval: 'often' } } },
      /duration/,
    ],
    ['bad deletion policy', 'spec.deletionPolicy', { deletionPolicy: 'Orphan' }, /"Retain"\|"Delete"/],
    [
      'constraints not a list',
      'spec.topologySpreadConstraints',
      { topologySpreadConstraints: { maxSkew: 1 } },
      /array/,
    ],
    [
      'constraint not an object',
      'spec.topologySpreadConstraints[0]',
      { topologySpreadConstraints: [3] },
      /expected record/,
    ],
    ['spec not an object', 'spec', 'three replicas please', /expected object/],
  ])('refuses %s, naming %s', (_what, field, input, message) => {
    let caught: unknown;
    try {
      parseKVClusterSpec(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidKVClusterSpecError);
    expect(caught).toBeInstanceOf(KvError);
    const err = caught as InvalidKVClusterSpecError;
    expect(err.code).toBe('invalid_spec');
    expect(err.field).toBe(field);
    expect(err.context.field).toBe(field);
    expect(err.message).toContain(`${field}: `);
    expect(err.issues[0]?.message).toMatch(message);
  });

  test('reports every bad field at once', () => {
    expect(() => parseKVClusterSpec({ replicas: 0, imagePullPolicy: 'x', storage: { size: 'big' } })).toThrow(
      expect.objectContaining({
        issues: [
          expect.objectContaining({ field: 'spec.replicas' }),
          expect.objectContaining({ field: 'spec.imagePullPolicy' }),
          expect.objectContaining({ field: 'spec.storage.size' }),
        ],
      }),
    );
  });

  test('unknown fields are dropped, as the API server prunes them', () => {
    expect(parseKVClusterSpec({ replicaz: 5 })).toEqual(ALL_DEFAULTS);
  });
});

describe('checkKVClusterSpecUpdate', () => {
  test('refuses a partitions change and allows the rest', () => {
    const old = parseKVClusterSpec({});
    expect(() =>
      checkKVClusterSpecUpdate(old, parseKVClusterSpec({ replicas: 5, image: 'kvstore:0.2.0' })),
    ).not.toThrow();
    expect(() => checkKVClusterSpecUpdate(old, parseKVClusterSpec({ partitions: 512 }))).toThrow(
      expect.objectContaining({
        field: 'spec.partitions',
        message: expect.stringMatching(/partitions is immutable/),
      }),
    );
  });
});

describe('KVClusterStatus', () => {
  test('accepts the status the operator writes and refuses an unknown phase', () => {
    const status = {
      observedGeneration: 4,
      phase: 'Rebalancing',
      replicas: 5,
      readyReplicas: 5,
      selector: 'app.kubernetes.io/instance=demo,app.kubernetes.io/component=node',
      mapEpoch: 12,
      partitionsMoving: 40,
      rebalance: { movesTotal: 102, movesDone: 62, targetReplicas: 5 },
      conditions: [
        {
          type: 'Rebalancing',
          status: 'True',
          reason: 'ScaleOut',
          message: '62 of 102 moves done',
          lastTransitionTime: '2025-01-01T00:00:00Z',
          observedGeneration: 4,
        },
      ],
    };
    expect(KVClusterStatus.parse(status)).toEqual(status);
    expect(KVClusterStatus.safeParse({ phase: 'Exploding' }).success).toBe(false);
  });
});

describe('crds/kvcluster-types.ts', () => {
  test('its types and the zod types agree (checked by tsc; these lines would not compile otherwise)', () => {
    // Read side: what the operator parses fits what a client reads (affinity and constraints are typed
    // by @kubernetes/client-node on the client side, opaque records here).
    type Opaque = 'affinity' | 'topologySpreadConstraints';
    const parsed: Omit<KVClusterSpec, Opaque> = parseKVClusterSpec({});
    const read: Omit<ClientSpec, Opaque> = parsed;
    // Write side: whatever a client may send, the schema accepts as input.
    const written: Omit<ClientSpecInput, Opaque> = { replicas: 5, storage: { size: 1 } };
    const input: Omit<KVClusterSpecInput, Opaque> = written;
    const status: ClientStatus = KVClusterStatus.parse({ phase: 'Running' });
    expect([read.replicas, input.replicas, status.phase]).toEqual([3, 5, 'Running']);
  });
});
