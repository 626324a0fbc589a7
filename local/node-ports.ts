import type { NodeInfo } from '../common/partition-map';

/**
 * Where the launcher's nodes live: node nK listens on port+K (RPC) and port+100+K (health,
 * metrics), next to the gateway on `port` and the launcher's admin listener on port+100.
 */

/** The most nodes the launcher runs: node ports sit between the gateway's port and port+100. */
export const MAX_NODES = 64;

/** Base port of node nK's health listener is port+100+K; the launcher's own admin listener is port+100. */
export function adminPort(base: number, ordinal: number): number {
  return base + 100 + ordinal;
}

/** `n3` → 3; undefined for a name the launcher does not give its nodes. */
export function nodeOrdinal(id: string): number | undefined {
  const m = /^n([1-9]\d{0,2})$/.exec(id);
  const k = m ? Number(m[1]) : NaN;
  return k >= 1 && k <= MAX_NODES ? k : undefined;
}

/** The RPC address of node nK. */
export function nodeAddress(base: number, ordinal: number): string {
  return `127.0.0.1:${base + ordinal}`;
}

/** Nodes n1..nN with the addresses the launcher gives them. */
export function localNodes(base: number, count: number): NodeInfo[] {
  return Array.from({ length: count }, (_, i) => ({ id: `n${i + 1}`, address: nodeAddress(base, i + 1) }));
}
