import { xxh64 } from '@node-rs/xxhash';

/**
 * Key hashing is part of the on-disk layout: a key's partition decides where its
 * bytes live on every node. The algorithm (xxHash64) and seed are frozen by tests;
 * changing either strands every stored key.
 */
export const KEY_HASH_SEED = 0n;

export function keyHash(key: Uint8Array): bigint {
  return xxh64(key, KEY_HASH_SEED);
}

export function partitionOf(key: Uint8Array, partitionCount: number): number {
  if (!Number.isInteger(partitionCount) || partitionCount < 1 || partitionCount > 65535) {
    throw new RangeError(`partitionCount must be an integer in [1, 65535], got ${partitionCount}`);
  }
  return Number(keyHash(key) % BigInt(partitionCount));
}
