import Redis from 'ioredis';
import { LatencyHistogram, type LatencySummary } from './histogram';
import type { System } from './peers';

/*
 * Listing the whole keyspace in pages, each system as its users page through it: kvstore's
 * GET /v1/kv?limit=N&cursor=C (key order, values in base64, quorum reads), etcd's range with a
 * limit through its JSON gateway, the next page from the last key + "\0" (key order, serializable,
 * as the bench's etcd gets are), and Redis's SCAN with COUNT N then MGET of the keys it gave
 * (no order; COUNT is a hint, and a key may come twice). One listing at a time, walked start to
 * end again and again for the run's duration; a walk must see every preloaded key.
 */

export interface ListRow {
  readonly system: string;
  readonly how: string;
  /** pages come in key order */
  readonly ordered: boolean;
  readonly pageSize: number;
  /** keys a second, values included */
  readonly keysPerSec: number;
  readonly pagesPerSec: number;
  /** of one page, request to last byte parsed */
  readonly pageLatencyUs: LatencySummary;
  /** whole walks over the keyspace in the run */
  readonly walks: number;
  /** walks that did not see every preloaded key exactly as many times as there are keys */
  readonly incomplete: number;
}

/** One page: the keys it held and how to ask for the next (undefined: the walk is over). */
interface Pager {
  readonly how: string;
  readonly ordered: boolean;
  page(token: string | undefined): Promise<{ keys: string[]; next?: string }>;
  close(): Promise<void>;
}

function kvPager(base: string, size: number): Pager {
  return {
    how: 'GET /v1/kv?limit&cursor',
    ordered: true,
    async page(cursor) {
      const q = cursor === undefined ? '' : `&cursor=${encodeURIComponent(cursor)}`;
      const res = await fetch(`${base}/v1/kv?limit=${size}${q}`);
      const body = (await res.json()) as { items?: { key: string; value?: string }[]; cursor?: string };
      if (res.status !== 200 || !body.items) throw new Error(`kvstore listing answered ${res.status}`);
      return { keys: body.items.map((i) => i.key), ...(body.cursor ? { next: body.cursor } : {}) };
    },
    close: async () => undefined,
  };
}

function etcdPager(base: string, size: number): Pager {
  const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');
  return {
    how: 'range with limit (JSON gateway)',
    ordered: true,
    async page(from) {
      const res = await fetch(`${base}/v3/kv/range`, {
        method: 'POST',
        body: JSON.stringify({
          key: b64(from ?? '\0'),
          range_end: b64('\0'),
          limit: size,
          serializable: true,
        }),
      });
      const body = (await res.json()) as { kvs?: { key: string; value: string }[]; more?: boolean };
      if (res.status !== 200) throw new Error(`etcd range answered ${res.status}`);
      const keys = (body.kvs ?? []).map((kv) => Buffer.from(kv.key, 'base64').toString('latin1'));
      const last = keys.at(-1);
      return { keys, ...(body.more && last !== undefined ? { next: `${last}\0` } : {}) };
    },
    close: async () => undefined,
  };
}

function redisPager(host: string, port: number, size: number): Pager {
  const redis = new Redis({ host, port, lazyConnect: false, maxRetriesPerRequest: 1 });
  return {
    how: 'SCAN COUNT + MGET',
    ordered: false,
    async page(cursor) {
      const [next, keys] = await redis.scan(cursor ?? '0', 'COUNT', size);
      if (keys.length > 0) {
        const values = await redis.mgetBuffer(...keys);
        if (values.some((v) => v === null)) throw new Error('redis MGET missed a key SCAN gave');
      }
      return { keys, ...(next === '0' ? {} : { next }) };
    },
    close: async () => {
      redis.disconnect();
    },
  };
}

function pagerFor(sys: System, size: number): Pager | undefined {
  const ep = sys.endpoints[0];
  if (!ep) return undefined;
  const base = `http://${ep.host}:${ep.port}`;
  switch (sys.protocol.name) {
    case 'kv-http':
      // the minimal node:http server speaks kvstore's single-key protocol but lists nothing
      return sys.name.startsWith('kvstore') ? kvPager(base, size) : undefined;
    case 'etcd-http':
      return etcdPager(base, size);
    case 'resp':
      return redisPager(ep.host, ep.port, size);
    default:
      return undefined;
  }
}

/** Walks the `keys` preloaded keys in pages of `pageSize` for `durationS` (at least one walk). */
export async function runListLoad(
  sys: System,
  o: { keys: number; pageSize: number; durationS: number },
  say: (line: string) => void,
): Promise<ListRow | undefined> {
  const pager = pagerFor(sys, o.pageSize);
  if (!pager) return undefined;
  const hist = new LatencyHistogram();
  let walks = 0;
  let incomplete = 0;
  let listed = 0;
  let pages = 0;
  const t0 = performance.now();
  try {
    do {
      const seen = new Set<string>();
      let token: string | undefined;
      do {
        const start = performance.now();
        const page = await pager.page(token);
        hist.record((performance.now() - start) * 1000);
        pages++;
        listed += page.keys.length;
        for (const k of page.keys) seen.add(k);
        token = page.next;
      } while (token !== undefined);
      walks++;
      if (seen.size !== o.keys) incomplete++;
    } while (performance.now() - t0 < o.durationS * 1000);
  } finally {
    await pager.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  const row: ListRow = {
    system: sys.name,
    how: pager.how,
    ordered: pager.ordered,
    pageSize: o.pageSize,
    keysPerSec: Math.round(listed / seconds),
    pagesPerSec: Math.round(pages / seconds),
    pageLatencyUs: hist.summary(),
    walks,
    incomplete,
  };
  say(
    `  listing in pages of ${o.pageSize} (${pager.how}): ${row.keysPerSec} keys/s, page p50 ${row.pageLatencyUs.p50} µs p99 ${row.pageLatencyUs.p99} µs, ${walks} walks, ${incomplete} incomplete`,
  );
  return row;
}

const ms = (us: number): string => (us / 1000).toFixed(2);

export function listTable(rows: readonly ListRow[]): string {
  if (rows.length === 0) return '';
  const head =
    '| system | how | key order | page | keys/s | pages/s | page p50 ms | page p99 ms | walks | incomplete |';
  const sep = '|---|---|---|--:|--:|--:|--:|--:|--:|--:|';
  const lines = rows.map(
    (r) =>
      `| ${r.system} | ${r.how} | ${r.ordered ? 'yes' : 'no'} | ${r.pageSize} | ${r.keysPerSec.toLocaleString('en-US')} | ${r.pagesPerSec.toLocaleString('en-US')} | ${ms(r.pageLatencyUs.p50)} | ${ms(r.pageLatencyUs.p99)} | ${r.walks} | ${r.incomplete} |`,
  );
  return [head, sep, ...lines].join('\n');
}
