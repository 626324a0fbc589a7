import { IDENTITY_HEADER, type Component } from '../common/version';
import { KvClientError } from './client-error';

/**
 * Every kvstore endpoint answers with `X-Kvstore: <component>/<version>` (common/version.ts). A reply
 * without it, or from another component, is not the API the client asked: a wrong URL would otherwise
 * read as, say, `key "k" not found` (a 404 from another server) instead of saying where it went.
 */

/** How each component is named in the error, as a user would recognise the port. */
const DESCRIPTION: Readonly<Record<Component, string>> = {
  gateway: 'a kvstore gateway',
  node: 'a kvstore node admin endpoint',
  launcher: 'the kvstore launcher admin endpoint (npm start)',
  operator: 'the kvstore operator metrics endpoint',
};

function isComponent(name: string): name is Component {
  return Object.prototype.hasOwnProperty.call(DESCRIPTION, name);
}

/** Throws `not_kvstore` unless the reply's identity header names `expected`. */
export function checkIdentity(
  header: string | null,
  expected: Component,
  ctx: { method: string; url: string; status: number; requestId: string | undefined },
): void {
  const component = header === null ? undefined : header.trim().split('/')[0];
  if (component === expected) return;
  const origin = new URL(ctx.url).origin;
  const what =
    component !== undefined && isComponent(component)
      ? `is ${DESCRIPTION[component]} (${IDENTITY_HEADER}: ${header}), not ${DESCRIPTION[expected]}`
      : `is not ${DESCRIPTION[expected]}: it answered HTTP ${ctx.status} without the ${IDENTITY_HEADER} header kvstore sends`;
  throw new KvClientError('not_kvstore', `the server at ${origin} ${what}; check the URL`, ctx);
}
