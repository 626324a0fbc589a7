import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';

/**
 * helmet's default headers, computed once by running its middleware on a stand-in response: they do not
 * depend on the request, and setting them directly costs the fast path nothing else.
 */
export function securityHeaders(): ReadonlyArray<readonly [string, string | number | readonly string[]]> {
  const headers: Array<readonly [string, string | number | readonly string[]]> = [];
  const capture = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers.push([name, value]);
    },
    removeHeader() {},
  };
  let failed: unknown;
  helmet()({} as IncomingMessage, capture as unknown as ServerResponse, (err?: unknown) => {
    failed = err;
  });
  if (failed !== undefined) throw failed;
  return headers;
}
