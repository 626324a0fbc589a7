import {
  type ApiException,
  CoreV1Api,
  KubeConfig,
  Watch,
  type ConfigurationOptions,
  Observable,
  type ObservableMiddleware,
  type V1ConfigMap,
  type V1OwnerReference,
} from '@kubernetes/client-node';
import { errorMessage } from './errors';
import { createLogger, type Logger } from './logger';
import { checkCompareAndSetArgs, MapWatchHub, MetadataError, type MetadataStore } from './metadata-store';
import {
  InvalidMapError,
  parsePartitionMap,
  serializePartitionMap,
  type PartitionMap,
} from './partition-map';

/** The data key holding the serialized map. */
export const CONFIGMAP_MAP_KEY = 'map.json';
/** Annotation repeating the map's epoch: readable with kubectl, and a watch hint that needs no decoding. */
export const EPOCH_ANNOTATION = 'kvstore.io/epoch';

/** The ConfigMap that holds a cluster's partition map (docs/design.md, "Metadata: ConfigMap and Redis"). */
export function configMapName(cluster: string): string {
  return `${cluster}-partition-map`;
}

/**
 * The API server a process runs against: KubeConfig.loadFromDefault() reads KUBECONFIG,
 * ~/.kube/config, or the in-cluster service account. MetadataError('invalid') when none names a
 * cluster.
 */
export function loadDefaultKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  try {
    kc.loadFromDefault();
  } catch (err) {
    throw new MetadataError(
      'invalid',
      `cannot load a kubeconfig (KUBECONFIG, ~/.kube/config or in-cluster): ${errorMessage(err)}`,
      { kubeconfig: process.env.KUBECONFIG },
      { cause: err },
    );
  }
  if (!kc.getCurrentCluster()) {
    throw new MetadataError('invalid', 'the kubeconfig names no current cluster', {
      kubeconfig: process.env.KUBECONFIG,
      context: kc.getCurrentContext(),
    });
  }
  return kc;
}

export interface ConfigMapMetadataStoreOptions {
  /**
   * Where the API server is: a KubeConfig (KubeConfig.loadFromDefault() reads KUBECONFIG,
   * ~/.kube/config, or the in-cluster service account) or a ready CoreV1Api.
   */
  readonly kube: KubeConfig | CoreV1Api;
  /**
   * The KubeConfig for watch() when `kube` is a CoreV1Api (a watch streams, which the
   * generated API cannot). Without any KubeConfig, watch() relies on polling alone.
   */
  readonly watchConfig?: KubeConfig;
  readonly namespace: string;
  readonly cluster: string;
  /** safety-net poll behind the watch (default 5000 ms) */
  readonly pollIntervalMs?: number;
  /**
   * Upper bound for one API call (default 5000 ms); the request is aborted after it, so a
   * hung API server turns into MetadataError('timeout') and callers can fall back.
   */
  readonly timeoutMs?: number;
  /** Set on the ConfigMap when this store creates it, merged in on every write. */
  readonly labels?: Readonly<Record<string, string>>;
  /**
   * Added (by uid) to the ConfigMap's owners on every write, e.g. the KVCluster, so deleting the
   * cluster resource garbage-collects its map. Owners set by others are kept.
   */
  readonly ownerReferences?: readonly V1OwnerReference[];
  readonly log?: Logger;
}

// A ConfigMap name is a DNS subdomain (RFC 1123), a namespace a DNS label.
const NAME_RE = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const NAMESPACE_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** How long a healthy watch stays open before we start a new one (server side; jittered). */
const WATCH_SECONDS_MIN = 240;
const WATCH_SECONDS_JITTER = 60;
/** Beyond the server-side timeout, our own bound: a half-open connection never ends by itself. */
const WATCH_GRACE_MS = 30_000;
const WATCH_BACKOFF_MIN_MS = 100;
const WATCH_BACKOFF_MAX_MS = 5000;
/** A watch that lived this long was healthy: the next failure starts the backoff over. */
const WATCH_HEALTHY_MS = 10_000;

/** Outcome of reading the ConfigMap: absent, or the object with its decoded map. */
interface Stored {
  readonly object: V1ConfigMap;
  readonly map: PartitionMap;
}

/**
 * The authoritative copy of the partition map: ConfigMap `<cluster>-partition-map`, data key
 * `map.json`, annotation `kvstore.io/epoch` (docs/design.md, "Metadata: ConfigMap and Redis"). Written only by the operator.
 *
 * - compareAndSet is optimistic concurrency on metadata.resourceVersion: read, compare the
 *   stored epoch, replace with that resourceVersion; a 409 means someone wrote in between (false).
 *   Creation is a create, whose 409 AlreadyExists likewise loses the race.
 * - What is stored is validated on every read: a map that does not parse, an annotation that
 *   disagrees with it, or a map of another cluster is MetadataError('corrupt'), and
 *   compareAndSet never overwrites such a ConfigMap (a human has to look at it).
 * - watch() is a Kubernetes watch on this one ConfigMap (fieldSelector), re-established when it
 *   ends or fails, plus the periodic poll (MapWatchHub) as the safety net.
 */
export class ConfigMapMetadataStore implements MetadataStore {
  readonly namespace: string;
  readonly name: string;
  private readonly cluster: string;
  private readonly api: CoreV1Api;
  private readonly watchConfig: KubeConfig | undefined;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly labels: Readonly<Record<string, string>>;
  private readonly ownerReferences: readonly V1OwnerReference[];
  private readonly hub: MapWatchHub;
  /** ends the calls in flight, on close() */
  private readonly cancels = new Set<() => void>();
  private closed = false;

  // Watch state. `watchGen` changes whenever the current watch is given up, so the callbacks
  // of an old watch (which arrive after we aborted it) are recognised and ignored.
  private watchGen = 0;
  private watchActive = false;
  private watchAbort: AbortController | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private watchBackoffMs = WATCH_BACKOFF_MIN_MS;
  private lastWatchFailure: string | undefined;

  constructor(opts: ConfigMapMetadataStoreOptions) {
    this.cluster = opts.cluster;
    this.namespace = opts.namespace;
    this.name = configMapName(opts.cluster);
    if (!NAMESPACE_RE.test(opts.namespace) || opts.namespace.length > 63) {
      throw new MetadataError('invalid', `bad namespace ${JSON.stringify(opts.namespace)}`, {
        namespace: opts.namespace,
      });
    }
    if (!NAME_RE.test(this.name) || this.name.length > 253) {
      // Cluster names allow upper case and '_', which a ConfigMap name does not.
      throw new MetadataError(
        'invalid',
        `cluster ${JSON.stringify(opts.cluster)} gives no valid ConfigMap name (${this.name}): use lower case letters, digits, '-' and '.'`,
        { cluster: opts.cluster, name: this.name },
      );
    }
    if (isKubeConfig(opts.kube)) {
      this.api = opts.kube.makeApiClient(CoreV1Api);
      this.watchConfig = opts.watchConfig ?? opts.kube;
    } else {
      this.api = opts.kube;
      this.watchConfig = opts.watchConfig;
    }
    this.log = opts.log ?? createLogger('metadata-store');
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.labels = { ...(opts.labels ?? {}) };
    this.ownerReferences = [...(opts.ownerReferences ?? [])];
    this.hub = new MapWatchHub({
      load: () => this.load(),
      pollIntervalMs: opts.pollIntervalMs ?? 5000,
      source: `configmap ${this.namespace}/${this.name}`,
      log: this.log,
      onStart: () => this.startWatch(),
      onStop: () => this.stopWatch(),
    });
  }

  async load(): Promise<PartitionMap | undefined> {
    this.ensureOpen();
    return (await this.read())?.map;
  }

  async compareAndSet(map: PartitionMap, expectedEpoch: number | undefined): Promise<boolean> {
    this.ensureOpen();
    const clean = checkCompareAndSetArgs(map, expectedEpoch, this.cluster);
    const expected = expectedEpoch ?? 0;
    // Reading first also refuses to overwrite a corrupt ConfigMap: read() throws for it.
    const stored = await this.read();
    if ((stored?.map.epoch ?? 0) !== expected) {
      this.log.debug(
        { epoch: clean.epoch, expectedEpoch: expected, storedEpoch: stored?.map.epoch ?? 0 },
        'partition map CAS lost (epoch)',
      );
      return false;
    }
    const won = stored ? await this.replace(stored.object, clean) : await this.create(clean);
    if (won) {
      // Our own watchers need not wait for the watch event.
      this.hub.trigger(clean.epoch);
    }
    return won;
  }

  watch(listener: (map: PartitionMap) => void): () => void {
    this.ensureOpen();
    return this.hub.add(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hub.close();
    this.stopWatch();
    for (const cancel of [...this.cancels]) cancel();
  }

  /** The ConfigMap and its decoded map; undefined when there is no ConfigMap. */
  private async read(): Promise<Stored | undefined> {
    let object: V1ConfigMap;
    try {
      object = await this.call('read', (options) =>
        this.api.readNamespacedConfigMap({ name: this.name, namespace: this.namespace }, options),
      );
    } catch (err) {
      if (err instanceof MetadataError && err.context.status === 404) return undefined;
      throw err;
    }
    return { object, map: this.decode(object) };
  }

  private decode(object: V1ConfigMap): PartitionMap {
    const where = {
      namespace: this.namespace,
      name: this.name,
      resourceVersion: object.metadata?.resourceVersion,
    };
    const text = object.data?.[CONFIGMAP_MAP_KEY];
    if (text === undefined) {
      throw new MetadataError(
        'corrupt',
        `ConfigMap ${this.namespace}/${this.name} has no ${CONFIGMAP_MAP_KEY}`,
        where,
      );
    }
    let map: PartitionMap;
    try {
      map = parsePartitionMap(text);
    } catch (err) {
      if (!(err instanceof InvalidMapError)) throw err;
      throw new MetadataError(
        'corrupt',
        `partition map in ConfigMap ${this.namespace}/${this.name} is invalid: ${err.message}`,
        { ...where, ...err.context },
        { cause: err },
      );
    }
    if (map.cluster !== this.cluster) {
      throw new MetadataError(
        'corrupt',
        `partition map in ConfigMap ${this.namespace}/${this.name} belongs to cluster ${map.cluster}`,
        { ...where, mapCluster: map.cluster },
      );
    }
    // Both are written together; disagreement means a hand edit, and we cannot tell which one is right.
    const annotated = object.metadata?.annotations?.[EPOCH_ANNOTATION];
    if (annotated !== String(map.epoch)) {
      throw new MetadataError(
        'corrupt',
        `ConfigMap ${this.namespace}/${this.name}: annotation ${EPOCH_ANNOTATION}=${JSON.stringify(annotated ?? null)} does not match map epoch ${map.epoch}`,
        { ...where, annotated, epoch: map.epoch },
      );
    }
    return map;
  }

  private async create(map: PartitionMap): Promise<boolean> {
    const body: V1ConfigMap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: this.name,
        namespace: this.namespace,
        labels: { ...this.labels },
        annotations: { [EPOCH_ANNOTATION]: String(map.epoch) },
        ...(this.ownerReferences.length > 0 ? { ownerReferences: [...this.ownerReferences] } : {}),
      },
      data: { [CONFIGMAP_MAP_KEY]: serializePartitionMap(map) },
    };
    try {
      await this.call('create', (options) =>
        this.api.createNamespacedConfigMap({ namespace: this.namespace, body }, options),
      );
      return true;
    } catch (err) {
      // AlreadyExists: another writer created it since our read.
      if (err instanceof MetadataError && err.context.status === 409) {
        this.log.debug({ epoch: map.epoch }, 'partition map CAS lost (ConfigMap created meanwhile)');
        return false;
      }
      throw err;
    }
  }

  private async replace(current: V1ConfigMap, map: PartitionMap): Promise<boolean> {
    const meta = current.metadata ?? {};
    const owners = [...(meta.ownerReferences ?? [])];
    for (const ref of this.ownerReferences) {
      if (!owners.some((o) => o.uid === ref.uid)) owners.push(ref);
    }
    const body: V1ConfigMap = {
      ...current,
      metadata: {
        ...meta,
        // The compare of compare-and-set: the API server refuses (409) if anyone wrote since our read.
        resourceVersion: meta.resourceVersion,
        labels: { ...(meta.labels ?? {}), ...this.labels },
        annotations: { ...(meta.annotations ?? {}), [EPOCH_ANNOTATION]: String(map.epoch) },
        ...(owners.length > 0 ? { ownerReferences: owners } : {}),
      },
      data: { ...(current.data ?? {}), [CONFIGMAP_MAP_KEY]: serializePartitionMap(map) },
    };
    try {
      await this.call('replace', (options) =>
        this.api.replaceNamespacedConfigMap({ name: this.name, namespace: this.namespace, body }, options),
      );
      return true;
    } catch (err) {
      // 409: written since our read; 404: deleted since our read. Either way the stored epoch moved.
      if (err instanceof MetadataError && (err.context.status === 409 || err.context.status === 404)) {
        this.log.debug(
          { epoch: map.epoch, status: err.context.status },
          'partition map CAS lost (ConfigMap changed meanwhile)',
        );
        return false;
      }
      throw err;
    }
  }

  /**
   * Runs one API call within timeoutMs with errors typed: the request is aborted on timeout or
   * close(), so a call that failed does not complete later behind the caller's back (an aborted
   * replace may still have been applied by the server: load() to find out).
   */
  private async call<T>(op: string, send: (options: ConfigurationOptions) => Promise<T>): Promise<T> {
    const where = { namespace: this.namespace, name: this.name, op };
    const controller = new AbortController();
    let reason: 'timeout' | 'closed' | undefined;
    const timer = setTimeout(() => {
      reason = 'timeout';
      controller.abort();
    }, this.timeoutMs);
    const cancel = (): void => {
      reason = 'closed';
      controller.abort();
    };
    this.cancels.add(cancel);
    try {
      return await send(signalOptions(controller.signal));
    } catch (err) {
      if (reason === 'closed') {
        throw new MetadataError('closed', `configmap metadata store closed during ${op}`, where, {
          cause: err,
        });
      }
      if (reason === 'timeout') {
        throw new MetadataError(
          'timeout',
          `Kubernetes API ${op} of ConfigMap ${this.namespace}/${this.name} got no answer within ${this.timeoutMs} ms`,
          { ...where, timeoutMs: this.timeoutMs },
          { cause: err },
        );
      }
      throw this.apiError(op, err);
    } finally {
      clearTimeout(timer);
      this.cancels.delete(cancel);
    }
  }

  private apiError(op: string, err: unknown): MetadataError {
    const where = { namespace: this.namespace, name: this.name, op };
    if (isApiException(err)) {
      const status = err.code;
      const reason = statusReason(err.body);
      const context = { ...where, status, reason };
      const what = `Kubernetes API ${op} of ConfigMap ${this.namespace}/${this.name} failed with ${status}${reason ? ` ${reason}` : ''}`;
      // 409 and 404 are outcomes the callers branch on (context.status); they are never shown as is.
      if (status === 400 || status === 413 || status === 422) {
        // The request itself is refused (e.g. a map over the 1 MiB ConfigMap limit): retrying cannot help.
        return new MetadataError('invalid', what, context, { cause: err });
      }
      if (status === 401 || status === 403) {
        const hint = `${what}: check the credentials and RBAC (get, create, update configmaps)`;
        return new MetadataError('unavailable', hint, context, { cause: err });
      }
      return new MetadataError('unavailable', what, context, { cause: err });
    }
    return new MetadataError(
      'unavailable',
      `Kubernetes API ${op} of ConfigMap ${this.namespace}/${this.name} failed: ${errorMessage(err)}`,
      where,
      { cause: err },
    );
  }

  // ---- watch ----

  private startWatch(): void {
    if (this.watchActive || this.closed) return;
    this.watchActive = true;
    if (!this.watchConfig) {
      this.log.info(
        { namespace: this.namespace, name: this.name },
        'no KubeConfig to watch the partition map ConfigMap with; polling only',
      );
      return;
    }
    this.openWatch(this.watchConfig);
  }

  private stopWatch(): void {
    this.watchActive = false;
    this.watchGen++;
    if (this.watchTimer) clearTimeout(this.watchTimer);
    this.watchTimer = undefined;
    this.watchAbort?.abort();
    this.watchAbort = undefined;
  }

  private openWatch(config: KubeConfig): void {
    const gen = ++this.watchGen;
    const openedAt = Date.now();
    const serverSeconds = WATCH_SECONDS_MIN + Math.floor(Math.random() * WATCH_SECONDS_JITTER);
    // Watch.watch has no connect timeout of its own: give up on an attempt that hangs and start over.
    this.watchTimer = setTimeout(() => {
      if (gen !== this.watchGen) return;
      this.onWatchEnd(
        gen,
        openedAt,
        new MetadataError(
          'timeout',
          `watch of ConfigMap ${this.namespace}/${this.name} not established within ${this.timeoutMs} ms`,
          {
            namespace: this.namespace,
            name: this.name,
          },
        ),
      );
    }, this.timeoutMs);
    this.watchTimer.unref();

    const done = (err: unknown): void => this.onWatchEnd(gen, openedAt, err);
    new Watch(config)
      .watch(
        `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/configmaps`,
        {
          fieldSelector: `metadata.name=${this.name}`,
          timeoutSeconds: serverSeconds,
          allowWatchBookmarks: true,
        },
        (phase: string, object: unknown) => {
          if (gen === this.watchGen) this.onWatchEvent(phase, object);
        },
        done,
      )
      .then((controller) => {
        if (gen !== this.watchGen) {
          // Given up on (timeout, stop, close) before it connected: end it now.
          controller.abort();
          return;
        }
        this.watchAbort = controller;
        if (this.watchTimer) clearTimeout(this.watchTimer);
        // The server ends it after serverSeconds; this bounds a connection that died silently.
        this.watchTimer = setTimeout(
          () => {
            if (gen === this.watchGen) this.onWatchEnd(gen, openedAt, null);
          },
          serverSeconds * 1000 + WATCH_GRACE_MS,
        );
        this.watchTimer.unref();
      }, done);
  }

  private onWatchEvent(phase: string, object: unknown): void {
    if (phase === 'BOOKMARK') return;
    if (phase === 'ERROR') {
      // A Status object; the server ends the stream after it, and onWatchEnd opens a new one.
      this.log.warn(
        { namespace: this.namespace, name: this.name, status: statusReason(object) },
        'partition map ConfigMap watch reported an error',
      );
      this.hub.trigger();
      return;
    }
    if (this.lastWatchFailure !== undefined) {
      this.log.info(
        { namespace: this.namespace, name: this.name },
        'partition map ConfigMap watch working again',
      );
      this.lastWatchFailure = undefined;
    }
    // The annotation lets the hub skip the load when every listener already has that epoch;
    // the load itself validates, so a lying annotation costs one read, never a wrong map.
    const epoch = Number(annotationOf(object, EPOCH_ANNOTATION));
    this.hub.trigger(phase !== 'DELETED' && Number.isSafeInteger(epoch) && epoch > 0 ? epoch : undefined);
  }

  private onWatchEnd(gen: number, openedAt: number, err: unknown): void {
    // Callbacks of a watch we already gave up on (we aborted it) are expected: nothing to do.
    if (gen !== this.watchGen || !this.watchActive || this.closed) return;
    this.watchGen++;
    if (this.watchTimer) clearTimeout(this.watchTimer);
    this.watchTimer = undefined;
    this.watchAbort?.abort();
    this.watchAbort = undefined;
    const lived = Date.now() - openedAt;
    if (lived >= WATCH_HEALTHY_MS) this.watchBackoffMs = WATCH_BACKOFF_MIN_MS;
    if (err) {
      const failure = errorMessage(err);
      // A down API server fails every attempt the same way: warn once, then debug.
      if (failure !== this.lastWatchFailure) {
        this.log.warn(
          { err, namespace: this.namespace, name: this.name, retryInMs: this.watchBackoffMs },
          'partition map ConfigMap watch failed; re-establishing (polling meanwhile)',
        );
      } else {
        this.log.debug({ err, retryInMs: this.watchBackoffMs }, 'partition map ConfigMap watch failed again');
      }
      this.lastWatchFailure = failure;
    } else {
      this.log.debug(
        { namespace: this.namespace, name: this.name, livedMs: lived },
        'partition map ConfigMap watch ended; re-establishing',
      );
    }
    // Changes made while no watch was open produce no event: look now.
    this.hub.trigger();
    const config = this.watchConfig;
    if (!config) return;
    const delay = this.watchBackoffMs;
    this.watchBackoffMs = Math.min(this.watchBackoffMs * 2, WATCH_BACKOFF_MAX_MS);
    const reopenGen = this.watchGen;
    this.watchTimer = setTimeout(() => {
      if (reopenGen === this.watchGen && this.watchActive && !this.closed) this.openWatch(config);
    }, delay);
    this.watchTimer.unref();
  }

  private ensureOpen(): void {
    if (this.closed) {
      throw new MetadataError('closed', `configmap metadata store ${this.namespace}/${this.name} is closed`);
    }
  }
}

/** Per-call options that attach our AbortSignal to the request, so a timeout or close() ends it. */
function signalOptions(signal: AbortSignal): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (context) => {
      context.setSignal(signal);
      return new Observable(Promise.resolve(context));
    },
    post: (response) => new Observable(Promise.resolve(response)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

// Structural checks, not instanceof: a caller's KubeConfig or CoreV1Api may come from another
// copy of @kubernetes/client-node (a second install, jest's module registry).
function isKubeConfig(kube: KubeConfig | CoreV1Api): kube is KubeConfig {
  return typeof (kube as Partial<KubeConfig>).makeApiClient === 'function';
}

/** The API's non-2xx answer (ApiException); node-fetch's network errors carry a string code instead. */
function isApiException(err: unknown): err is ApiException<unknown> {
  return (
    err instanceof Error && typeof (err as Partial<ApiException<unknown>>).code === 'number' && 'body' in err
  );
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The Status reason/message of an API error body (a JSON string or an object), for logs and context. */
function statusReason(body: unknown): string | undefined {
  let value = body;
  if (typeof body === 'string') {
    try {
      value = JSON.parse(body);
    } catch {
      // Not JSON (e.g. a proxy's HTML page): a short prefix still says something.
      return body.slice(0, 200) || undefined;
    }
  }
  if (!isRecord(value)) return undefined;
  const reason = typeof value.reason === 'string' ? value.reason : undefined;
  const message = typeof value.message === 'string' ? value.message : undefined;
  return [reason, message].filter(Boolean).join(': ') || undefined;
}

function annotationOf(object: unknown, key: string): string | undefined {
  if (!isRecord(object) || !isRecord(object.metadata) || !isRecord(object.metadata.annotations))
    return undefined;
  const v = object.metadata.annotations[key];
  return typeof v === 'string' ? v : undefined;
}
