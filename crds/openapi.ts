import { z } from 'zod';

/**
 * From zod 4's JSON Schema to the two dialects we publish: the structural
 * OpenAPI v3 subset a CustomResourceDefinition accepts, and the draft-07 JSON
 * Schema Helm checks values against. Anything the API server would refuse
 * (a $ref, a node without a type, a general union) makes the generator throw,
 * so a schema change that cannot be expressed fails at `npm run generate`, not
 * at `kubectl apply`.
 */

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** A zod-side hint for the client generator: the @kubernetes/client-node type of an opaque field. */
export const TS_TYPE_KEY = 'x-kvstore-ts-type';

/** zod's bounds for a bare z.int(): noise in a CRD, where int64 is the default range. */
const SAFE_INT_BOUNDS = new Set([Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]);

/** What apiextensions.k8s.io/v1 JSONSchemaProps knows and a structural schema allows outside anyOf. */
const STRUCTURAL_KEYS = new Set([
  'description',
  'type',
  'format',
  'enum',
  'default',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'pattern',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
  'items',
  'properties',
  'required',
  'additionalProperties',
  'anyOf',
  'nullable',
  'x-kubernetes-validations',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-int-or-string',
  'x-kubernetes-list-type',
  'x-kubernetes-list-map-keys',
  'x-kubernetes-map-type',
  'x-kubernetes-embedded-resource',
]);

/** Key order of the emitted schemas: what a reader looks for first, children last. */
const KEY_ORDER = [
  '$schema',
  '$comment',
  'description',
  'type',
  'format',
  'enum',
  'default',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'pattern',
  'minItems',
  'maxItems',
  'anyOf',
  'x-kubernetes-int-or-string',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-list-type',
  'x-kubernetes-list-map-keys',
  'required',
  'additionalProperties',
  'items',
  'properties',
  'x-kubernetes-validations',
];

export class SchemaConversionError extends Error {
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'SchemaConversionError';
  }
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** zod's JSON Schema for the shape users write: defaulted fields optional, transforms seen from their input. */
function zodInputSchema(schema: z.ZodType, target: 'openapi-3.0' | 'draft-07'): JsonObject {
  // reused: 'inline' because a CRD cannot hold $ref; cycles would need $ref too, so they throw.
  const json = z.toJSONSchema(schema, {
    io: 'input',
    target,
    reused: 'inline',
    cycles: 'throw',
    unrepresentable: 'throw',
  });
  // JSON.parse(JSON.stringify(...)) drops undefined members and gives a plain JsonObject to rewrite freely.
  return JSON.parse(JSON.stringify(json)) as JsonObject;
}

function ordered(node: JsonObject): JsonObject {
  const rank = (key: string): number => {
    const i = KEY_ORDER.indexOf(key);
    return i === -1 ? KEY_ORDER.length : i;
  };
  const keys = Object.keys(node).sort(
    (a, b) => rank(a) - rank(b) || (rank(a) === KEY_ORDER.length ? a.localeCompare(b) : 0),
  );
  const out: JsonObject = {};
  for (const key of keys) out[key] = node[key] as JsonValue;
  return out;
}

function dropSafeIntBounds(node: JsonObject): void {
  for (const key of ['minimum', 'maximum']) {
    const value = node[key];
    if (typeof value === 'number' && SAFE_INT_BOUNDS.has(value)) delete node[key];
  }
}

/** The string branch's pattern of zod's anyOf for an int-or-string union. */
function intOrStringParts(node: JsonObject, where: string): { pattern?: string; minimum?: number } {
  const branches = node.anyOf;
  if (!Array.isArray(branches) || branches.length !== 2)
    throw new SchemaConversionError(
      where,
      'x-kubernetes-int-or-string needs a union of an integer and a string',
    );
  const integer = branches.find((b) => isObject(b) && b.type === 'integer');
  const string = branches.find((b) => isObject(b) && b.type === 'string');
  if (!isObject(integer) || !isObject(string))
    throw new SchemaConversionError(
      where,
      'x-kubernetes-int-or-string needs a union of an integer and a string',
    );
  const parts: { pattern?: string; minimum?: number } = {};
  if (typeof string.pattern === 'string') parts.pattern = string.pattern;
  if (typeof integer.minimum === 'number' && !SAFE_INT_BOUNDS.has(integer.minimum))
    parts.minimum = integer.minimum;
  return parts;
}

interface StructuralOptions {
  /** keep TS_TYPE_KEY hints, for the client generator (the CRD itself must not carry them) */
  readonly keepTypeHints: boolean;
}

function toStructuralNode(input: JsonObject, where: string, opts: StructuralOptions): JsonObject {
  const node: JsonObject = { ...input };
  if ('$ref' in node) throw new SchemaConversionError(where, '$ref is not allowed in a CRD schema');
  delete node.$schema;
  delete node.$comment;
  delete node.propertyNames; // z.record's key schema: CRDs have no such keyword, and our keys are any string
  if (!opts.keepTypeHints) delete node[TS_TYPE_KEY];
  dropSafeIntBounds(node);

  if (node['x-kubernetes-int-or-string'] === true) {
    // The one anyOf a structural schema allows with types inside, exactly as controller-gen writes
    // resource.Quantity; the string branch's pattern moves up (it only applies to strings).
    const { pattern, minimum } = intOrStringParts(node, where);
    delete node.type;
    node.anyOf = [{ type: 'integer' }, { type: 'string' }];
    if (pattern !== undefined) node.pattern = pattern;
    if (minimum !== undefined) node.minimum = minimum;
  } else if ('anyOf' in node || 'oneOf' in node || 'allOf' in node || 'not' in node) {
    throw new SchemaConversionError(
      where,
      'unions are not structural: use an object with optional fields instead',
    );
  }

  if (node['x-kubernetes-preserve-unknown-fields'] === true) {
    // z.record(z.string(), z.unknown()) says additionalProperties: {}; the extension says it for Kubernetes.
    delete node.additionalProperties;
  }
  if (node.additionalProperties === false) delete node.additionalProperties; // pruning does this job
  if (isObject(node.additionalProperties)) {
    if ('properties' in node)
      throw new SchemaConversionError(where, 'properties and additionalProperties both set');
    node.additionalProperties = toStructuralNode(node.additionalProperties, `${where}.*`, opts);
  }
  if (isObject(node.properties)) {
    const props: JsonObject = {};
    for (const [key, value] of Object.entries(node.properties)) {
      if (!isObject(value)) throw new SchemaConversionError(`${where}.${key}`, 'expected a schema');
      props[key] = toStructuralNode(value, `${where}.${key}`, opts);
    }
    node.properties = props;
  }
  if ('items' in node) {
    if (!isObject(node.items)) throw new SchemaConversionError(where, 'items must be one schema (no tuples)');
    node.items = toStructuralNode(node.items, `${where}[]`, opts);
  }

  for (const key of Object.keys(node)) {
    if (!STRUCTURAL_KEYS.has(key) && key !== TS_TYPE_KEY)
      throw new SchemaConversionError(where, `keyword ${key} is not allowed in a CRD schema`);
  }
  const typed =
    typeof node.type === 'string' ||
    node['x-kubernetes-int-or-string'] === true ||
    node['x-kubernetes-preserve-unknown-fields'] === true;
  if (!typed) throw new SchemaConversionError(where, 'every node of a structural schema needs a type');
  return ordered(node);
}

/** The structural OpenAPI v3 schema of a zod schema, for a CRD version's openAPIV3Schema. */
export function toStructuralSchema(
  schema: z.ZodType,
  where = 'schema',
  opts: StructuralOptions = { keepTypeHints: false },
): JsonObject {
  return toStructuralNode(zodInputSchema(schema, 'openapi-3.0'), where, opts);
}

function toValuesNode(input: JsonObject): JsonObject {
  const node: JsonObject = {};
  for (const [key, value] of Object.entries(input)) {
    // CEL and the other Kubernetes extensions mean nothing to Helm's validator: the API server enforces
    // them when the chart's KVCluster is applied, with the same messages.
    if (key.startsWith('x-') || key === '$schema' || key === 'propertyNames') continue;
    node[key] = value;
  }
  dropSafeIntBounds(node);
  const preserveUnknown = input['x-kubernetes-preserve-unknown-fields'] === true;
  if (
    preserveUnknown &&
    isObject(node.additionalProperties) &&
    Object.keys(node.additionalProperties).length === 0
  )
    delete node.additionalProperties; // {} = anything, which is JSON Schema's default anyway
  if (isObject(node.properties)) {
    const props: JsonObject = {};
    for (const [key, value] of Object.entries(node.properties))
      if (isObject(value)) props[key] = toValuesNode(value);
    node.properties = props;
    // A misspelt key in values.yaml would otherwise vanish silently; the API server would prune it too.
    if (!preserveUnknown) node.additionalProperties = false;
  } else if (isObject(node.additionalProperties)) {
    node.additionalProperties = toValuesNode(node.additionalProperties);
  }
  if (isObject(node.items)) node.items = toValuesNode(node.items);
  if (Array.isArray(node.anyOf)) node.anyOf = node.anyOf.map((b) => (isObject(b) ? toValuesNode(b) : b));
  return ordered(node);
}

/** A draft-07 JSON Schema of a zod schema, for Helm's values.schema.json. */
export function toValuesSchema(schema: z.ZodType): JsonObject {
  return toValuesNode(zodInputSchema(schema, 'draft-07'));
}
