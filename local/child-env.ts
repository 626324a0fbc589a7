/**
 * The environment the launcher gives its nodes and gateway: an allow-list, not its own. Every server
 * flag is also read from `KVSTORE_<FLAG>` (common/server-args), so the launcher's own settings
 * (`KVSTORE_PORT=4000 npm start`) would otherwise reach every child as that child's settings.
 */

/** What running node needs, and LOG_LEVEL, which the launcher's users set for all its processes. */
export const CHILD_ENV_ALLOWED: readonly string[] = [
  'PATH',
  'HOME',
  'USER',
  'LANG',
  'LC_ALL',
  'TZ',
  'TMPDIR',
  'NODE_EXTRA_CA_CERTS',
  'LOG_LEVEL',
];

/** The allowed variables of `parent`, then what the launcher sets on purpose (`deliberate`). */
export function childEnvironment(
  parent: Readonly<Record<string, string | undefined>>,
  deliberate: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of CHILD_ENV_ALLOWED) {
    const value = parent[name];
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...deliberate };
}
