import { KeyValueStoreClient } from '../client';
import { checkHistory } from '../verify/history-checker';
import { HistoryRecorder, readFinal, runWorkload, type WorkloadResult } from '../verify/workload';

/**
 * The load the rebalancing suites keep running across scale steps: 4 clients
 * over 200 keys at quorum, every request recorded, and the check at the end
 * that the issue asks for: the history goes through the history checker.
 */
export interface RecordedLoad {
  readonly url: string;
  /** the API key the load sends, also used for the final reads */
  readonly token?: string;
  readonly recorder: HistoryRecorder;
  readonly abort: AbortController;
  readonly done: Promise<WorkloadResult>;
}

export function startRecordedLoad(url: string, durationMs: number, token?: string): RecordedLoad {
  const recorder = new HistoryRecorder();
  const abort = new AbortController();
  const done = runWorkload({
    url,
    clients: 4,
    keys: 200,
    durationMs,
    consistency: 'quorum',
    timeoutMs: 5000,
    signal: abort.signal,
    recorder,
    ...(token ? { token } : {}),
  });
  return { url, recorder, abort, done, ...(token ? { token } : {}) };
}

/**
 * Stops the load, reads every key at `all` through `readUrl`, and expects no
 * violation (no acknowledged write lost, no deleted key back, nothing hung)
 * and, unless `allowFailures`, no failed request. Returns the failed ones.
 */
export async function stopAndCheckLoad(
  load: RecordedLoad,
  o: { replicationFactor: number; readUrl?: string; allowFailures?: boolean },
): Promise<string[]> {
  load.abort.abort();
  const result = await load.done;
  const kv = new KeyValueStoreClient({
    url: o.readUrl ?? load.url,
    ...(load.token ? { token: load.token } : {}),
  });
  const final = await readFinal(kv, result.keys, { consistency: 'all', source: 'gateway' });
  const history = load.recorder.history(final);
  const failed = history.ops
    .filter((op) => op.outcome !== 'ok')
    .map((op) => `${op.op} ${op.key}: ${op.outcome} ${op.error ?? ''}`);
  if (!o.allowFailures) expect(failed).toEqual([]);
  expect(history.ops.length).toBeGreaterThan(100);
  const { violations } = checkHistory(history, {
    replicationFactor: o.replicationFactor,
    realTimeVersions: true,
    timeoutMs: result.settings.timeoutMs,
  });
  expect(violations).toEqual([]);
  return failed;
}
