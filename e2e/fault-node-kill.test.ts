import { expectCaseHealthy, runFaultCase } from './fault-harness';

/** Fault suite: a storage node dies without warning mid-load and comes back on the same disk. */
jest.setTimeout(180_000);

test('SIGKILL a node mid-load and restart it: nothing acknowledged is lost, every node converges', async () => {
  const report = await runFaultCase({
    name: 'SIGKILL a node mid-load, restart it',
    inject: async (tc) => {
      await tc.cluster.signal('n2', 'SIGKILL');
      return 'SIGKILL n2';
    },
    heal: async (tc) => {
      await tc.cluster.startProcess('n2');
      return 'restarted n2';
    },
  });
  expectCaseHealthy(report);
});
