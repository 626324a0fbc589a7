import type { ApiKeySet } from '../common/api-keys';
import type { Logger } from '../common/logger';
import type { PeerPool } from '../common/peer-pool';
import type { Coordinator, MapSource } from './coordinator';
import type { InFlightLimits } from './in-flight-budget';
import type { GatewayMetrics } from './metrics';
import type { InputLimits } from './request-input';

/** What the gateway's request path is built from (main.ts assembles it; both adapters share it). */
export interface GatewayDeps {
  readonly coordinator: Coordinator;
  readonly maps: MapSource;
  readonly pool: PeerPool;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  readonly limits: InputLimits;
  /**
   * The API keys in force (`keys()` is read per request, so a reloaded file applies at once), or
   * `off` (--no-auth): every request is accepted, as an admin without a key id.
   */
  readonly auth: { keys(): ApiKeySet } | 'off';
  /** Bodies and requests the gateway holds at once (gateway/in-flight-budget.ts); default DEFAULT_IN_FLIGHT_LIMITS */
  readonly inFlight?: InFlightLimits;
  /** Requests one connection may have in flight; pipelined ones beyond it get 429 and the connection closes. */
  readonly maxRequestsPerConnection?: number;
  /**
   * The rate limiter's seam: called for every request that needs a key, once its key id is known (undefined
   * when the token is missing or unknown) and before a 401/403 is answered, so floods of bad tokens are limited
   * by address. Throwing ApiError(429, 'rate_limited', message, { retryAfterMs }) refuses the request with that
   * Retry-After; nothing else has happened yet (no body read, no replica asked). `points` (default 1): a batch
   * counts its operations beyond the first with a second call, before any of them runs.
   */
  readonly admission?: (address: string, keyId: string | undefined, points?: number) => Promise<void>;
  /** True once the gateway is shutting down: /readyz answers 503 so load balancers stop sending it requests. */
  readonly draining?: () => boolean;
}
