import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  makeInformer,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { Logger } from '../common/logger';
import { GROUP, PLURAL, VERSION } from '../crds/kvcluster-spec';
import { errorSummary, type KVClusterObject } from './kube-api';
import type { OperatorMetrics } from './metrics';
import type { Reconciler } from './reconciler';
import { LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY } from './specs/names';
import { WorkQueue } from './work-queue';

/**
 * Watches KVClusters and the objects made for them, and turns every change into a reconcile of
 * the KVCluster concerned (by key `namespace/name`), through a work queue that runs one
 * reconcile per cluster at a time and retries failures with backoff. Every resyncIntervalMs all
 * KVClusters are listed afresh and reconciled, so a missed watch event costs at most that long.
 */

export interface ControllerOptions {
  readonly kubeConfig: KubeConfig;
  readonly reconciler: Reconciler;
  readonly log: Logger;
  readonly metrics: OperatorMetrics;
  /** watch one namespace; all namespaces when undefined */
  readonly namespace?: string;
  /** default 30 s */
  readonly resyncIntervalMs?: number;
  /** reconciles running at once (different clusters) (default 4) */
  readonly concurrency?: number;
  /** first retry delay after a failed reconcile (default 200 ms) */
  readonly backoffBaseMs?: number;
}

/** Informers that fail (API server restarting, watch refused) start over after this, doubling. */
const INFORMER_RETRY_MIN_MS = 500;
const INFORMER_RETRY_MAX_MS = 30_000;

export class Controller {
  private readonly queue: WorkQueue;
  private readonly informers: Informer<KubernetesObject>[] = [];
  private readonly custom: CustomObjectsApi;
  private resyncTimer: NodeJS.Timeout | undefined;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly opts: ControllerOptions) {
    this.custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.queue = new WorkQueue({
      log: opts.log,
      concurrency: opts.concurrency,
      backoffBaseMs: opts.backoffBaseMs,
      handler: (key) => this.handle(key),
      onDepthChange: (depth) => opts.metrics.queueDepth.set(depth),
    });
  }

  /** Starts the watches (each lists first, which queues every existing KVCluster) and the resync. */
  async start(): Promise<void> {
    const { kubeConfig: kc, namespace } = this.opts;
    const apps = kc.makeApiClient(AppsV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    const managed = `${LABEL_MANAGED_BY}=${MANAGED_BY}`;
    const ns = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';

    const clusters = makeInformer<KubernetesObject>(kc, `/apis/${GROUP}/${VERSION}${ns}/${PLURAL}`, () =>
      this.listKVClusters(),
    );
    this.watch('KVCluster', clusters, (obj) => keyOf(obj.metadata?.namespace, obj.metadata?.name));
    const count = (): void => this.opts.metrics.kvclusters.set(clusters.list().length);
    clusters.on('add', count);
    clusters.on('delete', count);

    const owned = (obj: KubernetesObject): string | undefined =>
      keyOf(obj.metadata?.namespace, obj.metadata?.labels?.[LABEL_INSTANCE]);
    this.watch(
      'StatefulSet',
      makeInformer<KubernetesObject>(
        kc,
        `/apis/apps/v1${ns}/statefulsets`,
        () =>
          namespace
            ? apps.listNamespacedStatefulSet({ namespace, labelSelector: managed })
            : apps.listStatefulSetForAllNamespaces({ labelSelector: managed }),
        managed,
      ),
      owned,
    );
    this.watch(
      'Deployment',
      makeInformer<KubernetesObject>(
        kc,
        `/apis/apps/v1${ns}/deployments`,
        () =>
          namespace
            ? apps.listNamespacedDeployment({ namespace, labelSelector: managed })
            : apps.listDeploymentForAllNamespaces({ labelSelector: managed }),
        managed,
      ),
      owned,
    );
    // Node pods only: their IPs and readiness drive the map and the status.
    const nodePods = `${managed},app.kubernetes.io/component=node`;
    this.watch(
      'Pod',
      makeInformer<KubernetesObject>(
        kc,
        `/api/v1${ns}/pods`,
        () =>
          namespace
            ? core.listNamespacedPod({ namespace, labelSelector: nodePods })
            : core.listPodForAllNamespaces({ labelSelector: nodePods }),
        nodePods,
      ),
      owned,
    );
    await Promise.all(this.informers.map((i) => i.start()));
    const interval = this.opts.resyncIntervalMs ?? 30_000;
    this.resyncTimer = setInterval(() => void this.resync(), interval);
    this.opts.log.info({ namespace: namespace ?? '(all)', resyncMs: interval }, 'controller started');
  }

  /** Queues a reconcile of one KVCluster (`namespace/name`). */
  enqueue(key: string): void {
    this.queue.add(key);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.resyncTimer);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    await Promise.all(this.informers.map((i) => i.stop()));
    await this.queue.stop();
    this.opts.metrics.kvclusters.set(0);
    this.opts.metrics.queueDepth.set(0);
  }

  /** Lists every KVCluster from the API server (not a cache) and queues it. */
  async resync(): Promise<void> {
    if (this.stopped) return;
    try {
      const list = await this.listKVClusters();
      this.opts.metrics.kvclusters.set(list.items.length);
      for (const item of list.items) {
        const key = keyOf(item.metadata?.namespace, item.metadata?.name);
        if (key) this.queue.add(key);
      }
    } catch (err) {
      // The next resync tries again; watches keep queuing changes meanwhile.
      this.opts.log.warn({ err: errorSummary(err) }, 'resync: cannot list KVClusters');
    }
  }

  private async listKVClusters(): Promise<KubernetesListObject<KVClusterObject>> {
    const { namespace } = this.opts;
    const list: unknown = namespace
      ? await this.custom.listNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace,
          plural: PLURAL,
        })
      : await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL });
    return list as KubernetesListObject<KVClusterObject>;
  }

  private async handle(key: string): Promise<{ requeueAfterMs?: number }> {
    const slash = key.indexOf('/');
    const namespace = key.slice(0, slash);
    const name = key.slice(slash + 1);
    const { metrics } = this.opts;
    const end = metrics.reconcileDuration.startTimer();
    try {
      const outcome = await this.opts.reconciler.reconcile(namespace, name);
      metrics.reconciles.inc({ result: outcome.result });
      if (outcome.result === 'conflict') return { requeueAfterMs: 100 };
      return outcome.requeueAfterMs !== undefined ? { requeueAfterMs: outcome.requeueAfterMs } : {};
    } catch (err) {
      metrics.reconciles.inc({ result: 'error' });
      throw err;
    } finally {
      end();
    }
  }

  private watch(
    kind: string,
    informer: Informer<KubernetesObject>,
    keyFor: (obj: KubernetesObject) => string | undefined,
  ): void {
    const enqueue = (obj: KubernetesObject): void => {
      const key = keyFor(obj);
      if (key) this.queue.add(key);
    };
    informer.on('add', enqueue);
    informer.on('update', enqueue);
    informer.on('delete', enqueue);
    let retryMs = INFORMER_RETRY_MIN_MS;
    let lastFailure = 0;
    // client-node's informer stops on an error; start it again (it lists afresh), with backoff.
    informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      // A watch that has been working for a while starts the backoff over.
      if (Date.now() - lastFailure > INFORMER_RETRY_MAX_MS * 2) retryMs = INFORMER_RETRY_MIN_MS;
      lastFailure = Date.now();
      this.opts.log.warn({ kind, err: errorSummary(err), retryInMs: retryMs }, 'watch failed; restarting it');
      const timer = setTimeout(() => {
        this.retryTimers.delete(timer);
        if (!this.stopped) void informer.start();
      }, retryMs);
      this.retryTimers.add(timer);
      retryMs = Math.min(retryMs * 2, INFORMER_RETRY_MAX_MS);
    });
    this.informers.push(informer);
  }
}

function keyOf(namespace: string | undefined, name: string | undefined): string | undefined {
  return namespace && name ? `${namespace}/${name}` : undefined;
}
