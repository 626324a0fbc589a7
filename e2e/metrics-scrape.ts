/**
 * Reads one metric from a process's Prometheus text endpoint (`<url>/metrics`):
 * the sum of every sample of `name` whose labels include all of `labels`.
 * For e2e checks on a single process; the observability suite queries a real
 * Prometheus instead.
 */
export async function scrapeSum(
  url: string,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  const res = await fetch(`${url}/metrics`);
  if (res.status !== 200) throw new Error(`${url}/metrics answered ${res.status}`);
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of (await res.text()).split('\n')) {
    if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue;
    const close = line.lastIndexOf('}');
    const labelText = close === -1 ? '' : line.slice(name.length + 1, close);
    const present = labelText === '' ? [] : labelText.split(/,(?=[a-zA-Z_][a-zA-Z0-9_]*=")/);
    if (wanted.every((w) => present.includes(w))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
