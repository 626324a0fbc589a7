import { z } from 'zod';
import { CONSISTENCY_LEVELS } from './consistency';
import * as restApi from './rest-api';
import {
  BatchReplySchema,
  BatchRequestSchema,
  ClusterReplySchema,
  HealthReplySchema,
  LegacyGetReplySchema,
  LegacyPutBodySchema,
  LegacySuccessSchema,
  ListQuerySchema,
  ListReplySchema,
  MAX_BATCH_OPERATIONS,
  MAX_TTL_SECONDS,
  NotReadyReplySchema,
  ReadyReplySchema,
  RepairReportSchema,
  WriteReplySchema,
} from './rest-api';

/**
 * The OpenAPI 3.1 document of the gateway's REST API, built from common/rest-api.ts: its schemas
 * become components (JSON Schema 2020-12, which OpenAPI 3.1 uses as is), and the routes below say
 * which schema each request and answer has and which errors each route can give. Pure: the gateway
 * serves it at GET /openapi.json, `npm run generate` writes it to docs/openapi.json (checked for drift).
 */

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** What every error status means; each route lists the ones it can give. */
const ERRORS: Readonly<Record<number, string>> = {
  400: '`bad_request`: the request is malformed (it names what); nothing was changed',
  401: '`unauthorized`: no API key, or one the gateway does not know',
  403: "`forbidden`: the key's role or prefix does not allow this",
  404: '`not_found`',
  405: '`method_not_allowed`: the Allow header lists the methods of the route',
  413: '`payload_too_large`: a key, value or body over its limit',
  415: '`unsupported_media_type`: a Content-Encoding the gateway cannot inflate',
  429: '`rate_limited`: Retry-After says when to try again',
  500: '`internal`: a bug; the request id is in the log',
  501: '`not_implemented`: a precondition header (If-Match, If-Unmodified-Since; If-None-Match on writes) the gateway does not evaluate yet; nothing was done',
  503: '`unavailable` (too few replicas answered), `not_ready` (no partition map yet) or `overloaded` (the gateway holds its bound of requests in flight: shed at once); Retry-After says when to try again',
  507: '`insufficient_storage`: too few replicas had room for the write (their data volumes are under the watermark); it names them. Reads still answer',
};

/** Errors any keyed route can give: its input, its key, its limits, its replicas. */
const KEYED = [400, 401, 403, 429, 500, 503];

interface Route {
  readonly method: 'get' | 'head' | 'put' | 'post' | 'delete';
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tags: readonly string[];
  /** no API key needed */
  readonly open?: boolean;
  readonly parameters?: readonly JsonObject[];
  readonly requestBody?: JsonObject;
  /** success answers, by status */
  readonly ok: Readonly<Record<number, JsonObject>>;
  /** error statuses, each answered with ErrorReply */
  readonly errors?: readonly number[];
}

/** `o` without the named keys (zod's $schema and $id, which components do not carry). */
const without = (o: JsonObject, ...keys: string[]): JsonObject =>
  Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
const ref = (id: string): JsonObject => ({ $ref: `#/components/schemas/${id}` });
const json = (schema: JsonObject, description: string): JsonObject => ({
  description,
  content: { 'application/json': { schema } },
});
const idOf = (schema: z.ZodType): string => {
  const id = schema.meta()?.id;
  if (typeof id !== 'string') throw new Error('a schema of the REST API has no id');
  return id;
};
const jsonOf = (schema: z.ZodType, description: string): JsonObject => json(ref(idOf(schema)), description);

const consistencyHeader: JsonObject = {
  name: 'X-Consistency',
  in: 'header',
  description: 'how many replicas must answer (default quorum)',
  schema: { type: 'string', enum: [...CONSISTENCY_LEVELS] },
};
const keyPath: JsonObject = {
  name: 'key',
  in: 'path',
  required: true,
  description:
    'the key: everything after /v1/kv/, percent-decoded; UTF-8, at most 1024 bytes by default (--max-key-bytes)',
  schema: { type: 'string', minLength: 1 },
};
const keyQuery: JsonObject = {
  ...keyPath,
  in: 'query',
  description: 'the key; UTF-8, at most 1024 bytes by default',
};
const binary = (description: string, headers?: JsonObject): JsonObject => ({
  description,
  ...(headers ? { headers } : {}),
  // No schema: the value is whatever bytes were written, in whatever type (OpenAPI 3.1, 4.8.14).
  content: { '*/*': {} },
});
const etag: JsonObject = {
  ETag: { description: "the record's version, quoted", schema: { type: 'string' } },
};

/** GET /v1/kv's parameters, one per field of ListQuerySchema, each with the schema zod gives it. */
function listParameters(): JsonObject[] {
  return Object.entries(ListQuerySchema.shape).map(([name, field]): JsonObject => {
    const rendered = z.toJSONSchema(field, { target: 'draft-2020-12', io: 'output' }) as JsonObject;
    const schema = without(rendered, '$schema', 'description');
    const description = typeof rendered.description === 'string' ? rendered.description : name;
    return { name, in: 'query', description, schema };
  });
}

const ROUTES: readonly Route[] = [
  {
    method: 'get',
    path: '/v1/kv',
    operationId: 'listKeys',
    summary:
      'A page of the live keys in a prefix or a half-open range [start, end), in key byte order. Not a snapshot: a key unchanged throughout a listing is listed once, none twice.',
    tags: ['data'],
    parameters: [...listParameters(), consistencyHeader],
    ok: { 200: jsonOf(ListReplySchema, 'a page; `cursor` while there is more') },
    errors: [...KEYED, 413, 501],
  },
  {
    method: 'get',
    path: '/v1/kv/{key}',
    operationId: 'getValue',
    summary: 'The value of a key, with the Content-Type it was written with; its version is the ETag.',
    tags: ['data'],
    parameters: [
      keyPath,
      consistencyHeader,
      {
        name: 'If-None-Match',
        in: 'header',
        description: 'a version (ETag) the caller holds: 304 when it is still the newest',
        schema: { type: 'string' },
      },
    ],
    ok: {
      200: binary('the value, as written', etag),
      304: { description: 'the version in If-None-Match is the newest', headers: etag },
    },
    errors: [...KEYED, 404, 413, 501],
  },
  {
    method: 'head',
    path: '/v1/kv/{key}',
    operationId: 'headValue',
    summary: 'As GET, without the value.',
    tags: ['data'],
    parameters: [keyPath, consistencyHeader],
    ok: { 200: { description: 'the key has a value', headers: etag } },
    errors: [...KEYED, 404, 413, 501],
  },
  {
    method: 'put',
    path: '/v1/kv/{key}',
    operationId: 'putValue',
    summary: 'Writes the body as the value of a key; its Content-Type is kept and returned with it.',
    tags: ['data'],
    parameters: [
      keyPath,
      consistencyHeader,
      {
        name: 'ttl',
        in: 'query',
        description: 'seconds until the value expires',
        schema: { type: 'integer', minimum: 1, maximum: MAX_TTL_SECONDS },
      },
    ],
    requestBody: {
      description:
        'the value: any bytes (none: an empty value), up to 1 MiB; Content-Encoding gzip, deflate or br is inflated first',
      required: false,
      content: { '*/*': {} },
    },
    ok: { 200: jsonOf(WriteReplySchema, 'written at this version') },
    errors: [...KEYED, 413, 415, 501, 507],
  },
  {
    method: 'delete',
    path: '/v1/kv/{key}',
    operationId: 'deleteValue',
    summary: 'Deletes a key (a tombstone, at a version of its own); deleting a missing key succeeds.',
    tags: ['data'],
    parameters: [keyPath, consistencyHeader],
    ok: { 200: jsonOf(WriteReplySchema, 'deleted at this version') },
    errors: [...KEYED, 413, 501, 507],
  },
  {
    method: 'post',
    path: '/v1/batch',
    operationId: 'batch',
    summary: `Up to ${MAX_BATCH_OPERATIONS} gets, puts and deletes, not atomic: each is authorised, rate-limited and answered on its own, in order.`,
    tags: ['data'],
    parameters: [consistencyHeader],
    requestBody: {
      required: true,
      content: { 'application/json': { schema: ref(idOf(BatchRequestSchema)) } },
    },
    ok: {
      200: jsonOf(BatchReplySchema, 'one result per operation, each with the status it alone would have had'),
    },
    errors: [...KEYED, 413, 415, 501],
  },
  {
    method: 'get',
    path: '/get',
    operationId: 'legacyGet',
    summary: "The original design's read: the value as POST /put took it.",
    tags: ['original design'],
    parameters: [keyQuery, consistencyHeader],
    ok: { 200: jsonOf(LegacyGetReplySchema, 'the key and its value') },
    errors: [...KEYED, 404, 413, 501],
  },
  {
    method: 'post',
    path: '/put',
    operationId: 'legacyPut',
    summary:
      "The original design's write: a string is stored as text/plain, any other JSON value as application/json.",
    tags: ['original design'],
    parameters: [consistencyHeader],
    requestBody: {
      required: true,
      content: { 'application/json': { schema: ref(idOf(LegacyPutBodySchema)) } },
    },
    ok: { 200: jsonOf(LegacySuccessSchema, 'written') },
    errors: [...KEYED, 413, 415, 501, 507],
  },
  {
    method: 'delete',
    path: '/delete',
    operationId: 'legacyDelete',
    summary: "The original design's delete.",
    tags: ['original design'],
    parameters: [keyQuery, consistencyHeader],
    ok: { 200: jsonOf(LegacySuccessSchema, 'deleted') },
    errors: [...KEYED, 413, 501, 507],
  },
  {
    method: 'get',
    path: '/v1/cluster',
    operationId: 'cluster',
    summary:
      "The gateway's view of the partition map: nodes, their status, the owners of each partition, moves.",
    tags: ['cluster'],
    ok: { 200: jsonOf(ClusterReplySchema, 'the cluster view') },
    errors: [401, 429, 500, 503],
  },
  {
    method: 'post',
    path: '/v1/admin/repair',
    operationId: 'startRepair',
    summary: 'Starts anti-entropy on every node, for all partitions or those given (admin keys only).',
    tags: ['admin'],
    parameters: [
      {
        name: 'partition',
        in: 'query',
        description: 'a partition to repair; repeat for more (default: all)',
        schema: { type: 'array', items: { type: 'integer', minimum: 0 } },
        style: 'form',
        explode: true,
      },
    ],
    ok: { 202: jsonOf(RepairReportSchema, 'started: each node with its progress or why it could not') },
    errors: [400, 401, 403, 429, 500, 503],
  },
  {
    method: 'get',
    path: '/v1/admin/repair',
    operationId: 'repairStatus',
    summary: "Each node's anti-entropy progress (admin keys only).",
    tags: ['admin'],
    ok: { 200: jsonOf(RepairReportSchema, 'every node with its progress or its error') },
    errors: [401, 403, 429, 500, 503],
  },
  {
    method: 'get',
    path: '/healthz',
    operationId: 'health',
    summary: 'The gateway process is up.',
    tags: ['health'],
    open: true,
    ok: { 200: jsonOf(HealthReplySchema, 'up') },
  },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'ready',
    summary: 'The gateway has a partition map and is not shutting down.',
    tags: ['health'],
    open: true,
    ok: {
      200: jsonOf(ReadyReplySchema, 'ready'),
      503: jsonOf(NotReadyReplySchema, 'not ready, and why'),
    },
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: "The gateway's Prometheus metrics.",
    tags: ['health'],
    open: true,
    ok: {
      200: {
        description: 'the Prometheus text format',
        content: { 'text/plain': { schema: { type: 'string' } } },
      },
    },
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This document.',
    tags: ['health'],
    open: true,
    ok: { 200: json({ type: 'object' }, 'the OpenAPI 3.1 document of this API') },
  },
];

/** The components every route refers to, as zod renders them (output: what the gateway answers). */
function componentSchemas(): JsonObject {
  // Every schema of rest-api.ts with an id is a component; the rest are inlined where used.
  const registry = z.registry<{ id: string }>();
  for (const value of Object.values(restApi)) {
    if (value instanceof z.ZodType && typeof value.meta()?.id === 'string')
      registry.add(value, { id: idOf(value) });
  }
  const { schemas } = z.toJSONSchema(registry, {
    target: 'draft-2020-12',
    io: 'output',
    uri: (id) => `#/components/schemas/${id}`,
  }) as { schemas: Record<string, JsonObject> };
  // zod puts what it cannot name (the recursive JSON value's inner schema) in a `__shared` entry: a
  // component that is only a reference to one of those takes its place, under the component's name.
  const { __shared: shared, ...named } = schemas;
  const defs = ((shared?.$defs ?? {}) as Record<string, JsonObject>) ?? {};
  const renames = new Map<string, string>();
  for (const [id, schema] of Object.entries(named)) {
    const target = typeof schema.$ref === 'string' ? /#\/\$defs\/(.+)$/.exec(schema.$ref)?.[1] : undefined;
    if (target !== undefined && defs[target] && !renames.has(target)) renames.set(target, id);
  }
  const sharedRef = (def: string): string => `#/components/schemas/__shared#/$defs/${def}`;
  const out: JsonObject = {};
  for (const [def, schema] of Object.entries(defs)) {
    if (!renames.has(def)) out[def] = schema;
  }
  for (const id of Object.keys(named)) {
    const { $ref, ...schema } = without(named[id] as JsonObject, '$schema', '$id');
    const inner = [...renames].find(([, to]) => to === id)?.[0];
    out[id] =
      inner === undefined
        ? { ...($ref === undefined ? {} : { $ref }), ...schema }
        : { ...schema, ...defs[inner] };
  }
  let text = JSON.stringify(Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b))));
  for (const def of Object.keys(defs)) {
    text = text
      .split(JSON.stringify(sharedRef(def)))
      .join(JSON.stringify(`#/components/schemas/${renames.get(def) ?? def}`));
  }
  if (text.includes('__shared')) throw new Error('a REST schema refers to one zod could not name');
  return JSON.parse(text) as JsonObject;
}

function operationOf(route: Route): JsonObject {
  const responses: JsonObject = {};
  for (const [status, answer] of Object.entries(route.ok)) responses[status] = answer;
  for (const status of route.errors ?? []) {
    const description = ERRORS[status];
    if (description === undefined) throw new Error(`no description of error status ${status}`);
    const headers: JsonObject | undefined =
      status === 429 || status === 503
        ? { 'Retry-After': { description: 'seconds', schema: { type: 'integer', minimum: 1 } } }
        : status === 405
          ? { Allow: { description: 'the methods of this route', schema: { type: 'string' } } }
          : undefined;
    responses[String(status)] = {
      ...json(ref('ErrorReply'), description),
      ...(headers ? { headers } : {}),
    };
  }
  const op: JsonObject = {
    operationId: route.operationId,
    summary: route.summary,
    tags: [...route.tags],
    ...(route.open ? { security: [] } : {}),
    ...(route.parameters ? { parameters: [...route.parameters] } : {}),
    ...(route.requestBody ? { requestBody: route.requestBody } : {}),
    responses,
  };
  return op;
}

/** The document; `version` is the release it describes. */
export function openApiDocument(version: string): JsonObject {
  const paths: JsonObject = {};
  for (const route of ROUTES) {
    const item = (paths[route.path] ?? {}) as JsonObject;
    item[route.method] = operationOf(route);
    paths[route.path] = item;
  }
  return {
    openapi: '3.1.1',
    info: {
      title: 'kvstore REST API',
      version,
      description:
        'The REST gateway of kvstore, a distributed key-value store. Every answer carries X-Request-Id and X-Kvstore (component/version); every error is ErrorReply. See docs/design.md, "Public API".',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    security: [{ apiKey: [] }],
    paths,
    components: {
      schemas: componentSchemas(),
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description: 'an API key (kvctl keys create), as Authorization: Bearer <token>',
        },
      },
    },
  };
}
