import fs from 'node:fs';
import path from 'node:path';
import { expectCaseHealthy, runFaultCase } from './fault-harness';

/**
 * Fault suite: a node loses its volume. It is killed, its data directory is
 * removed, and it starts again on an empty disk: it must refill from its peers
 * before it serves reads as a full replica, or quorum reads that pair it with
 * the one replica that missed a write would lose that write.
 */
jest.setTimeout(180_000);

test('wipe a node’s data directory and restart it: it refills, nothing acknowledged is lost', async () => {
  const report = await runFaultCase({
    name: 'wipe a node’s data directory, restart it empty',
    inject: async (tc) => {
      await tc.cluster.signal('n2', 'SIGKILL');
      const dir = path.join(tc.dataDir, 'nodes', 'n2');
      fs.rmSync(dir, { recursive: true, force: true });
      if (fs.existsSync(dir)) throw new Error(`${dir} is still there`);
      return 'SIGKILL n2, removed its data directory';
    },
    heal: async (tc) => {
      await tc.cluster.startProcess('n2');
      return 'restarted n2 on an empty disk';
    },
  });
  expectCaseHealthy(report);
});
