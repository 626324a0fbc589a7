/**
 * A half-open range of keys in byte order, [start, end): what a listing reads (GET /v1/kv) and what
 * a node's range RPC serves. `end` undefined: to the end of the key space.
 */
export interface KeyRange {
  readonly start: Buffer;
  readonly end?: Buffer;
}

/**
 * The first key after every key that starts with `prefix` (the prefix with its last byte below 0xff
 * raised by one, the 0xff bytes after it dropped); undefined when there is none (empty, or all 0xff).
 */
export function prefixEnd(prefix: Uint8Array): Buffer | undefined {
  let i = prefix.length - 1;
  while (i >= 0 && prefix[i] === 0xff) i--;
  if (i < 0) return undefined;
  const end = Buffer.from(prefix.subarray(0, i + 1));
  end[i]++;
  return end;
}

/** The range of the keys that start with `prefix`. */
export function prefixRange(prefix: Uint8Array): KeyRange {
  const end = prefixEnd(prefix);
  const start = Buffer.from(prefix);
  return end === undefined ? { start } : { start, end };
}

/** Whether `key` lies in `range`. */
export function inRange(range: KeyRange, key: Uint8Array): boolean {
  return (
    Buffer.compare(key, range.start) >= 0 && (range.end === undefined || Buffer.compare(key, range.end) < 0)
  );
}

/** Whether every key of `inner` lies in `outer` (an empty `inner` only when its start does). */
export function rangeWithin(inner: KeyRange, outer: KeyRange): boolean {
  if (Buffer.compare(inner.start, outer.start) < 0) return false;
  if (outer.end === undefined) return true;
  return (
    inner.end !== undefined &&
    Buffer.compare(inner.end, outer.end) <= 0 &&
    Buffer.compare(inner.start, outer.end) < 0
  );
}
