import { etcdTxnHttp, kvBatchHttp, respPipeline } from './batch-protocols';
import type { LatencySummary } from './histogram';
import { runLoad } from './load';
import type { Op, Protocol } from './protocols';
import type { System } from './peers';

/** One system's batches of one size and op: per operation, and the latency of a whole batch. */
export interface BatchRow {
  readonly system: string;
  /** kvstore POST /v1/batch, etcd Txn, Redis pipeline */
  readonly how: string;
  /** all operations of a batch or none (etcd's Txn); the others are not atomic */
  readonly atomic: boolean;
  readonly size: number;
  readonly op: Op;
  readonly batchesPerSec: number;
  /** operations a second: batches a second × size */
  readonly opsPerSec: number;
  /** of one batch, from its first byte sent to its reply's last: every operation in it waits that long */
  readonly latencyUs: LatencySummary;
  /** batches with any operation that failed */
  readonly errors: number;
}

function batchProtocol(
  sys: System,
  size: number,
  keys: number,
  valueSize: number,
): { protocol: Protocol; how: string; atomic: boolean } | undefined {
  const ep = sys.endpoints[0];
  const host = `${ep?.host}:${ep?.port}`;
  switch (sys.protocol.name) {
    case 'kv-http':
      return { protocol: kvBatchHttp(host, valueSize, size, keys), how: 'POST /v1/batch', atomic: false };
    case 'etcd-http':
      return { protocol: etcdTxnHttp(host, valueSize, size, keys), how: 'Txn (JSON gateway)', atomic: true };
    case 'resp':
      return { protocol: respPipeline(valueSize, size, keys), how: 'pipeline', atomic: false };
    default:
      return undefined;
  }
}

/** Batches of each size, get and put, on a system already preloaded with `keys` keys. */
export async function runBatchLoads(
  sys: System,
  o: {
    sizes: readonly number[];
    keys: number;
    valueSize: number;
    concurrency: number;
    durationS: number;
    warmupS: number;
  },
  say: (line: string) => void,
): Promise<BatchRow[]> {
  const rows: BatchRow[] = [];
  for (const size of o.sizes) {
    const p = batchProtocol(sys, size, o.keys, o.valueSize);
    if (!p) return rows;
    for (const op of ['get', 'put'] as const) {
      const r = await runLoad({
        endpoints: sys.endpoints,
        protocol: p.protocol,
        workload: op,
        distribution: 'uniform',
        concurrency: o.concurrency,
        keyCount: o.keys,
        durationMs: o.durationS * 1000,
        warmupMs: o.warmupS * 1000,
      });
      const row: BatchRow = {
        system: sys.name,
        how: p.how,
        atomic: p.atomic,
        size,
        op,
        batchesPerSec: r.opsPerSec,
        opsPerSec: r.opsPerSec * size,
        latencyUs: r.latencyUs,
        errors: r.errors,
      };
      rows.push(row);
      say(
        `  ${p.how} of ${size} ${op}: ${row.opsPerSec} ops/s (${row.batchesPerSec} batches/s) batch p50 ${r.latencyUs.p50} µs p99 ${r.latencyUs.p99} µs errors ${r.errors}`,
      );
    }
  }
  return rows;
}

const ms = (us: number): string => (us / 1000).toFixed(2);

export function batchTable(rows: readonly BatchRow[]): string {
  if (rows.length === 0) return '';
  const head =
    '| system | how | atomic | size | op | ops/s | batches/s | batch p50 ms | batch p99 ms | errors |';
  const sep = '|---|---|---|--:|---|--:|--:|--:|--:|--:|';
  const lines = rows.map(
    (r) =>
      `| ${r.system} | ${r.how} | ${r.atomic ? 'yes' : 'no'} | ${r.size} | ${r.op} | ${r.opsPerSec.toLocaleString('en-US')} | ${r.batchesPerSec.toLocaleString('en-US')} | ${ms(r.latencyUs.p50)} | ${ms(r.latencyUs.p99)} | ${r.errors} |`,
  );
  return [head, sep, ...lines].join('\n');
}
