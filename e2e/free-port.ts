import net from 'node:net';

// Below Linux's ephemeral range (32768+ by default): there the kernel hands ports to outgoing
// connections and to bind(0) of every process on the machine, so a port found free could be
// taken between this check and the caller's bind (CI saw EADDRINUSE that way).
const LOW = 10_000;
const HIGH = 32_000;
// Never hand the same port out twice in one process, even once it is free again: a harness
// picks several ports before it binds any.
const handedOut = new Set<number>();

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.unref();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A base port such that base+o is free on 127.0.0.1 for every offset o, and none was handed out before. */
export async function freePortsAt(offsets: readonly number[]): Promise<number> {
  const span = Math.max(0, ...offsets);
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = LOW + Math.floor(Math.random() * (HIGH - LOW - span));
    const ports = offsets.map((o) => base + o);
    if (ports.some((p) => handedOut.has(p))) continue;
    const free = await Promise.all(ports.map(canBind));
    if (!free.every(Boolean)) continue;
    for (const p of ports) handedOut.add(p);
    return base;
  }
  throw new Error(`no free ports at offsets ${offsets.join(',')} found in ${LOW}..${HIGH}`);
}

/** A TCP port free on 127.0.0.1 right now, outside the range the kernel assigns on its own. */
export function freePort(): Promise<number> {
  return freePortsAt([0]);
}

/** A base port such that base..base+nodes and base+101..base+101+nodes are free (LocalCluster's layout). */
export function freePortBlock(nodes: number): Promise<number> {
  const offsets = [0];
  for (let i = 0; i < nodes; i++) offsets.push(1 + i, 101 + i);
  return freePortsAt(offsets);
}
