/**
 * Loaded with NODE_OPTIONS="--require dist/bench/profile-hook.js" into kvstore's
 * processes for the profile run (`--cpu-prof` itself is not allowed in
 * NODE_OPTIONS, and LocalCluster starts its processes with plain `node main.js`).
 * Starts the V8 sampling profiler at once and writes a .cpuprofile into
 * $KVSTORE_CPU_PROF_DIR when the process exits: the in-thread inspector session
 * answers synchronously, which is what lets this work inside an 'exit' handler.
 */
import fs from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const dir = process.env.KVSTORE_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.setSamplingInterval', { interval: 200 });
  session.post('Profiler.enable');
  session.post('Profiler.start');
  // The role (node id or gateway) names the file, so the summary can tell processes apart.
  const args = process.argv.slice(2);
  const idAt = args.indexOf('--id');
  const role = `${path.basename(path.dirname(process.argv[1] ?? 'x'))}-${idAt >= 0 ? args[idAt + 1] : process.pid}`;
  process.on('exit', () => {
    session.post('Profiler.stop', (err, res) => {
      if (err) return;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `${role}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
