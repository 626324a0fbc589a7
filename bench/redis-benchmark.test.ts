import { parseRedisBenchmarkCsv, RedisBenchmarkError } from './redis-benchmark';

test('parses redis-benchmark 7 CSV', () => {
  const text = [
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"',
    '"SET","89285.71","0.297","0.088","0.287","0.407","0.535","2.367"',
    '"GET","89365.51","0.292","0.088","0.287","0.351","0.431","3.999"',
    '',
  ].join('\n');
  expect(parseRedisBenchmarkCsv(text)).toEqual([
    {
      test: 'SET',
      rps: 89285.71,
      latencyMs: { avg: 0.297, min: 0.088, p50: 0.287, p95: 0.407, p99: 0.535, max: 2.367 },
    },
    {
      test: 'GET',
      rps: 89365.51,
      latencyMs: { avg: 0.292, min: 0.088, p50: 0.287, p95: 0.351, p99: 0.431, max: 3.999 },
    },
  ]);
});

test('refuses output it does not understand instead of reporting zeros', () => {
  expect(() => parseRedisBenchmarkCsv('SET: 89285.71 requests per second\n')).toThrow(RedisBenchmarkError);
  expect(() =>
    parseRedisBenchmarkCsv(
      '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"\n"SET","fast"\n',
    ),
  ).toThrow(/unparseable/);
});
