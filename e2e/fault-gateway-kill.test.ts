import { expectCaseHealthy, runFaultCase } from './fault-harness';

/**
 * Fault suite: the gateway (the coordinator) dies mid-write, leaving writes
 * that reached some replicas and were never answered; it restarts with the
 * same id. Those writes are indeterminate; acknowledged ones must all survive,
 * and the replicas must converge although no coordinator will retry or hint.
 */
jest.setTimeout(180_000);

test('SIGKILL the gateway mid-write and restart it: nothing acknowledged is lost, replicas converge', async () => {
  const report = await runFaultCase({
    name: 'SIGKILL the gateway mid-write, restart it',
    inject: async (tc) => {
      await tc.cluster.signal('gateway', 'SIGKILL');
      return 'SIGKILL gateway';
    },
    heal: async (tc) => {
      await tc.cluster.startProcess('gateway');
      return 'restarted gateway';
    },
  });
  expectCaseHealthy(report);
  // Requests were in flight when it died, and more were refused while it was down.
  expect(report.outcomes.failed).toBeGreaterThan(0);
});
