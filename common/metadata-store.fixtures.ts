import pino from 'pino';
import { LOG_FORMAT, type Logger } from './logger';
import { validatePartitionMap, type PartitionMap } from './partition-map';

/** Shared by the metadata store suites (file, Redis, holder); test code only, never built into dist. */

/** A valid map; `tag` changes an address so two maps of one epoch differ. */
export function testMap(epoch: number, opts: { cluster?: string; tag?: number } = {}): PartitionMap {
  return validatePartitionMap({
    cluster: opts.cluster ?? 'c1',
    epoch,
    partitionCount: 4,
    replicationFactor: 2,
    nodes: [
      { id: 'n1', address: '127.0.0.1:7001' },
      { id: 'n2', address: '127.0.0.1:7002' },
      { id: 'n3', address: `127.0.0.1:${8000 + (opts.tag ?? 0)}` },
    ],
    partitions: [
      ['n1', 'n2'],
      ['n2', 'n3'],
      ['n3', 'n1'],
      ['n1', 'n2'],
    ],
    moves: [],
  });
}

/** A logger whose lines the test can read, formatted as the servers' are. */
export function captureLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino(
    { ...LOG_FORMAT, level: 'debug' },
    { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) },
  );
  return { log, lines };
}

/** Polls until `cond` holds; fails the test with a clear message after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
