import { Registry } from 'prom-client';
import { AntiEntropy } from './anti-entropy';
import { exclusionQuantumMs } from './purge';
import {
  log,
  P,
  GRACE,
  live,
  tomb,
  key,
  partitionOfKey,
  mapOf,
  peerOf,
  newAntiEntropy,
  replica,
  reopen,
  pass,
  allRoots,
  rebuiltRoots,
  stored,
  env,
  useReplicaFixtures,
} from './anti-entropy.fixtures';

/** Repair passes: scheduling, throttling, purging, retries (node/repair-passes.ts), over real replicas. */

useReplicaFixtures();

describe('anti-entropy between real replicas', () => {
  it('purges tombstones only after the grace period and once every replica agrees; they never come back', async () => {
    env.map = mapOf(['a', 'b', 'c']);
    let [a, b, c] = ['a', 'b', 'c'].map((id) => replica(id));
    await Promise.all([a, b, c].map((r) => pass(r))); // brand new: ready
    for (let i = 0; i < 10; i++) {
      for (const r of [a, b, c])
        await r.storage.applyRecord(partitionOfKey(i), key(i), live(env.now, `old${i}`));
    }
    // c is down while the keys are deleted: it keeps the old values.
    env.now += 10;
    for (let i = 0; i < 10; i++) {
      for (const r of [a, b]) await r.storage.applyRecord(partitionOfKey(i), key(i), tomb(env.now));
    }
    [a, b, c] = [await reopen(a), await reopen(b), await reopen(c)];
    c.down = true;
    env.now += GRACE + exclusionQuantumMs(GRACE) + 1;
    await pass(a);
    await pass(b);
    // c unreachable: no agreement, nothing purged, although the grace period is over.
    expect(stored(a)).toBe(10);
    expect(stored(b)).toBe(10);
    expect(a.storage.get(0, key(0))?.tombstone).toBe(true);

    // c is back: the tombstones (past grace) still beat its older values, then every replica purges.
    c.down = false;
    await pass(a);
    expect(stored(c)).toBe(10);
    for (let i = 0; i < 10; i++) expect(c.storage.get(partitionOfKey(i), key(i))?.tombstone).toBe(true);
    expect(stored(a)).toBe(0);
    await pass(b);
    await pass(c);
    for (const r of [a, b, c]) expect(stored(r)).toBe(0);

    // More passes in any order: nothing comes back, trees stay equal to a rebuild.
    for (const r of [c, a, b, a]) await pass(r);
    for (const r of [a, b, c]) {
      expect(stored(r)).toBe(0);
      expect(allRoots(r).equals(rebuiltRoots(r))).toBe(true);
    }
  });

  it('purges records past their expiry plus the grace period, keeping the trees consistent', async () => {
    env.map = mapOf(['a', 'b']);
    let a = replica('a');
    let b = replica('b');
    for (const r of [a, b]) {
      await r.storage.applyRecord(1, key(1), live(env.now, 'short', env.now + 100));
      await r.storage.applyRecord(1, key(5), live(env.now, 'long', env.now + 100_000));
      await r.storage.applyRecord(1, key(9), live(env.now, 'forever'));
    }
    [a, b] = [await reopen(a), await reopen(b)];
    env.now += 100 + GRACE + exclusionQuantumMs(GRACE) + 1;
    await pass(a);
    await pass(b);
    for (const r of [a, b]) {
      expect(r.storage.get(1, key(1))).toBeUndefined();
      expect(r.storage.get(1, key(5))?.value.toString()).toBe('long');
      expect(r.storage.get(1, key(9))?.value.toString()).toBe('forever');
      expect(allRoots(r).equals(rebuiltRoots(r))).toBe(true);
    }
  });

  it('with interval 0 runs no pass by itself, but on repair, and still refills an empty disk', async () => {
    env.map = mapOf(['a', 'b']);
    let a = replica('a');
    let b = replica('b');
    await a.storage.applyRecord(0, key(0), live(env.now, 'x'));
    [a, b] = [await reopen(a), await reopen(b)];
    b.ae = newAntiEntropy(b, { intervalMs: 0 });
    b.ae.build(P);
    b.ae.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(b.ae.status()).toEqual(expect.objectContaining({ running: false, partitionsTotal: 0 }));
    expect(stored(b)).toBe(0);
    b.ae.repair([0]);
    await b.ae.idle();
    expect(b.ae.status()).toEqual(expect.objectContaining({ partitionsTotal: 1, partitionsDone: 1 }));
    expect(b.storage.get(0, key(0))?.value.toString()).toBe('x');
    await b.ae.stop();

    const c = replica('c');
    env.map = mapOf(['a', 'c']);
    c.ae = newAntiEntropy(c, { intervalMs: 0 });
    c.ae.build(P);
    c.ae.start();
    for (let i = 0; i < 100 && !c.ae.readyForReads(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(c.ae.readyForReads()).toBe(true);
    expect(c.storage.get(0, key(0))?.value.toString()).toBe('x');
  });

  it('throttles repairs to the configured keys per second', async () => {
    env.map = mapOf(['a', 'b']);
    let a = replica('a');
    for (let i = 0; i < 300; i++)
      await a.storage.applyRecord(partitionOfKey(i), key(i), live(env.now, `v${i}`));
    a = await reopen(a);
    const b = replica('b');
    b.ae = newAntiEntropy(b, { maxKeysPerSecond: 200 });
    const started = Date.now();
    await pass(b);
    expect(stored(b)).toBe(300);
    // A burst of 200 keys, then 200 per second: the other 100 take at least half a second.
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(2000);
  });
});

describe('a replica that has just started', () => {
  it('is skipped while it builds its trees, and its partitions are retried soon, not at the next interval', async () => {
    let a = replica('a');
    const b = replica('b');
    // a's first pass as a one-node cluster ends its refill (a refill retries quickly on its own), and a
    // restart makes it a node with a disk of its own.
    env.map = mapOf(['a']);
    await pass(a);
    a = await reopen(a);
    env.map = mapOf(['a', 'b']);
    for (let i = 0; i < 20; i++)
      await a.storage.applyRecord(partitionOfKey(i), key(i), live(env.now + i, `a${i}`));
    for (let i = 100; i < 106; i++)
      await b.storage.applyRecord(partitionOfKey(i), key(i), live(env.now + i, `b${i}`));
    // b restarts: its trees are built in the background, held at the first record until released.
    await b.ae.stop();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    b.ae = newAntiEntropy(b);
    const building = b.ae.buildInBackground(P, { sliceMs: 0, checkEvery: 1, pause: () => held });
    const registry = new Registry();
    const aAe = new AntiEntropy({
      storage: a.storage,
      nodeId: 'a',
      map: () => env.map,
      peer: (id) => (id === 'b' ? peerOf(b) : undefined),
      log,
      registry,
      intervalMs: 1e9,
      maxKeysPerSecond: 1e6,
      tombstoneGraceMs: GRACE,
      now: () => env.now,
    });
    aAe.build(P);
    try {
      aAe.start();
      await aAe.idle();
      // Nothing synced, and "still building" is not counted as a peer error.
      expect([stored(a), stored(b)]).toEqual([20, 6]);
      expect(
        await registry.getSingleMetricAsString('kvstore_node_antientropy_peer_errors_total'),
      ).not.toMatch(/peer="b"\} [1-9]/);
      release();
      await building;
      // The retry (1 s after the pass, not the 1e9 ms interval) syncs both ways; 3 s at most here.
      for (let i = 0; i < 60 && stored(b) < 26; i++) await new Promise((r) => setTimeout(r, 50));
      await aAe.idle();
    } finally {
      await aAe.stop();
    }
    expect([stored(a), stored(b)]).toEqual([26, 26]);
  });
});
