import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../common/logger';
import { Controller } from './controller';
import { EventRecorder } from './events';
import { KubeApi } from './kube-api';
import { LeaderElector } from './leader-election';
import { MapOwners } from './map-owners';
import { OperatorMetrics } from './metrics';
import { Reconciler } from './reconciler';
import { IDENTITY_HEADER, identity } from '../common/version';

/**
 * One operator instance: health and metrics endpoints, leader election, and while leading, the
 * controller with its reconciler and the partition-map owners. Losing the lease stops all of
 * that (maps included) before another instance may take over; the instance keeps campaigning.
 */

export interface OperatorOptions {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  /** unique per instance (pod name); the Lease holder and the events' source */
  readonly identity: string;
  /** watch one namespace; all when undefined */
  readonly namespace?: string;
  /** default true */
  readonly leaderElect?: boolean;
  /** where the Lease lives */
  readonly leaseNamespace: string;
  readonly leaseName?: string;
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
  /** /healthz, /readyz, /metrics; none when undefined (port 0 picks a free one) */
  readonly metricsListen?: { readonly host: string; readonly port: number };
  /** Redis URL for clusters with spec.redis.managed (the chart's Redis) */
  readonly managedRedisUrl?: string;
  readonly resyncIntervalMs?: number;
  readonly rebalancePollIntervalMs?: number;
  readonly rpcTimeoutMs?: number;
  /** first retry delay after a failed reconcile */
  readonly backoffBaseMs?: number;
}

interface Term {
  readonly controller: Controller;
  readonly owners: MapOwners;
}

export class Operator {
  readonly metrics: OperatorMetrics;
  private readonly elector: LeaderElector | undefined;
  private readonly server: http.Server | undefined;
  private address: AddressInfo | undefined;
  private term: Term | undefined;
  private stopping: Promise<void> | undefined;

  private constructor(private readonly opts: OperatorOptions) {
    this.metrics = new OperatorMetrics();
    this.metrics.leader.set(0);
    if (opts.leaderElect !== false) {
      this.elector = new LeaderElector({
        kubeConfig: opts.kubeConfig,
        namespace: opts.leaseNamespace,
        name: opts.leaseName,
        identity: opts.identity,
        log: opts.log,
        leaseDurationMs: opts.leaseDurationMs,
        renewDeadlineMs: opts.renewDeadlineMs,
        retryPeriodMs: opts.retryPeriodMs,
        onStartedLeading: () => this.lead(),
        onStoppedLeading: () => this.standDown(),
      });
    }
    if (opts.metricsListen) {
      this.server = http.createServer((req, res) => {
        // Says what answers on this port: a client given the wrong URL is told so (common/version.ts).
        res.setHeader(IDENTITY_HEADER, identity('operator'));
        this.serve(req, res).catch((err: unknown) => {
          opts.log.error({ err }, 'metrics request failed');
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
          res.end('internal error\n');
        });
      });
    }
  }

  /** Starts serving health and metrics, then campaigns (or, without leader election, leads at once). */
  static async start(opts: OperatorOptions): Promise<Operator> {
    const op = new Operator(opts);
    if (op.server && opts.metricsListen) {
      const { host, port } = opts.metricsListen;
      const server = op.server;
      op.address = await new Promise<AddressInfo>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve(server.address() as AddressInfo);
        });
      });
    }
    if (op.elector) op.elector.start();
    else await op.lead();
    return op;
  }

  /** Where /healthz, /readyz and /metrics are served. */
  metricsAddress(): AddressInfo | undefined {
    return this.address;
  }

  isLeader(): boolean {
    return this.term !== undefined;
  }

  /** Stops reconciling, releases the Lease, closes the endpoints. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.elector) await this.elector.stop();
      else await this.standDown();
      const server = this.server;
      if (server?.listening) {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    })();
    return this.stopping;
  }

  private async lead(): Promise<void> {
    if (this.term) return;
    const { opts } = this;
    const api = new KubeApi({ kubeConfig: opts.kubeConfig });
    const events = new EventRecorder({
      core: opts.kubeConfig.makeApiClient(CoreV1Api),
      log: opts.log,
      instance: opts.identity,
    });
    const owners = new MapOwners({
      kubeConfig: opts.kubeConfig,
      log: opts.log,
      // A map change (a switched move, a finished rebalance) is worth a reconcile: status, StatefulSet size.
      onMapChange: (key) => this.term?.controller.enqueue(key),
      rebalancePollIntervalMs: opts.rebalancePollIntervalMs,
      rpcTimeoutMs: opts.rpcTimeoutMs,
    });
    const reconciler = new Reconciler({
      api,
      owners,
      events,
      log: opts.log,
      managedRedisUrl: opts.managedRedisUrl,
    });
    const controller = new Controller({
      kubeConfig: opts.kubeConfig,
      reconciler,
      log: opts.log,
      metrics: this.metrics,
      namespace: opts.namespace,
      resyncIntervalMs: opts.resyncIntervalMs,
      backoffBaseMs: opts.backoffBaseMs,
    });
    this.term = { controller, owners };
    this.metrics.leader.set(1);
    await controller.start();
  }

  private async standDown(): Promise<void> {
    const term = this.term;
    if (!term) return;
    this.term = undefined;
    this.metrics.leader.set(0);
    await term.controller.stop();
    await term.owners.stopAll();
    this.opts.log.info('stopped reconciling');
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const text = (status: number, body: string): void => {
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(body);
    };
    switch (path) {
      case '/healthz':
        text(200, 'ok\n');
        return;
      case '/readyz':
        // A standby instance is ready too: it is doing what it should (waiting for the lease).
        text(
          this.stopping ? 503 : 200,
          this.stopping ? 'stopping\n' : `ok (${this.isLeader() ? 'leader' : 'standby'})\n`,
        );
        return;
      case '/metrics': {
        const body = await this.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
        res.end(body);
        return;
      }
      default:
        text(404, `no route ${path}\n`);
    }
  }
}
