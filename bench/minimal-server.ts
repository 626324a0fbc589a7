import http from 'node:http';

/**
 * The "minimal in-memory server" of the RF 1 target: the same
 * `/v1/kv/{key}` routes as kvstore on plain node:http, values in a Map, no
 * durability, replication, validation or metrics. Whatever kvstore does beyond
 * this is the price of being a database; the target is to keep that price
 * under 40%.
 */
const PREFIX = '/v1/kv/';

export function createMinimalServer(): http.Server {
  const store = new Map<string, Buffer>();
  let version = 0;
  return http.createServer((req, res) => {
    const url = req.url ?? '';
    if (!url.startsWith(PREFIX)) {
      res.writeHead(404).end();
      return;
    }
    const key = url.slice(PREFIX.length);
    if (req.method === 'GET') {
      const v = store.get(key);
      if (!v) {
        res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":{"code":"not_found"}}');
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': v.length }).end(v);
      return;
    }
    if (req.method === 'PUT') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        store.set(key, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
        const body = JSON.stringify({ key, version: String(++version) });
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    res.writeHead(405).end();
  });
}

if (require.main === module) {
  const port = Number(process.argv[2] ?? 0);
  const server = createMinimalServer();
  server.keepAliveTimeout = 65_000;
  server.listen(port, '127.0.0.1', () => {
    const addr = server.address();
    process.stdout.write(`${JSON.stringify({ listening: typeof addr === 'object' ? addr?.port : port })}\n`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
  process.on('SIGINT', () => server.close(() => process.exit(0)));
}
