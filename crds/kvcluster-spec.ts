import { z } from 'zod';
import { KvError } from '../common/errors';
import { DEFAULT_READ_HEDGE_MS, MAX_READ_HEDGE_MS } from '../common/read-hedge';
import { DEFAULT_IMAGE } from '../common/version';
import { TS_TYPE_KEY } from './openapi';

/**
 * The KVCluster resource, defined once. The CRD's OpenAPI schema
 * (crds/kvcluster.yaml), the chart's values.schema.json and the client's types
 * (crds/kvcluster-types.ts) are generated from these zod schemas by
 * `npm run generate`; the operator parses with them. Descriptions become
 * `kubectl explain` text, defaults become API-server defaults, and each
 * cross-field rule is written once as both a zod check and a CEL rule, so the
 * API server and parseKVClusterSpec refuse the same specs.
 */

export const GROUP = 'kvstore.io';
export const VERSION = 'v1alpha1';
export const KIND = 'KVCluster';
export const PLURAL = 'kvclusters';
export const SINGULAR = 'kvcluster';
export const SHORT_NAMES: readonly string[] = ['kvc'];
export const API_VERSION = `${GROUP}/${VERSION}`;
/** The condition types the operator sets in status.conditions. */
export const CONDITION_TYPES = ['Ready', 'Rebalancing', 'Degraded'] as const;
export type KVClusterConditionType = (typeof CONDITION_TYPES)[number];

/**
 * The KVCluster's metadata.name names its StatefulSet, Services and ConfigMap, so it must be a DNS-1035
 * label (Service names are), short enough that `<name>-<suffix>` and the StatefulSet's pod labels
 * (`controller-revision-hash` = StatefulSet name + 11 characters, at most 63) stay valid.
 */
export const CLUSTER_NAME_MAX_LENGTH = 40;
export const CLUSTER_NAME_PATTERN = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
export const ClusterName = z
  .string()
  .max(CLUSTER_NAME_MAX_LENGTH)
  .regex(
    CLUSTER_NAME_PATTERN,
    'must be a DNS-1035 label: lower-case letters, digits and -, starting with a letter',
  )
  .describe(`Name of the KVCluster: a DNS-1035 label of at most ${CLUSTER_NAME_MAX_LENGTH} characters.`);

/** One CEL rule for the API server plus the same check in TypeScript for parseKVClusterSpec. */
interface CrossFieldRule<T> {
  /** CEL, evaluated by the API server with `self` bound to the object the rule sits on */
  readonly rule: string;
  readonly message: string;
  /** where the API server reports a failure, relative to the object (CEL `fieldPath`) */
  readonly fieldPath: string;
  /** the TypeScript equivalent of `rule` on the parsed (defaulted) value */
  readonly holds: (value: T) => boolean;
}

/** The `x-kubernetes-validations` entry the generator copies into the CRD. */
export interface CelValidation {
  readonly rule: string;
  readonly message: string;
  readonly fieldPath?: string;
  readonly reason?:
    'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

/** Attaches rules to an object schema: as zod checks (for parse) and as CEL in its metadata (for the CRD). */
function withRules<S extends z.ZodObject>(schema: S, rules: ReadonlyArray<CrossFieldRule<z.output<S>>>): S {
  const checked = schema.superRefine((value, ctx) => {
    for (const r of rules) {
      if (!r.holds(value))
        ctx.addIssue({ code: 'custom', message: r.message, path: r.fieldPath.split('.').slice(1) });
    }
  });
  const validations: CelValidation[] = rules.map((r) => ({
    rule: r.rule,
    message: r.message,
    fieldPath: r.fieldPath,
  }));
  return checked.meta({ 'x-kubernetes-validations': validations });
}

/**
 * Kubernetes' resource.Quantity grammar (the pattern controller-gen emits, without the sign: no
 * resource here can be negative), e.g. `1Gi`, `500m`, `2`.
 * RE2 (the API server) and JavaScript read it the same way.
 */
export const QUANTITY_PATTERN =
  /^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;

/**
 * A quantity as users write it in YAML: `cpu: 2` is an integer, `memory: 1Gi` a string (the API server
 * keeps either, as it does for core resources). Parsed to a string so the operator handles one type.
 */
const Quantity = z
  .union([
    z.int().min(0),
    z.string().regex(QUANTITY_PATTERN, 'must be a Kubernetes quantity such as 1Gi or 500m'),
  ])
  .transform((v) => String(v))
  .meta({ 'x-kubernetes-int-or-string': true });

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A reference to a Secret in the KVCluster's namespace. */
const SecretRef = z.object({
  name: z
    .string()
    .max(253)
    .regex(DNS_SUBDOMAIN, 'must be a Secret name (a DNS subdomain)')
    .describe("Name of the Secret in the cluster's namespace."),
});

/** Prometheus' duration grammar (what a ServiceMonitor's `interval` accepts). */
const PROMETHEUS_DURATION =
  /^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/;

const ResourceList = z
  .record(z.string(), Quantity)
  .describe("Resource name (cpu, memory, ...) to quantity, as in a container's resources.");

const ResourceRequirements = z
  .object({
    requests: ResourceList.optional().describe('Minimum resources the scheduler reserves.'),
    limits: ResourceList.optional().describe('Maximum resources the container may use.'),
  })
  .describe('Requests and limits for one container, as in a Pod spec.');

const RedisSpec = withRules(
  z
    .object({
      url: z
        .string()
        .regex(/^rediss?:\/\/\S+$/, 'must be a redis:// or rediss:// URL')
        .optional()
        .describe('An existing Redis (redis:// or rediss://) for the fast copy of the partition map.'),
      managed: z
        .boolean()
        .default(false)
        .describe(
          'Use the Redis the Helm chart deploys. Without url or managed, the map is read from its ConfigMap only.',
        ),
    })
    .describe('Where gateways and nodes get the partition map fast; the ConfigMap stays authoritative.'),
  [
    {
      rule: '!has(self.url) || !self.managed',
      message: 'redis.url and redis.managed=true are mutually exclusive',
      fieldPath: '.url',
      holds: (r) => r.url === undefined || !r.managed,
    },
  ],
);

/** The desired state of a cluster. Every field has a default or is optional, so `spec: {}` is a valid cluster. */
export const KVClusterSpec = withRules(
  z
    .object({
      replicas: z.int().min(1).max(64).default(3).describe('Number of storage nodes (StatefulSet replicas).'),
      replicationFactor: z
        .int()
        .min(1)
        .max(5)
        .default(3)
        .describe('Copies of every partition; must not exceed replicas. Quorum is floor(RF/2)+1.'),
      partitions: z
        .int()
        .min(1)
        .max(65535)
        .default(256)
        .describe('Number of partitions the key space is hashed into. Immutable once the cluster exists.'),
      image: z.string().min(1).default(DEFAULT_IMAGE).describe('Container image for nodes and gateways.'),
      imagePullPolicy: z
        .enum(['Always', 'IfNotPresent', 'Never'])
        .default('IfNotPresent')
        .describe('Image pull policy for nodes and gateways.'),
      storage: z
        .object({
          // prefault, not default: zod leaves a default off the JSON Schema of a transforming
          // schema (a default is output-typed), while a prefault is input and shows up.
          size: Quantity.prefault('1Gi').describe("Size of each node's PersistentVolumeClaim."),
          storageClassName: z
            .string()
            .optional()
            .describe('StorageClass of the node volumes; the cluster default when absent.'),
        })
        .prefault({})
        .describe('The PersistentVolume of each storage node.'),
      resources: z
        .object({
          node: ResourceRequirements.optional().describe('Resources of each storage node container.'),
          gateway: ResourceRequirements.optional().describe('Resources of each gateway container.'),
        })
        .prefault({})
        .describe('Container resources.'),
      gateway: z
        .object({
          replicas: z.int().min(0).max(32).default(2).describe('Number of gateway pods.'),
          port: z.int().min(1).max(65535).default(80).describe('Port of the gateway Service.'),
          serviceType: z
            .enum(['ClusterIP', 'NodePort', 'LoadBalancer'])
            .default('ClusterIP')
            .describe('Type of the gateway Service.'),
          tls: z
            .object({
              secretRef: SecretRef.describe(
                'A kubernetes.io/tls Secret (tls.crt, tls.key; what a cert-manager Certificate writes) in the cluster namespace.',
              ),
            })
            .optional()
            .describe(
              'Serve HTTPS with this certificate; a renewed certificate is picked up without a restart. Absent: plain HTTP.',
            ),
          rateLimit: z
            .object({
              perKey: z
                .int()
                .min(0)
                .max(1_000_000)
                .default(0)
                .describe('Requests per window per API key, counted across all gateways; 0: no limit.'),
              perAddress: z
                .int()
                .min(0)
                .max(1_000_000)
                .default(0)
                .describe(
                  'Requests per window per client address, counted across all gateways; 0: no limit.',
                ),
              windowSeconds: z.int().min(1).max(3600).default(1).describe('Length of the rate-limit window.'),
            })
            .prefault({})
            .describe(
              'Rate limits, shared through the Redis of spec.redis (each gateway limits alone when there is none or it is unreachable).',
            ),
          readHedgeMs: z
            .int()
            .min(0)
            .max(MAX_READ_HEDGE_MS)
            .default(DEFAULT_READ_HEDGE_MS)
            .describe(
              'A read still short of the answers its consistency level needs after this many milliseconds asks one more replica (again after as long), so a stalled node costs a read this much rather than the RPC timeout; 0: only when a replica fails.',
            ),
        })
        .prefault({})
        .describe('The REST gateway Deployment and Service.'),
      redis: RedisSpec.prefault({}),
      auth: withRules(
        z
          .object({
            secretRef: SecretRef.optional().describe(
              "A Secret of the gateway's API keys (key keys.json, made with `kvctl auth create-key`). Absent: the operator makes an admin key, in the Secret <name>-admin-token.",
            ),
            disabled: z
              .boolean()
              .default(false)
              .describe('Accept every request without an API key. Only for clusters no one else can reach.'),
          })
          .describe('Gateway authentication: bearer API keys, on unless disabled is set.'),
        [
          {
            rule: '!(has(self.secretRef) && self.disabled)',
            message: 'auth.secretRef and auth.disabled=true are mutually exclusive',
            fieldPath: '.disabled',
            holds: (a) => !(a.secretRef !== undefined && a.disabled),
          },
        ],
      ).prefault({}),
      // Kubernetes' own types, passed through to the pod spec: validating them
      // here would copy a large schema that the API server checks anyway when
      // the operator creates the pods.
      affinity: z
        .record(z.string(), z.unknown())
        .optional()
        .meta({ 'x-kubernetes-preserve-unknown-fields': true, [TS_TYPE_KEY]: 'V1Affinity' })
        .describe('Affinity of the storage node pods, as in a Pod spec (passed through unchanged).'),
      topologySpreadConstraints: z
        .array(
          z.record(z.string(), z.unknown()).meta({
            'x-kubernetes-preserve-unknown-fields': true,
            [TS_TYPE_KEY]: 'V1TopologySpreadConstraint',
          }),
        )
        .optional()
        .describe('Topology spread constraints of the storage node pods, as in a Pod spec (passed through).'),
      monitoring: z
        .object({
          serviceMonitor: z
            .object({
              enabled: z
                .boolean()
                .default(false)
                .describe('Create a Prometheus Operator ServiceMonitor (where that CRD exists).'),
              interval: z
                .string()
                .regex(PROMETHEUS_DURATION, 'must be a Prometheus duration such as 30s or 1m')
                .default('30s')
                .describe('Scrape interval.'),
            })
            .prefault({})
            .describe('The ServiceMonitor that tells a Prometheus Operator to scrape nodes and gateways.'),
        })
        .prefault({})
        .describe('Prometheus scraping.'),
      deletionPolicy: z
        .enum(['Retain', 'Delete'])
        .default('Retain')
        .describe(
          'What happens to the node volumes when the KVCluster is deleted: kept (Retain) or deleted.',
        ),
      logLevel: z
        .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
        .default('info')
        .describe('Log level of nodes and gateways (LOG_LEVEL).'),
    })
    .describe('Desired state of the cluster.'),
  [
    {
      rule: 'self.replicationFactor <= self.replicas',
      message: 'replicationFactor must not exceed replicas',
      fieldPath: '.replicationFactor',
      holds: (s) => s.replicationFactor <= s.replicas,
    },
  ],
);

/**
 * Rules that compare an updated spec with the stored one. CEL transition rules
 * on `spec` in the CRD; checkKVClusterSpecUpdate in TypeScript.
 */
export const SPEC_TRANSITION_RULES: ReadonlyArray<CelValidation> = [
  {
    rule: 'self.partitions == oldSelf.partitions',
    message: 'partitions is immutable',
    fieldPath: '.partitions',
    reason: 'FieldValueForbidden',
  },
];

const Condition = z
  .object({
    type: z
      .string()
      .max(316)
      .regex(
        /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/,
      )
      .describe('Ready, Rebalancing or Degraded.'),
    status: z.enum(['True', 'False', 'Unknown']),
    reason: z
      .string()
      .min(1)
      .max(1024)
      .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
      .describe('CamelCase reason for the last transition.'),
    message: z.string().max(32768).describe('Human-readable detail.'),
    lastTransitionTime: z
      .string()
      .meta({ format: 'date-time' })
      .describe('When status last changed (RFC 3339).'),
    observedGeneration: z
      .int()
      .min(0)
      .optional()
      .meta({ format: 'int64' })
      .describe('Generation the condition describes.'),
  })
  .describe('A metav1.Condition.');

/** Observed state, written by the operator only (status subresource). */
export const KVClusterStatus = z
  .object({
    observedGeneration: z
      .int()
      .min(0)
      .optional()
      .meta({ format: 'int64' })
      .describe('The metadata.generation this status describes.'),
    phase: z
      .enum(['Pending', 'Creating', 'Running', 'Rebalancing', 'Degraded', 'Deleting'])
      .optional()
      .describe('One-word summary: Pending, Creating, Running, Rebalancing, Degraded or Deleting.'),
    replicas: z
      .int()
      .min(0)
      .optional()
      .describe("Storage nodes that exist (the scale subresource's status replicas)."),
    readyReplicas: z.int().min(0).optional().describe('Storage nodes that are ready.'),
    selector: z
      .string()
      .optional()
      .describe('Label selector of the storage node pods (for the scale subresource).'),
    mapEpoch: z
      .int()
      .min(0)
      .optional()
      .meta({ format: 'int64' })
      .describe('Epoch of the partition map in force.'),
    partitionsMoving: z.int().min(0).optional().describe('Partitions being moved by a rebalance.'),
    rebalance: z
      .object({
        movesTotal: z.int().min(0).describe('Partition moves in the plan.'),
        movesDone: z.int().min(0).describe('Moves finished.'),
        targetReplicas: z.int().min(0).describe('Node count the rebalance leads to.'),
      })
      .optional()
      .describe('Progress of the rebalance under way, absent when none is.'),
    conditions: z
      .array(Condition)
      .optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] })
      .describe('Ready, Rebalancing and Degraded.'),
  })
  .describe('Observed state of the cluster, written by the operator.');

export type KVClusterSpec = z.output<typeof KVClusterSpec>;
/** A spec as written by a user: every field optional. */
export type KVClusterSpecInput = z.input<typeof KVClusterSpec>;
export type KVClusterStatus = z.output<typeof KVClusterStatus>;
export type KVClusterCondition = z.output<typeof Condition>;
export type KVClusterPhase = NonNullable<KVClusterStatus['phase']>;

/** One refused field: `field` is the path users see in the API server's messages, e.g. `spec.gateway.replicas`. */
export interface SpecIssue {
  readonly field: string;
  readonly message: string;
}

/** A KVCluster spec that the schema refuses; `field` names the first bad field. */
export class InvalidKVClusterSpecError extends KvError {
  readonly field: string;
  readonly issues: readonly SpecIssue[];

  constructor(issues: readonly SpecIssue[]) {
    const first = issues[0] ?? { field: 'spec', message: 'invalid' };
    super('invalid_spec', `invalid KVCluster ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`, {
      field: first.field,
      issues,
    });
    this.field = first.field;
    this.issues = issues;
  }
}

function fieldPath(path: readonly PropertyKey[]): string {
  let out = 'spec';
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : `.${String(key)}`;
  return out;
}

/**
 * The operator's second line of defence after the API server's validation:
 * the spec with every default applied, or InvalidKVClusterSpecError naming the
 * bad fields. An absent spec (null or undefined) is the all-defaults spec, as
 * the CRD's `default: {}` makes it on the server.
 */
export function parseKVClusterSpec(input: unknown): KVClusterSpec {
  const result = KVClusterSpec.safeParse(input ?? {});
  if (result.success) return result.data;
  throw new InvalidKVClusterSpecError(
    result.error.issues.map((issue) => ({ field: fieldPath(issue.path), message: issue.message })),
  );
}

/** The TypeScript side of SPEC_TRANSITION_RULES: throws when an update changes an immutable field. */
export function checkKVClusterSpecUpdate(oldSpec: KVClusterSpec, newSpec: KVClusterSpec): void {
  if (oldSpec.partitions !== newSpec.partitions) {
    throw new InvalidKVClusterSpecError([
      {
        field: 'spec.partitions',
        message: `partitions is immutable (was ${oldSpec.partitions}, now ${newSpec.partitions})`,
      },
    ]);
  }
}
