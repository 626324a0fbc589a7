import { expectCaseHealthy, runFaultCase } from './fault-harness';

/**
 * Fault suite: a storage node freezes (SIGSTOP: a stalled or partitioned peer
 * whose sockets stay open) for four seconds, then carries on (SIGCONT).
 */
jest.setTimeout(180_000);

test('SIGSTOP a node for seconds, then SIGCONT: no request hangs, nothing acknowledged is lost', async () => {
  const report = await runFaultCase({
    name: 'SIGSTOP a node for 4 s, SIGCONT',
    inject: async (tc) => {
      await tc.cluster.signal('n2', 'SIGSTOP');
      return 'SIGSTOP n2';
    },
    heal: async (tc) => {
      await tc.cluster.signal('n2', 'SIGCONT');
      return 'SIGCONT n2';
    },
  });
  expectCaseHealthy(report);
});
