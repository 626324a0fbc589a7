import fs from 'node:fs';

/**
 * The memory limit of this process's cgroup (a container's `resources.limits.memory`), in bytes;
 * undefined when there is none. cgroup v2 first, then v1.
 */
export function containerMemoryLimit(): number | undefined {
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8').trim();
    } catch {
      continue; // not this cgroup version
    }
    const limit = Number(text);
    // "max" (v2) or a near-2^63 number (v1): no limit.
    return Number.isFinite(limit) && limit < 2 ** 50 ? limit : undefined;
  }
  return undefined;
}

/** `share` of the container's memory limit, kept within [min, max]; `fallback` without a limit. */
export function shareOfMemoryLimit(share: number, min: number, max: number, fallback: number): number {
  const limit = containerMemoryLimit();
  if (limit === undefined) return fallback;
  return Math.min(max, Math.max(min, Math.floor(limit * share)));
}
