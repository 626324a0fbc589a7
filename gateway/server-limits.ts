import type { ServerOptions } from 'node:http';

/**
 * The public listener's limits, in one place so however main creates the server (HTTP or HTTPS) it passes
 * the same ones: headers larger than 16 KiB are refused with 431 before any route runs, and slow or stalled
 * clients cannot hold a socket forever (a whole request within 30 s, its headers within 10 s). Body sizes
 * are limited per route (InputLimits); in-flight requests per connection in app.ts.
 */
export const SERVER_LIMITS = {
  maxHeaderSize: 16 * 1024,
  requestTimeout: 30_000,
  headersTimeout: 10_000,
  keepAliveTimeout: 65_000,
  // Node checks the two timeouts above only this often (30 s by default, which let slow headers
  // hold a socket for up to 40 s): a second keeps the promise to within one.
  connectionsCheckingInterval: 1_000,
} as const satisfies ServerOptions;
