/**
 * The gateway's read hedge: a read that has fewer than R answers after this
 * long asks one more replica. Shared by the gateway (--read-hedge-ms) and the
 * KVCluster spec (spec.gateway.readHedgeMs), which validates it.
 */

/** How long a read short of R answers waits before asking one more replica. */
export const DEFAULT_READ_HEDGE_MS = 50;
/** The longest hedge delay accepted: beyond the RPC timeout's range it would mean "never". */
export const MAX_READ_HEDGE_MS = 600_000;
