import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/**
 * Cuts one local process off the network, as a partition would, with
 * iptables on loopback:
 * - nothing reaches its listening port and nothing leaves it (`--dport` and
 *   `--sport` DROP), so gateways and peers cannot talk to it, not even over
 *   connections already open (packets vanish; nothing is refused);
 * - with cgroup v2, the process is moved into a cgroup of its own and every
 *   packet it sends is dropped (`-m cgroup --path`), so the connections it
 *   opens itself (hint replay, anti-entropy) are cut too.
 * Needs root (CAP_NET_ADMIN) and the Debian package `iptables` (nft or legacy
 * backend). When the machine does not allow it, cutOff throws
 * NetworkFaultUnavailable saying why: the caller fails, never skips.
 */

export class NetworkFaultUnavailable extends Error {
  override readonly name = 'NetworkFaultUnavailable';
}

export class NetworkFaultError extends Error {
  override readonly name = 'NetworkFaultError';
}

export interface NetworkCut {
  /** what was cut, for the test's summary */
  readonly description: string;
  /** removes every rule and moves the process back; idempotent */
  heal(): Promise<void>;
}

function run(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, [...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          code === 'ENOENT'
            ? new NetworkFaultUnavailable(`${cmd} is not installed (Debian: apt-get install -y iptables)`)
            : new NetworkFaultError(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`),
        );
        return;
      }
      resolve(stdout);
    });
  });
}

const iptables = (...args: string[]): Promise<string> => run('iptables', ['-w', '5', ...args]);

/** The cgroup v2 hierarchy's mount point (unified, or hybrid under /sys/fs/cgroup/unified), if any. */
function cgroup2Mount(): string | undefined {
  let mounts: string;
  try {
    mounts = fs.readFileSync('/proc/mounts', 'utf8');
  } catch {
    return undefined; // not Linux, or /proc hidden: no cgroup rule, the port rules still cut
  }
  for (const line of mounts.split('\n')) {
    const [, mountPoint, type] = line.split(' ');
    if (type === 'cgroup2' && mountPoint) return mountPoint;
  }
  return undefined;
}

/** The process's cgroup v2 path relative to the hierarchy root (`0::/path`). */
function cgroupOf(pid: number): string | undefined {
  const line = fs
    .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  return line?.slice(3);
}

/** Checks that this machine lets us add iptables rules; throws NetworkFaultUnavailable if not. */
export async function checkNetworkFaults(): Promise<void> {
  if (process.platform !== 'linux')
    throw new NetworkFaultUnavailable(`iptables needs Linux, this is ${process.platform}`);
  if (process.getuid?.() !== 0) {
    throw new NetworkFaultUnavailable('iptables needs root (CAP_NET_ADMIN); the tests run as a normal user');
  }
  try {
    await iptables('-S', 'OUTPUT');
  } catch (err) {
    if (err instanceof NetworkFaultUnavailable) throw err;
    throw new NetworkFaultUnavailable(`iptables does not work here: ${(err as Error).message}`);
  }
}

const live = new Set<string>();
let exitHook = false;

/** Removes a chain synchronously (process exit): a test that dies mid-cut must not leave the machine partitioned. */
function removeChainSync(chain: string): void {
  for (const args of [
    ['-D', 'INPUT', '-j', chain],
    ['-D', 'OUTPUT', '-j', chain],
    ['-F', chain],
    ['-X', chain],
  ]) {
    try {
      execFileSync('iptables', ['-w', '5', ...args], { stdio: 'ignore' });
    } catch {
      // Best effort at exit: the rule may already be gone.
    }
  }
}

/** Cuts the process `pid`, listening on 127.0.0.1:`port`, off the network. */
export async function cutOff(o: { pid: number; port: number; name: string }): Promise<NetworkCut> {
  await checkNetworkFaults();
  const chain = `KVFAULT-${o.port}`;
  // What has been done so far, so heal (or a failed cut) undoes exactly that, in reverse.
  const done = { chain: false, input: false, output: false, cgroup: undefined as string | undefined };
  let moved: { mount: string; home: string } | undefined;

  const heal = async (): Promise<void> => {
    const errors: string[] = [];
    const attempt = async (what: boolean, fn: () => unknown): Promise<boolean> => {
      if (!what) return false;
      try {
        await fn();
        return false;
      } catch (err) {
        errors.push((err as Error).message);
        return true;
      }
    };
    done.input = await attempt(done.input, () => iptables('-D', 'INPUT', '-j', chain));
    done.output = await attempt(done.output, () => iptables('-D', 'OUTPUT', '-j', chain));
    if (done.chain && !done.input && !done.output) {
      done.chain = await attempt(true, async () => {
        await iptables('-F', chain);
        await iptables('-X', chain);
      });
      if (!done.chain) live.delete(chain);
    }
    if (moved) {
      const { mount, home } = moved;
      // Back where it was, so its cgroup can go (a process that died meanwhile needs nothing).
      const failed = await attempt(true, () => {
        if (fs.existsSync(`/proc/${o.pid}`))
          fs.writeFileSync(path.join(mount, home, 'cgroup.procs'), String(o.pid));
      });
      if (!failed) moved = undefined;
    }
    if (done.cgroup && !moved) {
      const dir = done.cgroup;
      if (!(await attempt(true, () => fs.rmdirSync(dir)))) done.cgroup = undefined;
    }
    if (errors.length > 0)
      throw new NetworkFaultError(`healing ${o.name} left things behind: ${errors.join('; ')}`);
  };

  let cgroupNote: string;
  try {
    await iptables('-N', chain);
    done.chain = true;
    live.add(chain);
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => [...live].forEach(removeChainSync));
    }
    await iptables('-A', chain, '-p', 'tcp', '--dport', String(o.port), '-j', 'DROP');
    await iptables('-A', chain, '-p', 'tcp', '--sport', String(o.port), '-j', 'DROP');

    const mount = cgroup2Mount();
    const home = mount ? cgroupOf(o.pid) : undefined;
    if (mount && home !== undefined) {
      const name = `kvstore-fault-${o.port}`;
      const dir = path.join(mount, name);
      fs.mkdirSync(dir);
      done.cgroup = dir;
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(o.pid));
      moved = { mount, home };
      await iptables('-A', chain, '-m', 'cgroup', '--path', name, '-j', 'DROP');
      cgroupNote = `, and every packet ${o.name} sends (cgroup v2 ${name})`;
    } else {
      cgroupNote = `; connections ${o.name} opens itself are not cut (no cgroup v2 on this machine)`;
    }
    await iptables('-I', 'INPUT', '1', '-j', chain);
    done.input = true;
    await iptables('-I', 'OUTPUT', '1', '-j', chain);
    done.output = true;
  } catch (err) {
    await heal();
    throw err;
  }
  return { description: `iptables DROP of tcp port ${o.port} both ways${cgroupNote}`, heal };
}

/** True when a TCP connection to 127.0.0.1:port opens within `ms`. */
export function canConnect(port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
