import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { RebalancePlanError } from '../common/rebalance-plan';
import type { RebalanceProgress } from '../common/rebalance-progress';
import { ApiKeySet, hashToken } from '../common/api-keys';
import { IDENTITY_HEADER, identity } from '../common/version';
import { parseScaleBody, RunnerAdminServer, type ScalableCluster } from './admin-server';
import type { ScaleResult } from '../common/rest-api';
import { ScaleRequestError } from './cluster';
import { adminPort, localNodes, nodeOrdinal } from './node-ports';

const progress: RebalanceProgress = {
  epoch: 2,
  active: false,
  targetNodes: ['n1', 'n2', 'n3'],
  drainingNodes: [],
  movesTotal: 0,
  movesDone: 0,
  movesLeft: 0,
  keysInFlight: 0,
  bytesInFlight: 0,
  keysStreamed: 0,
  bytesStreamed: 0,
  moves: [],
};

describe('the launcher admin listener', () => {
  it('names nodes and their ports as the launcher does', () => {
    expect(localNodes(3000, 2)).toEqual([
      { id: 'n1', address: '127.0.0.1:3001' },
      { id: 'n2', address: '127.0.0.1:3002' },
    ]);
    expect(adminPort(3000, 4)).toBe(3104);
    expect([
      nodeOrdinal('n1'),
      nodeOrdinal('n64'),
      nodeOrdinal('n65'),
      nodeOrdinal('n01'),
      nodeOrdinal('x'),
    ]).toEqual([1, 64, undefined, undefined, undefined]);
  });

  it('takes a whole number of nodes, and nothing else', () => {
    expect(parseScaleBody('{"nodes":5}')).toBe(5);
    for (const body of ['', 'five', '[]', '{}', '{"nodes":"5"}', '{"nodes":2.5}', '{"nodes":null}']) {
      expect(() => parseScaleBody(body)).toThrow(/JSON|whole number/);
    }
  });

  describe('over HTTP', () => {
    let server: RunnerAdminServer;
    let url: string;
    /** how the cluster answers the next scale */
    let answer: (nodes: number) => Promise<ScaleResult>;
    const cluster: ScalableCluster = {
      scale: (nodes) => answer(nodes),
      progress: async () => progress,
    };

    beforeAll(async () => {
      server = new RunnerAdminServer(pino({ level: 'silent' }));
      const addr: AddressInfo = await server.listen('127.0.0.1', 0);
      url = `http://127.0.0.1:${addr.port}`;
    });
    afterAll(() => server.close());

    const post = async (body: string) => {
      const res = await fetch(`${url}/v1/admin/scale`, { method: 'POST', body });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };

    it('answers 503 until the cluster is attached, then serves it', async () => {
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect((await post('{"nodes":4}')).status).toBe(503);
      server.attach(cluster);
      expect(await (await fetch(`${url}/v1/admin/rebalance`)).json()).toEqual(progress);
      answer = async (nodes) => ({ ...progress, epoch: 3, active: nodes !== 3, addedNodes: ['n4'] });
      expect(await post('{"nodes":4}')).toEqual({
        status: 202,
        body: { ...progress, epoch: 3, active: true, addedNodes: ['n4'] },
      });
    });

    it('maps failures to statuses and the gateway error shape', async () => {
      answer = async () => {
        throw new ScaleRequestError(
          'nodes must be a whole number from 3 (the replication factor) to 64, got 2',
        );
      };
      expect(await post('{"nodes":2}')).toEqual({
        status: 400,
        body: {
          error: {
            code: 'bad_request',
            message: 'nodes must be a whole number from 3 (the replication factor) to 64, got 2',
          },
        },
      });
      answer = async () => {
        throw new RebalancePlanError('not_enough_nodes', 'needs 3 nodes');
      };
      expect((await post('{"nodes":3}')).status).toBe(400);
      answer = async () => {
        throw new Error('disk on fire');
      };
      expect(await post('{"nodes":3}')).toEqual({
        status: 500,
        body: { error: { code: 'internal', message: 'disk on fire' } },
      });
      expect((await post('x'.repeat(20_000))).status).toBe(413);
      expect((await fetch(`${url}/v1/admin/scale`)).status).toBe(405);
      const other = await fetch(`${url}/v1/other`);
      expect(other.status).toBe(404);
      // Every answer, errors too, says the launcher gave it (the client checks: client/server-identity.ts).
      expect(other.headers.get(IDENTITY_HEADER)).toBe(identity('launcher'));
    });
  });

  describe("with the launcher's --auth-file", () => {
    const ADMIN = 'kvs_launcher-admin-token';
    const WRITER = 'kvs_launcher-writer-token';
    const keys = ApiKeySet.parse(
      JSON.stringify({
        keys: [
          { id: 'ops', sha256: hashToken(ADMIN), role: 'admin' },
          { id: 'app', sha256: hashToken(WRITER), role: 'readwrite' },
        ],
      }),
    );
    let server: RunnerAdminServer;
    let url: string;
    let scaled: number[];

    beforeAll(async () => {
      server = new RunnerAdminServer(pino({ level: 'silent' }), { keys: () => keys });
      url = `http://127.0.0.1:${(await server.listen('127.0.0.1', 0)).port}`;
      scaled = [];
      server.attach({
        scale: async (nodes) => {
          scaled.push(nodes);
          return { ...progress, addedNodes: [] };
        },
        progress: async () => progress,
      });
    });
    afterAll(() => server.close());

    const scale = async (token?: string) => {
      const res = await fetch(`${url}/v1/admin/scale`, {
        method: 'POST',
        body: '{"nodes":4}',
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      });
      const body = (await res.json()) as { error?: { code?: string } };
      return { status: res.status, code: body.error?.code, challenge: res.headers.get('www-authenticate') };
    };

    it('scales only for an admin key, and keeps /healthz open', async () => {
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect(await scale()).toEqual({
        status: 401,
        code: 'unauthorized',
        challenge: 'Bearer realm="kvstore"',
      });
      expect(await scale('kvs_unknown')).toMatchObject({ status: 401, code: 'unauthorized' });
      expect(await scale(WRITER)).toMatchObject({ status: 403, code: 'forbidden' });
      expect((await fetch(`${url}/v1/admin/rebalance`)).status).toBe(401);
      expect(scaled).toEqual([]);
      expect(await scale(ADMIN)).toMatchObject({ status: 202 });
      expect(scaled).toEqual([4]);
    });
  });
});
