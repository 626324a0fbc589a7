/**
 * Key choice for the load generator: uniform, or zipfian as YCSB draws it
 * (Gray et al., "Quickly generating billion-record synthetic databases"), with
 * the rank scrambled by a hash so the hot keys spread over partitions instead of
 * all being key-0000000, key-0000001, ... in one corner of the key space.
 */
export type Distribution = 'uniform' | 'zipfian';

export const DISTRIBUTIONS: readonly Distribution[] = ['uniform', 'zipfian'];

/** Fixed-width names, so every system stores keys of the same size. */
export function keyName(i: number): string {
  return `key-${String(i).padStart(7, '0')}`;
}

export type KeyPicker = () => number;

export function uniformPicker(n: number, rand: () => number = Math.random): KeyPicker {
  return () => Math.floor(rand() * n);
}

/** YCSB's default skew: the top 1% of keys get a bit over half of the requests at n = 100k. */
export const ZIPF_THETA = 0.99;

export function zipfianPicker(n: number, rand: () => number = Math.random, theta = ZIPF_THETA): KeyPicker {
  let zetan = 0;
  for (let i = 1; i <= n; i++) zetan += 1 / Math.pow(i, theta);
  const zeta2 = 1 + 1 / Math.pow(2, theta);
  const alpha = 1 / (1 - theta);
  const eta = (1 - Math.pow(2 / n, 1 - theta)) / (1 - zeta2 / zetan);
  const half = 1 + Math.pow(0.5, theta);
  return () => {
    const u = rand();
    const uz = u * zetan;
    let rank: number;
    if (uz < 1) rank = 0;
    else if (uz < half) rank = 1;
    else rank = Math.min(n - 1, Math.floor(n * Math.pow(eta * u - eta + 1, alpha)));
    return scramble(rank) % n;
  };
}

/** A 32-bit integer hash (lowbias32): rank r always maps to the same key, hot keys land apart. */
function scramble(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

export function picker(d: Distribution, n: number, rand?: () => number): KeyPicker {
  return d === 'zipfian' ? zipfianPicker(n, rand) : uniformPicker(n, rand);
}
