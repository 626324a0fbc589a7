import {
  API_ERROR_CODES,
  BatchOperationSchema,
  ClusterReplySchema,
  ListQuerySchema,
  ListReplySchema,
} from './rest-api';
import { openApiDocument } from './rest-openapi';

type Json = Record<string, unknown>;
const doc = openApiDocument('9.9.9') as Json & {
  paths: Record<string, Record<string, Json & { responses: Record<string, Json> }>>;
  components: { schemas: Record<string, Json> };
};

/** Every `$ref` anywhere in `v`. */
function refs(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) refs(x, out);
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k === '$ref' && typeof x === 'string') out.push(x);
      else refs(x, out);
    }
  }
  return out;
}

describe('the OpenAPI document', () => {
  it('is OpenAPI 3.1 with the version it is given', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
    expect((doc.info as Json).version).toBe('9.9.9');
  });

  it('resolves every $ref to a component', () => {
    const all = refs(doc);
    expect(all.length).toBeGreaterThan(20);
    for (const r of all) {
      const id = /^#\/components\/schemas\/([A-Za-z]+)$/.exec(r)?.[1];
      expect([r, id !== undefined && id in doc.components.schemas]).toEqual([r, true]);
    }
  });

  it('names every error code the gateway can send, and describes every error status it lists', () => {
    const error = doc.components.schemas.ErrorReply as {
      properties: { error: { properties: { code: Json } } };
    };
    expect(error.properties.error.properties.code.enum).toEqual([...API_ERROR_CODES]);
    for (const [route, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        for (const [status, answer] of Object.entries(op.responses)) {
          expect([route, method, status, typeof answer.description]).toEqual([
            route,
            method,
            status,
            'string',
          ]);
        }
      }
    }
  });

  it('documents the data routes with the statuses they answer', () => {
    const statuses = (route: string, method: string): string[] =>
      Object.keys(doc.paths[route]?.[method]?.responses ?? {}).sort();
    expect(statuses('/v1/kv/{key}', 'get')).toEqual(
      ['200', '304', '400', '401', '403', '404', '413', '429', '500', '501', '503'].sort(),
    );
    expect(statuses('/v1/kv', 'get')).toContain('200');
    expect(statuses('/v1/batch', 'post')).toContain('413');
    // the routes that need no key say so; the rest inherit the bearer key
    expect(doc.paths['/healthz']?.get?.security).toEqual([]);
    expect(doc.paths['/v1/kv/{key}']?.put?.security).toBeUndefined();
    expect(doc.security).toEqual([{ apiKey: [] }]);
  });

  it('renders the listing parameters from the schema the gateway parses them with', () => {
    const params = (doc.paths['/v1/kv']?.get?.parameters ?? []) as Array<{ name: string; schema: Json }>;
    expect(params.map((p) => p.name)).toEqual([...Object.keys(ListQuerySchema.shape), 'X-Consistency']);
    expect(params.find((p) => p.name === 'limit')?.schema).toEqual({
      type: 'integer',
      minimum: 1,
      maximum: 10000,
    });
    expect(params.find((p) => p.name === 'keys_only')?.schema).toEqual({ type: 'boolean' });
  });
});

describe('the schemas the gateway and the client share', () => {
  it('parse a listing query from its text', () => {
    expect(ListQuerySchema.parse({ limit: '5', keys_only: '' })).toEqual({ limit: 5, keys_only: true });
    expect(ListQuerySchema.parse({ keys_only: 'false' })).toEqual({ keys_only: false });
    for (const bad of [
      { limit: '0' },
      { limit: '1e3' },
      { limit: '10001' },
      { keys_only: 'yes' },
      { other: 'x' },
      { prefix: ['a', 'b'] },
    ]) {
      expect([bad, ListQuerySchema.safeParse(bad).success]).toEqual([bad, false]);
    }
  });

  it('take a batch operation only in its own shape', () => {
    expect(BatchOperationSchema.safeParse({ op: 'put', key: 'k', value: 'aGk=', ttl: 5 }).success).toBe(true);
    for (const bad of [
      { op: 'put', key: 'k' },
      { op: 'put', key: 'k', value: 'not base64!' },
      { op: 'put', key: 'k', value: 'aGk=', ttl: 1.5 },
      { op: 'get', key: 'k', value: 'aGk=' },
      { op: 'get', key: '' },
      { op: 'scan', key: 'k' },
    ]) {
      expect([bad, BatchOperationSchema.safeParse(bad).success]).toEqual([bad, false]);
    }
  });

  it('refuse replies of another shape, and drop fields a newer server adds', () => {
    expect(ListReplySchema.safeParse({ items: [{ key: 'a', version: 'x' }] }).success).toBe(false);
    expect(ListReplySchema.parse({ items: [{ key: 'a', version: '1.0.w', extra: 1 }] })).toEqual({
      items: [{ key: 'a', version: '1.0.w' }],
    });
    const cluster = {
      cluster: 'c',
      epoch: 1,
      partitionCount: 1,
      replicationFactor: 1,
      nodes: [],
      partitions: [[]],
      moves: [],
    };
    expect(ClusterReplySchema.safeParse(cluster).success).toBe(true);
    expect(ClusterReplySchema.safeParse({ ...cluster, epoch: -1 }).success).toBe(false);
  });
});
