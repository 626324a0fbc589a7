import { z } from 'zod';

/**
 * The public REST API's bodies, defined once (docs/design.md, "Public API"): the gateway validates
 * what it is sent with these schemas and types what it answers from them, the client parses every
 * reply with them, and `npm run generate` writes docs/openapi.json from them (common/openapi.ts),
 * which the gateway also serves at GET /openapi.json. The TypeScript types are inferred, readonly.
 */

/** What z.infer gives, readonly all the way down: replies are built once and passed around. */
export type DeepReadonly<T> = T extends (infer E)[]
  ? readonly DeepReadonly<E>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

/** Every `error.code` the gateway can answer with; the HTTP status says which kind of failure it is. */
export const API_ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'method_not_allowed',
  'payload_too_large',
  'unsupported_media_type',
  'rate_limited',
  'unavailable',
  'not_ready',
  'not_implemented',
  'insufficient_storage',
  'overloaded',
  'internal',
] as const;
export const ApiErrorCodeSchema = z.enum(API_ERROR_CODES);
export type ApiErrorCode = z.infer<typeof ApiErrorCodeSchema>;

export const ErrorReplySchema = z
  .object({
    error: z.object({ code: ApiErrorCodeSchema, message: z.string() }),
  })
  .meta({ id: 'ErrorReply', description: 'Every error of every route: a code and a message for people.' });
export type ErrorReply = DeepReadonly<z.infer<typeof ErrorReplySchema>>;

const count = z.int().min(0);
/** ms since the Unix epoch */
const timestamp = z.int().min(0).meta({ description: 'ms since the Unix epoch' });

/** A record's version as the gateway writes it (common/hlc.ts formatVersion): wall.logical.writer. */
export const VersionSchema = z
  .string()
  .regex(/^\d{1,16}\.\d{1,10}\..+$/)
  .meta({
    id: 'Version',
    description: 'wall-clock ms, logical counter and writer id; also the ETag of GET /v1/kv/{key}',
  });

// ---- data routes ----

/** PUT and DELETE /v1/kv/{key}: the key and the version it was written at. */
export const WriteReplySchema = z
  .object({ key: z.string(), version: VersionSchema })
  .meta({ id: 'WriteReply' });
export type WriteReply = DeepReadonly<z.infer<typeof WriteReplySchema>>;

/** The original design's POST /put and DELETE /delete. */
export const LegacySuccessSchema = z.object({ success: z.literal(true) }).meta({ id: 'LegacySuccess' });

/** Any JSON value: what the original design's routes store and give back. */
export const JsonValueSchema = z
  .json({ error: 'is required: any JSON value' })
  .meta({ id: 'JsonValue', description: 'any JSON value' });

/** The original design's POST /put body: any JSON value (a string is stored as text, the rest as JSON). */
export const LegacyPutBodySchema = z
  .strictObject(
    {
      key: z.string({ error: 'key must be a single string' }).min(1, { error: 'key must not be empty' }),
      value: JsonValueSchema,
    },
    {
      error: (issue) =>
        issue.code === 'unrecognized_keys'
          ? `unknown field ${JSON.stringify(issue.keys[0])}: the body is { "key", "value" }`
          : issue.code === 'invalid_type' && issue.expected === 'object'
            ? 'body must be a JSON object { "key": string, "value": any JSON value }'
            : undefined,
    },
  )
  .meta({ id: 'LegacyPutBody' });

/** The original design's GET /get: the value as POST /put took it (JSON given back parsed). */
export const LegacyGetReplySchema = z
  .object({ key: z.string(), value: JsonValueSchema })
  .meta({ id: 'LegacyGetReply' });

// ---- listing ----

export const DEFAULT_LIST_LIMIT = 1000;
export const MAX_LIST_LIMIT = 10_000;
/** A cursor is opaque to clients: a version tag and the page's last key in base64url. */
export const CURSOR_TAG = 'k1.';
const LIMIT_MESSAGE = `limit must be a whole number from 1 to ${MAX_LIST_LIMIT}`;

/** GET /v1/kv's query, from each parameter's text (the gateway checks ranges and cursors beyond this). */
export const ListQuerySchema = z.strictObject(
  {
    prefix: z
      .string({ error: 'prefix must be given once' })
      .optional()
      .meta({ description: 'list the keys starting with these bytes (UTF-8); not with start or end' }),
    start: z
      .string({ error: 'start must be given once' })
      .optional()
      .meta({ description: 'first key of a half-open range [start, end) in byte order' }),
    end: z
      .string({ error: 'end must be given once' })
      .min(1, { error: 'end must not be empty' })
      .optional()
      .meta({ description: 'the key after the range; must come after start' }),
    limit: z
      .string({ error: 'limit must be given once' })
      .regex(/^\d{1,6}$/, { error: LIMIT_MESSAGE })
      .transform(Number)
      .pipe(z.int().min(1, { error: LIMIT_MESSAGE }).max(MAX_LIST_LIMIT, { error: LIMIT_MESSAGE }))
      .optional()
      .meta({ description: `entries per page (default ${DEFAULT_LIST_LIMIT})` }),
    cursor: z
      .string({ error: 'cursor must be given once' })
      .regex(/^k1\.[A-Za-z0-9_-]+$/, { error: 'cursor is not one this API gave out' })
      .optional()
      .meta({ description: 'the cursor of the page before, to go on from it' }),
    keys_only: z
      .enum(['true', 'false', ''], { error: 'keys_only must be true or false' })
      .transform((v) => v !== 'false')
      .pipe(z.boolean())
      .optional()
      .meta({ description: 'keys and versions only, no values (`?keys_only` alone means true)' }),
  },
  {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown query parameter ${JSON.stringify(issue.keys[0])}; use prefix, start, end, limit, cursor, keys_only`
        : undefined,
  },
);
export type ListQuery = z.output<typeof ListQuerySchema>;

export const ListEntryReplySchema = z
  .object({
    key: z.string(),
    version: VersionSchema,
    value: z.base64().optional().meta({ description: 'the value in base64; absent with keys_only' }),
    contentType: z.string().optional().meta({ description: 'absent with keys_only' }),
  })
  .meta({ id: 'ListEntry' });
export type ListEntryReply = DeepReadonly<z.infer<typeof ListEntryReplySchema>>;

export const ListReplySchema = z
  .object({
    items: z.array(ListEntryReplySchema),
    cursor: z
      .string()
      .optional()
      .meta({ description: 'present while the listing goes on: pass it back for the next page' }),
  })
  .meta({ id: 'ListReply', description: 'A page of a listing, in key byte order.' });
export type ListReply = DeepReadonly<z.infer<typeof ListReplySchema>>;

// ---- batches ----

/** Operations one batch may carry. */
export const MAX_BATCH_OPERATIONS = 1000;
/** Ten years: anything longer is almost certainly a unit mistake (ms for s). */
export const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

const batchKey = z
  .string({ error: 'key must be a single string' })
  .min(1, { error: 'key must not be empty' });
const unknownField =
  (op: string) =>
  (issue: { code: string; keys?: string[] }): string | undefined =>
    issue.code === 'unrecognized_keys'
      ? `unknown field ${JSON.stringify(issue.keys?.[0])} for ${op}`
      : undefined;

export const BatchOperationSchema = z
  .discriminatedUnion(
    'op',
    [
      z.strictObject({ op: z.literal('get'), key: batchKey }, { error: unknownField('get') }),
      z.strictObject(
        {
          op: z.literal('put'),
          key: batchKey,
          value: z.base64({ error: 'value must be the value bytes in base64' }),
          ttl: z
            .int({ error: `ttl must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}` })
            .min(1, { error: `ttl must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}` })
            .max(MAX_TTL_SECONDS, {
              error: `ttl must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}`,
            })
            .optional()
            .meta({ description: 'seconds until the value expires' }),
          contentType: z.string({ error: 'contentType must be a string' }).optional().meta({
            description: 'a media type, returned with the value (default application/octet-stream)',
          }),
        },
        { error: unknownField('put') },
      ),
      z.strictObject({ op: z.literal('delete'), key: batchKey }, { error: unknownField('delete') }),
    ],
    { error: 'must be an object { "op": "get" | "put" | "delete", "key", ... }' },
  )
  .meta({ id: 'BatchOperation' });
export type BatchOperation = z.infer<typeof BatchOperationSchema>;

const operationsCount = (list: z.ZodType) =>
  z
    .array(list, { error: 'operations must be a non-empty array' })
    .min(1, { error: 'operations must be a non-empty array' })
    .max(MAX_BATCH_OPERATIONS, {
      error: (issue) =>
        `a batch carries at most ${MAX_BATCH_OPERATIONS} operations, this one ${(issue.input as unknown[]).length}`,
    });
const batchOf = <T extends z.ZodType>(operation: T) =>
  z.strictObject(
    { operations: operationsCount(operation) },
    {
      error: (issue) =>
        issue.code === 'unrecognized_keys'
          ? `unknown field ${JSON.stringify(issue.keys[0])} in the batch`
          : 'body must be a JSON object { "operations": [...] }',
    },
  );

/** A batch as the gateway first reads it: each operation is then checked on its own (its own 400). */
export const BatchEnvelopeSchema = batchOf(z.unknown());

export const BatchRequestSchema = batchOf(BatchOperationSchema).meta({
  id: 'BatchRequest',
  description: `Up to ${MAX_BATCH_OPERATIONS} operations, run one by one (not atomic), answered in order.`,
});

export const BatchResultReplySchema = z
  .object({
    status: z
      .int()
      .min(100)
      .max(599)
      .meta({ description: 'the HTTP status the operation alone would have had' }),
    key: z.string().optional(),
    version: VersionSchema.optional(),
    value: z.base64().optional().meta({ description: "a get's value, base64" }),
    contentType: z.string().optional(),
    error: ErrorReplySchema.shape.error.optional(),
  })
  .meta({ id: 'BatchResult' });
export type BatchResultReply = DeepReadonly<z.infer<typeof BatchResultReplySchema>>;

export const BatchReplySchema = z
  .object({ results: z.array(BatchResultReplySchema) })
  .meta({ id: 'BatchReply', description: 'One result per operation, at its index.' });
export type BatchReply = DeepReadonly<z.infer<typeof BatchReplySchema>>;

// ---- health ----

export const HealthReplySchema = z.object({ status: z.literal('ok') }).meta({ id: 'HealthReply' });
export const ReadyReplySchema = z
  .object({ status: z.literal('ready'), epoch: count })
  .meta({ id: 'ReadyReply', description: 'the epoch of the partition map the gateway routes by' });
export const NotReadyReplySchema = z
  .object({ status: z.literal('not ready'), reason: z.string() })
  .meta({ id: 'NotReadyReply' });

// ---- the cluster view ----

export const NodeStatusSchema = z.enum(['up', 'down', 'unknown']);

export const ClusterNodeSchema = z
  .object({
    id: z.string(),
    address: z.string(),
    zone: z.string().optional(),
    status: NodeStatusSchema.meta({
      description: "as the gateway last saw it; 'unknown' until it has talked to the node",
    }),
    partitions: count.meta({ description: 'partition replicas this node holds' }),
  })
  .meta({ id: 'ClusterNode' });
export type ClusterNode = DeepReadonly<z.infer<typeof ClusterNodeSchema>>;

export const ClusterMoveSchema = z
  .object({ partition: count, from: z.string(), to: z.string() })
  .meta({ id: 'ClusterMove' });
export type ClusterMove = DeepReadonly<z.infer<typeof ClusterMoveSchema>>;

export const ClusterRebalanceSchema = z
  .object({
    targetNodes: z
      .array(z.string())
      .meta({ description: 'node ids the cluster is moving to; nodes listed but not here are drained' }),
    movesTotal: count.meta({ description: 'moves in the plan when it was made' }),
    startedAt: timestamp,
  })
  .meta({ id: 'ClusterRebalance', description: 'The plan of a rebalance under way.' });
export type ClusterRebalance = DeepReadonly<z.infer<typeof ClusterRebalanceSchema>>;

/** GET /v1/cluster: the gateway's view of the partition map. */
export const ClusterReplySchema = z
  .object({
    cluster: z.string(),
    epoch: count,
    partitionCount: count,
    replicationFactor: count,
    nodes: z.array(ClusterNodeSchema),
    partitions: z
      .array(z.array(z.string()))
      .meta({ description: 'partitions[p] lists the ids of the nodes holding partition p' }),
    moves: z.array(ClusterMoveSchema),
    rebalance: ClusterRebalanceSchema.nullable()
      .optional()
      .meta({ description: 'null unless a rebalance is under way (absent from gateways older than it)' }),
  })
  .meta({ id: 'ClusterReply' });
export type ClusterReply = DeepReadonly<z.infer<typeof ClusterReplySchema>>;

/** The cluster view as the client returns it: no rebalance, no field. */
export type ClusterInfo = Omit<ClusterReply, 'rebalance'> & { readonly rebalance?: ClusterRebalance };

// ---- repair and rebalancing progress ----

export const IncomingMoveStateSchema = z.enum(['streaming', 'syncing', 'ready']);
export type IncomingMoveState = z.infer<typeof IncomingMoveStateSchema>;

/** A move filling a partition on a node, as that node reports it (relayed by the gateway). */
export const IncomingMoveSchema = z
  .object({
    partition: count,
    from: z.string(),
    state: IncomingMoveStateSchema,
    keys: count.meta({ description: 'records copied by this move so far' }),
    bytes: count,
    error: z.string().optional().meta({ description: 'last failure talking to the source, while it lasts' }),
  })
  .meta({ id: 'IncomingMove' });
export type IncomingMove = DeepReadonly<z.infer<typeof IncomingMoveSchema>>;

/** One node's anti-entropy progress, as that node reports it. */
export const RepairProgressSchema = z
  .object({
    running: z.boolean(),
    partitionsTotal: count,
    partitionsDone: count,
    keysRepaired: count,
    lastFullRepairAt: timestamp.meta({ description: 'ms since the epoch; 0 when no pass has finished' }),
    partitionsFailed: count.optional(),
    refilling: z.boolean().optional(),
  })
  .meta({ id: 'RepairProgress' });
export type RepairProgress = DeepReadonly<z.infer<typeof RepairProgressSchema>>;

export const NodeRepairReportSchema = z
  .object({
    id: z.string(),
    address: z.string(),
    ready: z.boolean().optional().meta({ description: 'serves reads (false while refilling)' }),
    keys: count.optional().meta({ description: "records on the node's disk, tombstones included" }),
    bytes: count.optional(),
    hints: count.optional(),
    repair: RepairProgressSchema.optional(),
    incoming: z.array(IncomingMoveSchema).optional(),
    streamedKeys: count.optional(),
    streamedBytes: count.optional(),
    error: z
      .object({ code: z.string(), message: z.string() })
      .optional()
      .meta({ description: 'the node could not be asked' }),
  })
  .meta({ id: 'NodeRepairReport' });
export type NodeRepairReport = DeepReadonly<z.infer<typeof NodeRepairReportSchema>>;

/** POST and GET /v1/admin/repair: every node of the map, each with its progress or its error. */
export const RepairReportSchema = z
  .object({
    epoch: count,
    partitions: z.array(count).optional().meta({ description: 'the partitions asked for; absent: all' }),
    nodes: z.array(NodeRepairReportSchema),
  })
  .meta({ id: 'RepairReport' });
export type RepairReport = DeepReadonly<z.infer<typeof RepairReportSchema>>;

/** One move of a rebalance; `waiting`: its receiving node has not reported it yet. */
export const RebalanceMoveStatusSchema = z.object({
  partition: count,
  from: z.string(),
  to: z.string(),
  state: z.enum(['waiting', 'streaming', 'syncing', 'ready']),
  keys: count,
  bytes: count,
  error: z.string().optional(),
});
export type RebalanceMoveStatus = DeepReadonly<z.infer<typeof RebalanceMoveStatusSchema>>;

/** Where a rebalance stands (GET /v1/admin/rebalance on the local launcher, not the gateway). */
export const RebalanceStatusSchema = z.object({
  epoch: count,
  active: z.boolean(),
  targetNodes: z.array(z.string()),
  drainingNodes: z.array(z.string()),
  movesTotal: count,
  movesDone: count,
  movesLeft: count,
  keysInFlight: count,
  bytesInFlight: count,
  keysStreamed: count,
  bytesStreamed: count,
  startedAt: timestamp.optional(),
  moves: z.array(RebalanceMoveStatusSchema),
});
export type RebalanceStatus = DeepReadonly<z.infer<typeof RebalanceStatusSchema>>;

/** POST /v1/admin/scale on the local launcher: the rebalance as planned, and the nodes started for it. */
export const ScaleResultSchema = RebalanceStatusSchema.extend({ addedNodes: z.array(z.string()) });
export type ScaleResult = DeepReadonly<z.infer<typeof ScaleResultSchema>>;

/** The first problem zod found, as one line naming where (`nodes.0.status: Invalid option`) unless `named` is false. */
export function firstIssue(error: z.ZodError, named = true): string {
  // An unknown field first: a misspelt name explains the issues that follow from it.
  const issue = error.issues.find((i) => i.code === 'unrecognized_keys') ?? error.issues[0];
  if (!issue) return 'invalid';
  const at = issue.path.map(String).join('.');
  return at === '' || !named ? issue.message : `${at}: ${issue.message}`;
}
