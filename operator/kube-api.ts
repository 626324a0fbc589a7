import {
  ApisApi,
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  Observable,
  PatchStrategy,
  type ApiException,
  type ConfigurationOptions,
  type KubeConfig,
  type KubernetesObject,
  type ObservableMiddleware,
  type V1ObjectMeta,
  type V1PersistentVolumeClaim,
  type V1Pod,
  type V1Secret,
  type V1StatefulSet,
} from '@kubernetes/client-node';
import { errorMessage, KvError } from '../common/errors';
import { GROUP, KIND, PLURAL, VERSION, type KVClusterStatus } from '../crds/kvcluster-spec';
import { FIELD_MANAGER, nodeSelectorString } from './specs/names';

/**
 * The API calls the operator makes, each bounded in time and failing with a KubeApiError that
 * says what was attempted on which object. The reconciler reads and writes the cluster only
 * through this, which keeps its own code about decisions rather than HTTP.
 */

/** A KVCluster as the API server returns it; the spec is parsed (and validated) separately. */
export interface KVClusterObject extends KubernetesObject {
  metadata: V1ObjectMeta & { name: string; namespace: string; uid: string };
  spec?: unknown;
  status?: KVClusterStatus;
}

export interface CallTarget {
  readonly op: string;
  readonly kind: string;
  readonly namespace?: string;
  readonly name?: string;
}

/** An API call that failed: `status` is the HTTP status when the server answered. */
export class KubeApiError extends KvError {
  constructor(
    readonly target: CallTarget,
    readonly status: number | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(
      status === undefined ? 'kube_api_unavailable' : `kube_api_${status}`,
      message,
      { ...target, status },
      options,
    );
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 404;
}

export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 409;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const SERVICE_MONITOR_GROUP = 'monitoring.coreos.com';
/** How long a discovery answer (does the ServiceMonitor CRD exist?) is trusted. */
const DISCOVERY_TTL_MS = 60_000;
const ZONE_LABEL = 'topology.kubernetes.io/zone';

export interface KubeApiOptions {
  readonly kubeConfig: KubeConfig;
  /** per call (default 10 s) */
  readonly timeoutMs?: number;
  readonly now?: () => number;
}

export class KubeApi {
  readonly core: CoreV1Api;
  private readonly apps: AppsV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly apis: ApisApi;
  private readonly objects: KubernetesObjectApi;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private discovery: { at: number; serviceMonitors: boolean } | undefined;
  private readonly zones = new Map<string, { at: number; zone: string | undefined }>();

  constructor(opts: KubeApiOptions) {
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.apps = opts.kubeConfig.makeApiClient(AppsV1Api);
    this.custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.apis = opts.kubeConfig.makeApiClient(ApisApi);
    this.objects = KubernetesObjectApi.makeApiClient(opts.kubeConfig);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.now = opts.now ?? Date.now;
  }

  /** The KVCluster, or undefined when it does not exist (any more). */
  async getKVCluster(namespace: string, name: string): Promise<KVClusterObject | undefined> {
    try {
      const object: unknown = await this.call({ op: 'get', kind: KIND, namespace, name }, (o) =>
        this.custom.getNamespacedCustomObject(
          { group: GROUP, version: VERSION, namespace, plural: PLURAL, name },
          o,
        ),
      );
      return object as KVClusterObject;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Sets metadata.finalizers, conditional on resourceVersion: a 409 means the object changed
   * since it was read, and the caller reconciles again from a fresh read.
   */
  async setFinalizers(object: KVClusterObject, finalizers: readonly string[]): Promise<void> {
    const { namespace, name, resourceVersion } = object.metadata;
    await this.call({ op: 'update finalizers of', kind: KIND, namespace, name }, (o) =>
      this.custom.patchNamespacedCustomObject(
        {
          group: GROUP,
          version: VERSION,
          namespace,
          plural: PLURAL,
          name,
          body: { metadata: { resourceVersion, finalizers: [...finalizers] } },
        },
        mergePatch(o),
      ),
    );
  }

  /**
   * Writes the status subresource (a merge patch: `null` removes a field, e.g. `rebalance` once
   * the rebalance is over). Only the leader writes status, so there is no one to race with.
   */
  async patchStatus(
    namespace: string,
    name: string,
    status: Record<string, unknown>,
  ): Promise<KVClusterObject> {
    const updated: unknown = await this.call({ op: 'update status of', kind: KIND, namespace, name }, (o) =>
      this.custom.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace, plural: PLURAL, name, body: { status } },
        mergePatch(o),
      ),
    );
    return updated as KVClusterObject;
  }

  /** Server-side apply with the operator's field manager, taking over fields others set (force). */
  async apply(object: KubernetesObject): Promise<KubernetesObject> {
    const target = {
      op: 'apply',
      kind: object.kind ?? 'object',
      namespace: object.metadata?.namespace,
      name: object.metadata?.name,
    };
    // KubernetesObjectApi takes no per-call middleware, so no signal: call() stops waiting instead.
    return this.call(target, () =>
      this.objects.patch(object, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply),
    );
  }

  /** Deletes an object if it exists; true when something was deleted. */
  async deleteIfExists(
    object: KubernetesObject,
    propagationPolicy?: 'Background' | 'Foreground',
  ): Promise<boolean> {
    const target = {
      op: 'delete',
      kind: object.kind ?? 'object',
      namespace: object.metadata?.namespace,
      name: object.metadata?.name,
    };
    try {
      await this.call(target, () =>
        this.objects.delete(object, undefined, undefined, undefined, undefined, propagationPolicy),
      );
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async getStatefulSet(namespace: string, name: string): Promise<V1StatefulSet | undefined> {
    try {
      return await this.call({ op: 'get', kind: 'StatefulSet', namespace, name }, (o) =>
        this.apps.readNamespacedStatefulSet({ namespace, name }, o),
      );
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async getSecret(namespace: string, name: string): Promise<V1Secret | undefined> {
    try {
      return await this.call({ op: 'get', kind: 'Secret', namespace, name }, (o) =>
        this.core.readNamespacedSecret({ namespace, name }, o),
      );
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Creates a Secret, never replacing one: a generated token must survive every later reconcile
   * (apply would overwrite it with a new one). Fails with 409 when it exists already.
   */
  async createSecret(secret: V1Secret): Promise<V1Secret> {
    const namespace = secret.metadata?.namespace ?? '';
    const name = secret.metadata?.name;
    return this.call({ op: 'create', kind: 'Secret', namespace, name }, (o) =>
      this.core.createNamespacedSecret({ namespace, body: secret, fieldManager: FIELD_MANAGER }, o),
    );
  }

  /** The storage node pods of a cluster (by the StatefulSet's selector). */
  async listNodePods(namespace: string, cluster: string): Promise<V1Pod[]> {
    const list = await this.call({ op: 'list', kind: 'Pod', namespace }, (o) =>
      this.core.listNamespacedPod({ namespace, labelSelector: nodeSelectorString(cluster) }, o),
    );
    return list.items;
  }

  /** The storage node volumes of a cluster: the StatefulSet labels them with its selector. */
  async listNodeVolumes(namespace: string, cluster: string): Promise<V1PersistentVolumeClaim[]> {
    const list = await this.call({ op: 'list', kind: 'PersistentVolumeClaim', namespace }, (o) =>
      this.core.listNamespacedPersistentVolumeClaim(
        { namespace, labelSelector: nodeSelectorString(cluster) },
        o,
      ),
    );
    return list.items;
  }

  async deleteVolume(namespace: string, name: string): Promise<void> {
    try {
      await this.call({ op: 'delete', kind: 'PersistentVolumeClaim', namespace, name }, (o) =>
        this.core.deleteNamespacedPersistentVolumeClaim({ namespace, name }, o),
      );
    } catch (err) {
      // Already gone: what we wanted.
      if (!isNotFound(err)) throw err;
    }
  }

  /** Whether the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) is served. */
  async serviceMonitorsAvailable(): Promise<boolean> {
    const cached = this.discovery;
    if (cached && this.now() - cached.at < DISCOVERY_TTL_MS) return cached.serviceMonitors;
    const groups = await this.call({ op: 'discover', kind: 'APIGroupList' }, (o) =>
      this.apis.getAPIVersions(o),
    );
    const group = groups.groups.find((g) => g.name === SERVICE_MONITOR_GROUP);
    const serviceMonitors = group?.versions.some((v) => v.version === 'v1') ?? false;
    this.discovery = { at: this.now(), serviceMonitors };
    return serviceMonitors;
  }

  /**
   * The zone of a Kubernetes node (its topology.kubernetes.io/zone label), for zone-aware
   * placement. Undefined when unknown, including when the operator may not read nodes: zones
   * improve placement but are not needed for it.
   */
  async nodeZone(nodeName: string): Promise<string | undefined> {
    const cached = this.zones.get(nodeName);
    if (cached && this.now() - cached.at < DISCOVERY_TTL_MS) return cached.zone;
    let zone: string | undefined;
    try {
      const node = await this.call({ op: 'get', kind: 'Node', name: nodeName }, (o) =>
        this.core.readNode({ name: nodeName }, o),
      );
      zone = node.metadata?.labels?.[ZONE_LABEL];
    } catch (err) {
      if (!(err instanceof KubeApiError) || (err.status !== 403 && err.status !== 404)) throw err;
      zone = undefined;
    }
    this.zones.set(nodeName, { at: this.now(), zone });
    return zone;
  }

  private call<T>(target: CallTarget, send: (options: ConfigurationOptions) => Promise<T>): Promise<T> {
    return kubeCall(target, this.timeoutMs, send);
  }
}

/** Runs one API call within timeoutMs, turning its failure into a KubeApiError naming the target. */
export async function kubeCall<T>(
  target: CallTarget,
  timeoutMs: number,
  send: (options: ConfigurationOptions) => Promise<T>,
): Promise<T> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    // The signal ends the calls that take it; the race bounds those that cannot.
    return await Promise.race([send(withSignal(signal)), aborted(signal)]);
  } catch (err) {
    const where = `${target.kind}${target.name ? ` ${target.namespace ? `${target.namespace}/` : ''}${target.name}` : target.namespace ? ` in ${target.namespace}` : ''}`;
    if (signal.aborted) {
      throw new KubeApiError(target, undefined, `${target.op} ${where}: no answer within ${timeoutMs} ms`, {
        cause: err,
      });
    }
    if (isApiException(err)) {
      const reason = statusMessage(err.body);
      throw new KubeApiError(
        target,
        err.code,
        `${target.op} ${where} failed with ${err.code}${reason ? `: ${reason}` : ''}`,
        { cause: err },
      );
    }
    throw new KubeApiError(target, undefined, `${target.op} ${where} failed: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/** Rejects when the signal fires. */
function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/** Call options that attach an AbortSignal, so a call that hangs ends. */
function withSignal(signal: AbortSignal): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (context) => {
      context.setSignal(signal);
      return new Observable(Promise.resolve(context));
    },
    post: (response) => new Observable(Promise.resolve(response)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

/** The generated patch calls send JSON Patch by default; these bodies are merge patches. */
function mergePatch(options: ConfigurationOptions): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (context) => {
      context.setHeaderParam('Content-Type', PatchStrategy.MergePatch);
      return new Observable(Promise.resolve(context));
    },
    post: (response) => new Observable(Promise.resolve(response)),
  };
  return {
    ...options,
    middleware: [...(options.middleware ?? []), middleware],
    middlewareMergeStrategy: 'append',
  };
}

// Structural: ApiException may come from another copy of the library (jest's module registry).
function isApiException(err: unknown): err is ApiException<unknown> {
  return (
    err instanceof Error && typeof (err as Partial<ApiException<unknown>>).code === 'number' && 'body' in err
  );
}

/**
 * One line for a log: an API error as its status code and the server's message (client-node's
 * own message carries the whole response, headers included), anything else as its message.
 */
export function errorSummary(err: unknown): string {
  if (isApiException(err)) {
    const message = statusMessage(err.body);
    return `HTTP ${err.code}${message ? `: ${message}` : ''}`;
  }
  return errorMessage(err);
}

/** The message of a Status body (a JSON string or an object). */
function statusMessage(body: unknown): string | undefined {
  let value = body;
  if (typeof body === 'string') {
    try {
      value = JSON.parse(body);
    } catch {
      // Not JSON (e.g. a proxy's error page): its start still says something.
      return body.slice(0, 200) || undefined;
    }
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { message } = value as { message?: unknown };
  return typeof message === 'string' ? message : undefined;
}
