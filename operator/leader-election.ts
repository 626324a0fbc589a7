import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import { isConflict, isNotFound, kubeCall, type CallTarget } from './kube-api';

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it, so
 * only one operator instance reconciles (and owns the partition maps) at a time.
 *
 * - Acquire: create the Lease, or take it over when its holder is empty (released) or has not
 *   renewed it for leaseDuration, measured on our own clock from when we last saw the record
 *   change (never comparing our clock with the holder's).
 * - Renew every retryPeriod; a leader that cannot renew for renewDeadline (shorter than the lease
 *   duration) stops leading before anyone else may take over.
 * - Every write is a compare-and-set on resourceVersion: of two candidates, one wins.
 * - Release on a clean shutdown (empty holder, 1 s duration), so the next leader starts at once
 *   instead of waiting for the lease to expire.
 */

export interface LeaderElectionOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  /** the Lease's name (default kvstore-operator) */
  readonly name?: string;
  /** unique per instance: the pod name plus a random suffix */
  readonly identity: string;
  readonly log: Logger;
  /** default 15 s */
  readonly leaseDurationMs?: number;
  /** default 10 s; must be below leaseDurationMs */
  readonly renewDeadlineMs?: number;
  /** default 2 s */
  readonly retryPeriodMs?: number;
  /** called when this instance becomes the leader; may start work */
  readonly onStartedLeading: () => Promise<void> | void;
  /** called when it stops being the leader (lost, or stopping); must stop the work before resolving */
  readonly onStoppedLeading: () => Promise<void> | void;
}

export const DEFAULT_LEASE_NAME = 'kvstore-operator';

/** held: we hold the Lease; taken: another instance does; failed: unknown this time (a race, an error). */
type Attempt = 'held' | 'taken' | 'failed';

export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly name: string;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  /** the record last read, and when (our clock) it was seen to change */
  private observed: { key: string; at: number } | undefined;
  private lastRenew = 0;
  /** the start/stop callbacks, chained so they never overlap */
  private transition: Promise<void> = Promise.resolve();

  constructor(private readonly opts: LeaderElectionOptions) {
    this.api = opts.kubeConfig.makeApiClient(CoordinationV1Api);
    this.name = opts.name ?? DEFAULT_LEASE_NAME;
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    if (this.renewDeadlineMs >= this.leaseDurationMs) {
      throw new RangeError('renewDeadlineMs must be shorter than leaseDurationMs');
    }
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** Starts campaigning; returns at once. */
  start(): void {
    this.schedule(0);
  }

  /** Stops campaigning; a leader stops its work, then releases the Lease. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.loop;
    await this.transition;
    if (!this.leading) return;
    await this.setLeading(false);
    await this.release();
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    // Jitter, so candidates that started together do not keep colliding.
    const jitter = delayMs === 0 ? 0 : Math.floor(Math.random() * delayMs * 0.2);
    this.timer = setTimeout(() => {
      this.loop = this.tick().finally(() => {
        this.loop = undefined;
        this.schedule(this.retryPeriodMs);
      });
    }, delayMs + jitter);
  }

  private async tick(): Promise<void> {
    let outcome: Attempt = 'failed';
    try {
      outcome = await this.tryAcquireOrRenew();
    } catch (err) {
      this.opts.log.warn(
        { err: errorMessage(err), lease: this.where() },
        'leader election: lease call failed',
      );
    }
    if (this.stopped) return;
    const now = Date.now();
    // The callbacks run on their own chain: a slow start or stop must not hold up renewing.
    if (outcome === 'held') {
      this.lastRenew = now;
      if (!this.leading) {
        this.opts.log.info({ lease: this.where(), identity: this.opts.identity }, 'became the leader');
        void this.setLeading(true);
      }
    } else if (this.leading && outcome === 'taken') {
      this.opts.log.warn(
        { lease: this.where(), identity: this.opts.identity },
        'lost the leader lease: another instance holds it; stopping work',
      );
      void this.setLeading(false);
    } else if (this.leading && now - this.lastRenew > this.renewDeadlineMs) {
      this.opts.log.warn(
        { lease: this.where(), identity: this.opts.identity, sinceRenewMs: now - this.lastRenew },
        'lost the leader lease: could not renew it in time; stopping work',
      );
      void this.setLeading(false);
    }
  }

  private async setLeading(leading: boolean): Promise<void> {
    this.leading = leading;
    const run = async (): Promise<void> => {
      try {
        await (leading ? this.opts.onStartedLeading() : this.opts.onStoppedLeading());
      } catch (err) {
        // The callbacks own their errors; one that escapes is a bug, reported loudly.
        this.opts.log.error(
          { err },
          `leader election: ${leading ? 'onStartedLeading' : 'onStoppedLeading'} threw`,
        );
      }
    };
    this.transition = this.transition.then(run);
    await this.transition;
  }

  /** One attempt to take or keep the Lease. */
  private async tryAcquireOrRenew(): Promise<Attempt> {
    const now = Date.now();
    const micro = new V1MicroTime(now);
    const seconds = Math.ceil(this.leaseDurationMs / 1000);
    let lease: V1Lease;
    try {
      lease = await this.call('get', (o) =>
        this.api.readNamespacedLease({ name: this.name, namespace: this.opts.namespace }, o),
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await this.call('create', (o) =>
          this.api.createNamespacedLease(
            {
              namespace: this.opts.namespace,
              body: {
                metadata: { name: this.name, namespace: this.opts.namespace },
                spec: {
                  holderIdentity: this.opts.identity,
                  leaseDurationSeconds: seconds,
                  acquireTime: micro,
                  renewTime: micro,
                  leaseTransitions: 0,
                },
              },
            },
            o,
          ),
        );
        return 'held';
      } catch (createErr) {
        // Someone created it first.
        if (isConflict(createErr)) return 'taken';
        throw createErr;
      }
    }

    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const key = JSON.stringify([holder, String(spec.renewTime ?? ''), spec.leaseTransitions ?? 0]);
    if (this.observed?.key !== key) this.observed = { key, at: now };
    const durationMs = (spec.leaseDurationSeconds ?? seconds) * 1000;
    const mine = holder === this.opts.identity;
    if (holder !== '' && !mine && now < this.observed.at + durationMs) return 'taken';

    const body: V1Lease = {
      ...lease,
      spec: {
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: seconds,
        acquireTime: mine ? microTime(spec.acquireTime, micro) : micro,
        renewTime: micro,
        leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
      },
    };
    try {
      await this.call('update', (o) =>
        this.api.replaceNamespacedLease({ name: this.name, namespace: this.opts.namespace, body }, o),
      );
    } catch (err) {
      // Someone else wrote it since our read (renewed, or took it over).
      if (isConflict(err)) return 'failed';
      throw err;
    }
    return 'held';
  }

  /** Gives the Lease up so another instance can take it at once. */
  private async release(): Promise<void> {
    try {
      const lease = await this.call('get', (o) =>
        this.api.readNamespacedLease({ name: this.name, namespace: this.opts.namespace }, o),
      );
      if (lease.spec?.holderIdentity !== this.opts.identity) return;
      const now = new V1MicroTime(Date.now());
      await this.call('release', (o) =>
        this.api.replaceNamespacedLease(
          {
            name: this.name,
            namespace: this.opts.namespace,
            body: {
              ...lease,
              spec: {
                ...lease.spec,
                holderIdentity: '',
                leaseDurationSeconds: 1,
                acquireTime: now,
                renewTime: now,
              },
            },
          },
          o,
        ),
      );
      this.opts.log.info({ lease: this.where() }, 'released the leader lease');
    } catch (err) {
      // The lease then expires by itself after its duration: slower hand-over, nothing lost.
      this.opts.log.warn(
        { err: errorMessage(err), lease: this.where() },
        'could not release the leader lease',
      );
    }
  }

  private call<T>(op: string, send: Parameters<typeof kubeCall<T>>[2]): Promise<T> {
    const target: CallTarget = { op, kind: 'Lease', namespace: this.opts.namespace, name: this.name };
    return kubeCall(target, Math.max(1000, this.renewDeadlineMs / 2), send);
  }

  private where(): string {
    return `${this.opts.namespace}/${this.name}`;
  }
}

/** A Lease time as read (the client leaves it a string) back into a V1MicroTime. */
function microTime(value: unknown, fallback: V1MicroTime): V1MicroTime {
  const ms = value instanceof Date ? value.getTime() : typeof value === 'string' ? Date.parse(value) : NaN;
  return Number.isFinite(ms) ? new V1MicroTime(ms) : fallback;
}
