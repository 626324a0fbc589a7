import { randomBytes } from 'node:crypto';
import type { CoreV1Api, CoreV1Event } from '@kubernetes/client-node';
import { errorSummary } from './kube-api';
import type { Logger } from '../common/logger';
import { API_VERSION, KIND } from '../crds/kvcluster-spec';
import { MANAGED_BY, type ClusterRef } from './specs/names';

export type EventType = 'Normal' | 'Warning';

export interface EventRecorderOptions {
  readonly core: CoreV1Api;
  readonly log: Logger;
  /** the instance writing (pod name), shown as the event's source host */
  readonly instance: string;
  /** an identical event (object, type, reason, message) within this window is not repeated (default 10 min) */
  readonly dedupeWindowMs?: number;
  readonly now?: () => number;
}

/**
 * Kubernetes Events on a KVCluster (what `kubectl describe kvcluster` shows). Best effort: an
 * event that cannot be written is logged, never a reconcile failure. A level-triggered reconcile
 * sees the same situation many times, so an identical event is written once per window instead
 * of on every pass.
 */
export class EventRecorder {
  private readonly recent = new Map<string, number>();
  private readonly windowMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: EventRecorderOptions) {
    this.windowMs = opts.dedupeWindowMs ?? 10 * 60_000;
    this.now = opts.now ?? Date.now;
  }

  async record(cluster: ClusterRef, type: EventType, reason: string, message: string): Promise<void> {
    const key = `${cluster.uid}\u0000${type}\u0000${reason}\u0000${message}`;
    const now = this.now();
    const last = this.recent.get(key);
    if (last !== undefined && now - last < this.windowMs) return;
    this.recent.set(key, now);
    this.prune(now);
    const time = new Date(now);
    const body: CoreV1Event = {
      metadata: {
        // Unique per event, like client-go's `<object>.<hex>`.
        name: `${cluster.name}.${now.toString(16)}${randomBytes(4).toString('hex')}`,
        namespace: cluster.namespace,
      },
      involvedObject: {
        apiVersion: API_VERSION,
        kind: KIND,
        name: cluster.name,
        namespace: cluster.namespace,
        uid: cluster.uid,
      },
      type,
      reason,
      message: message.length > 1024 ? `${message.slice(0, 1021)}...` : message,
      source: { component: MANAGED_BY, host: this.opts.instance },
      reportingComponent: MANAGED_BY,
      reportingInstance: this.opts.instance,
      firstTimestamp: time,
      lastTimestamp: time,
      count: 1,
    };
    this.opts.log.info({ cluster: `${cluster.namespace}/${cluster.name}`, type, reason }, message);
    try {
      await this.opts.core.createNamespacedEvent({ namespace: cluster.namespace, body });
    } catch (err) {
      // Losing an event loses no state: the status says the same, and the log line above stays.
      this.opts.log.warn(
        { err: errorSummary(err), cluster: `${cluster.namespace}/${cluster.name}`, reason },
        'cannot write a Kubernetes event',
      );
    }
  }

  /** Forgets what a deleted cluster was told, so a cluster recreated with the name hears it again. */
  forget(uid: string): void {
    for (const key of this.recent.keys()) if (key.startsWith(`${uid}\u0000`)) this.recent.delete(key);
  }

  private prune(now: number): void {
    if (this.recent.size < 1000) return;
    for (const [key, at] of this.recent) if (now - at >= this.windowMs) this.recent.delete(key);
  }
}
