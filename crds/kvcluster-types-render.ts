import {
  API_VERSION,
  GROUP,
  KIND,
  KVClusterSpec,
  KVClusterStatus,
  PLURAL,
  SHORT_NAMES,
  VERSION,
} from './kvcluster-spec';
import { SchemaConversionError, TS_TYPE_KEY, toStructuralSchema, type JsonObject } from './openapi';

/**
 * crds/kvcluster-types.ts, written from the same structural schema the CRD
 * carries, so TypeScript users of the KVCluster resource get types that say
 * exactly what the API server stores and returns. Generated source, not a
 * re-export of the zod types, so the file needs only @kubernetes/client-node's
 * types and can ship without zod or the operator.
 */

/** `read`: as the API server returns it (defaults filled in); `write`: as a user may send it. */
type Mode = 'read' | 'write';

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function docComment(node: JsonObject, indent: string): string {
  const lines: string[] = [];
  if (typeof node.description === 'string') lines.push(node.description);
  if (node.default !== undefined) lines.push(`@default ${JSON.stringify(node.default)}`);
  if (lines.length === 0) return '';
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} * ${l}`).join('\n')}\n${indent} */\n`;
}

class TypePrinter {
  /** @kubernetes/client-node types the output refers to */
  readonly imports = new Set<string>();

  type(node: JsonObject, mode: Mode, indent: string, where: string): string {
    const hint = node[TS_TYPE_KEY];
    if (typeof hint === 'string') {
      this.imports.add(hint);
      return hint;
    }
    if (node['x-kubernetes-int-or-string'] === true) return 'number | string';
    if (Array.isArray(node.enum))
      return node.enum.map((v) => JSON.stringify(v).replace(/"/g, "'")).join(' | ');
    switch (node.type) {
      case 'string':
        return 'string';
      case 'integer':
      case 'number':
        return 'number';
      case 'boolean':
        return 'boolean';
      case 'array': {
        if (!isObject(node.items)) throw new SchemaConversionError(where, 'array without items');
        const item = this.type(node.items, mode, indent, `${where}[]`);
        return /[|{ ]/.test(item) ? `Array<${item}>` : `${item}[]`;
      }
      case 'object':
        if (isObject(node.properties)) return this.objectType(node, mode, indent, where);
        if (isObject(node.additionalProperties))
          return `Record<string, ${this.type(node.additionalProperties, mode, indent, `${where}.*`)}>`;
        return 'Record<string, unknown>';
      default:
        if (node['x-kubernetes-preserve-unknown-fields'] === true) return 'unknown';
        throw new SchemaConversionError(where, `no TypeScript type for ${JSON.stringify(node.type)}`);
    }
  }

  objectType(node: JsonObject, mode: Mode, indent: string, where: string): string {
    const properties = isObject(node.properties) ? node.properties : {};
    const required = new Set(Array.isArray(node.required) ? node.required : []);
    const inner = `${indent}  `;
    let out = '{\n';
    for (const [key, value] of Object.entries(properties)) {
      if (!isObject(value)) throw new SchemaConversionError(`${where}.${key}`, 'expected a schema');
      // The API server fills a default in whenever the field is absent, so a read object always has it.
      const present = required.has(key) || (mode === 'read' && value.default !== undefined);
      out += docComment(value, inner);
      out += `${inner}${key}${present ? '' : '?'}: ${this.type(value, mode, inner, `${where}.${key}`)};\n`;
    }
    return `${out}${indent}}`;
  }
}

export function renderClientTypes(header: string): string {
  const printer = new TypePrinter();
  const hints = { keepTypeHints: true };
  const spec = toStructuralSchema(KVClusterSpec, 'spec', hints);
  const status = toStructuralSchema(KVClusterStatus, 'status', hints);
  const specRead = printer.objectType(spec, 'read', '', 'spec');
  const specWrite = printer.objectType(spec, 'write', '', 'spec');
  const statusRead = printer.objectType(status, 'read', '', 'status');
  const k8sImports = ['V1ListMeta', 'V1ObjectMeta', ...printer.imports].sort();

  return `// ${header}
import type { ${k8sImports.join(', ')} } from '@kubernetes/client-node';

export const KVCLUSTER_GROUP = '${GROUP}';
export const KVCLUSTER_VERSION = '${VERSION}';
export const KVCLUSTER_API_VERSION = '${API_VERSION}';
export const KVCLUSTER_KIND = '${KIND}';
export const KVCLUSTER_PLURAL = '${PLURAL}';
export const KVCLUSTER_SHORT_NAMES: readonly string[] = [${SHORT_NAMES.map((n) => `'${n}'`).join(', ')}];

/** ${spec.description} As the API server returns it: every default is filled in. */
export interface KVClusterSpec ${specRead}

/** ${spec.description} As you may write it: a field with a default may be left out. */
export interface KVClusterSpecInput ${specWrite}

/** ${status.description} */
export interface KVClusterStatus ${statusRead}

export type KVClusterCondition = NonNullable<KVClusterStatus['conditions']>[number];

/** A KVCluster as read from the API server (get, list, watch). */
export interface KVCluster {
  apiVersion: typeof KVCLUSTER_API_VERSION;
  kind: typeof KVCLUSTER_KIND;
  metadata: V1ObjectMeta;
  spec: KVClusterSpec;
  status?: KVClusterStatus;
}

/** A KVCluster to create or apply; the API server fills in the spec's defaults. */
export interface KVClusterManifest {
  apiVersion: typeof KVCLUSTER_API_VERSION;
  kind: typeof KVCLUSTER_KIND;
  metadata: V1ObjectMeta;
  spec?: KVClusterSpecInput;
}

export interface KVClusterList {
  apiVersion: typeof KVCLUSTER_API_VERSION;
  kind: 'KVClusterList';
  metadata: V1ListMeta;
  items: KVCluster[];
}
`;
}
