import http from 'node:http';
import { startExtraGateway, startTestCluster, type ExtraGateway, type TestCluster } from './cluster-harness';

/*
 * A gateway started with --shutdown-delay-ms keeps answering after SIGTERM for that long, with
 * /readyz failing and every answer closing its connection, then exits: a terminating pod behind a
 * Service answers the requests routed to it before every kube-proxy has dropped it (issue 16).
 */
jest.setTimeout(120_000);

let tc: TestCluster | undefined;
let gw: ExtraGateway | undefined;

afterAll(async () => {
  agent.destroy();
  await gw?.stop();
  await tc?.stop(true);
});

/** Keep-alive, as load balancers and clients use: a `Connection: close` answer is the gateway's own. */
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

/** One request: status, Connection header and body. */
function request(
  url: string,
  method: string,
  body?: string,
): Promise<{ status: number; connection: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}`, { method, agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('after SIGTERM it serves for --shutdown-delay-ms with /readyz failing and connections closing, then exits', async () => {
  tc = await startTestCluster({ nodes: 3 });
  gw = await startExtraGateway(tc, ['--shutdown-delay-ms', '3000'], 'gw-drain');
  const before = await request(`${gw.url}/v1/kv/drain`, 'PUT', 'before');
  expect(before.status).toBe(200);
  expect(before.connection).toBe('keep-alive');

  const sentAt = Date.now();
  const exited = new Promise<number>((resolve) => gw?.process.once('exit', () => resolve(Date.now())));
  gw.process.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));

  const ready = await request(`${gw.url}/readyz`, 'GET');
  expect({ status: ready.status, reason: (JSON.parse(ready.body) as { reason: string }).reason }).toEqual({
    status: 503,
    reason: 'shutting down',
  });
  // Requests are still served, each on a connection the gateway then closes.
  const put = await request(`${gw.url}/v1/kv/drain`, 'PUT', 'during');
  expect({ status: put.status, connection: put.connection }).toEqual({ status: 200, connection: 'close' });
  const get = await request(`${gw.url}/v1/kv/drain`, 'GET');
  expect({ status: get.status, body: get.body, connection: get.connection }).toEqual({
    status: 200,
    body: 'during',
    connection: 'close',
  });

  // It exits after the delay, not before.
  const exitAt = await exited;
  expect(exitAt - sentAt).toBeGreaterThanOrEqual(3000);
  expect(gw.process.exitCode).toBe(0);
  await expect(request(`${gw.url}/readyz`, 'GET')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
});
