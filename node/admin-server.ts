import type { DiskStatus } from './disk-guard';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../common/logger';
import type { NodeMetrics } from './metrics';
import { IDENTITY_HEADER, identity } from '../common/version';

/**
 * Health, readiness and metrics for probes and Prometheus, on a port of their
 * own: the data API stays binary and internal, this one is plain HTTP.
 */
export class AdminServer {
  private readonly server: http.Server;

  constructor(
    private readonly metrics: NodeMetrics,
    private readonly readiness: () => { ready: boolean; reason?: string; epoch: number; disk?: DiskStatus },
    private readonly log: Logger,
  ) {
    this.server = http.createServer((req, res) => {
      // Says what answers on this port: a client given the wrong URL is told so (common/version.ts).
      res.setHeader(IDENTITY_HEADER, identity('node'));
      this.route(req, res).catch((err: unknown) => {
        this.log.error({ err }, 'admin request failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'internal', message: 'internal error' } }));
      });
    });
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      json(405, { error: { code: 'method_not_allowed', message: `${req.method} is not allowed here` } });
      return;
    }
    switch (path) {
      case '/healthz':
        json(200, { status: 'ok' });
        return;
      case '/readyz': {
        const r = this.readiness();
        json(r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', ...r });
        return;
      }
      case '/metrics': {
        const body = await this.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
        res.end(body);
        return;
      }
      default:
        json(404, { error: { code: 'not_found', message: `no route ${path}` } });
    }
  }
}
