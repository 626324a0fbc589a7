import type { IncomingHttpHeaders } from 'node:http';
import { ApiError } from './api-error';
import {
  authenticate,
  prefixAllows,
  rangeAllowed,
  roleAllows,
  UNAUTHENTICATED_ADMIN,
  type Access,
  type AuthFailureReason,
  type Principal,
} from '../common/api-keys';
import type { KeyRange } from '../common/key-range';
import type { GatewayDeps } from './gateway-deps';

/** The challenge a 401 carries (RFC 6750). */
export const WWW_AUTHENTICATE = 'Bearer realm="kvstore"';

/** Who is asking, as far as authorisation and its logs need to know (an ApiRequest is one). */
export interface RequestOrigin {
  readonly method: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly remoteAddress: string | undefined;
}

/**
 * The one authorisation both adapters use: `check` at the door (express's middleware, the lean adapter), before
 * any route; `checkKey` in the operations, once the key is parsed.
 */
export interface Authoriser {
  /**
   * Who sends this request, refused with 401 (no or unknown key) or 403 (the key's role does not
   * cover `access`); counted and logged (the key id, never the token). Runs the admission hook.
   */
  check(req: RequestOrigin, access: Exclude<Access, 'open'>, rid: string): Promise<Principal>;
  /** 403 unless the principal's prefix covers this key. */
  checkKey(principal: Principal, key: Buffer, req: RequestOrigin, rid: string): void;
  /** 403 unless all of `range` lies inside the principal's prefix (a listing). */
  checkRange(principal: Principal, range: KeyRange, req: RequestOrigin, rid: string): void;
  /** 403 unless the principal's role covers `access` (one operation of a batch). */
  checkAccess(principal: Principal, access: Exclude<Access, 'open'>, req: RequestOrigin, rid: string): void;
  /**
   * Counts `points` more requests of this sender against the rate limits (a batch's operations
   * beyond the one counted at the door); 429 when that passes a limit.
   */
  admit(principal: Principal, points: number, req: RequestOrigin): Promise<void>;
}

const AUTH_MESSAGES: Record<'missing' | 'invalid', string> = {
  missing: 'this request needs an API key: send Authorization: Bearer <token>',
  invalid: 'the bearer token is malformed or is not a known API key',
};

const ROLE_NEEDED: Record<Exclude<Access, 'open'>, string> = {
  any: 'any key',
  read: 'a read, readwrite or admin key',
  write: 'a readwrite or admin key',
  admin: 'an admin key',
};

export function createAuthoriser(
  deps: Pick<GatewayDeps, 'auth' | 'metrics' | 'log' | 'admission'>,
): Authoriser {
  const { auth, metrics, log, admission } = deps;
  const refuse = (
    req: RequestOrigin,
    rid: string,
    reason: AuthFailureReason,
    keyId: string | undefined,
    message: string,
  ): ApiError => {
    metrics.authFailures.inc({ reason });
    log.warn(
      { rid, reason, keyId, method: req.method, address: req.remoteAddress },
      'request refused by auth',
    );
    const unauthorised = reason === 'missing' || reason === 'invalid';
    return new ApiError(unauthorised ? 401 : 403, unauthorised ? 'unauthorized' : 'forbidden', message, {
      reason,
      keyId,
    });
  };
  return {
    async check(req, access, rid) {
      let principal: Principal | undefined;
      let failure: { reason: AuthFailureReason; message: string } | undefined;
      if (auth === 'off') {
        principal = UNAUTHENTICATED_ADMIN;
      } else {
        const a = authenticate(auth.keys(), req.headers.authorization);
        if (!a.ok) {
          failure = { reason: a.reason, message: AUTH_MESSAGES[a.reason] };
        } else {
          principal = a.principal;
          if (!roleAllows(principal.role, access)) {
            failure = {
              reason: 'role',
              message: `key ${JSON.stringify(principal.keyId)} has role ${principal.role}; this request needs ${ROLE_NEEDED[access]}`,
            };
          }
        }
      }
      if (admission) await admission(req.remoteAddress ?? '', principal?.keyId);
      if (failure || !principal) {
        const f = failure ?? { reason: 'invalid' as const, message: AUTH_MESSAGES.invalid };
        throw refuse(req, rid, f.reason, principal?.keyId, f.message);
      }
      return principal;
    },
    checkAccess(principal, access, req, rid) {
      if (roleAllows(principal.role, access)) return;
      throw refuse(
        req,
        rid,
        'role',
        principal.keyId,
        `key ${JSON.stringify(principal.keyId)} has role ${principal.role}; this operation needs ${ROLE_NEEDED[access]}`,
      );
    },
    async admit(principal, points, req) {
      if (admission && points > 0) await admission(req.remoteAddress ?? '', principal.keyId, points);
    },
    checkRange(principal, range, req, rid) {
      if (rangeAllowed(principal, range)) return;
      const prefix = principal.prefix?.toString('utf8') ?? '';
      throw refuse(
        req,
        rid,
        'prefix',
        principal.keyId,
        `key ${JSON.stringify(principal.keyId)} may only list keys that start with ${JSON.stringify(prefix)}; this listing reaches outside it (list with prefix=${JSON.stringify(prefix)} or a range inside it)`,
      );
    },
    checkKey(principal, key, req, rid) {
      if (prefixAllows(principal, key)) return;
      const prefix = principal.prefix?.toString('utf8') ?? '';
      throw refuse(
        req,
        rid,
        'prefix',
        principal.keyId,
        `key ${JSON.stringify(principal.keyId)} may only touch keys that start with ${JSON.stringify(prefix)}`,
      );
    },
  };
}
