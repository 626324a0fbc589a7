import { IDENTITY_HEADER, identity } from '../common/version';

/**
 * `X-Kvstore: gateway/<version>` on every response of the gateway (both adapters, errors, 404s, refusals),
 * so a client can tell the gateway from another kvstore endpoint or from anything else on the port.
 * Flat [name, value], for the lean path's one writeHead list.
 */
export const GATEWAY_IDENTITY: readonly [string, string] = [IDENTITY_HEADER, identity('gateway')];
