import {
  live,
  key,
  partitionOfKey,
  mapOf,
  replica,
  reopen,
  pass,
  allRoots,
  env,
  useReplicaFixtures,
} from './anti-entropy.fixtures';

/** Refilling an empty disk from peers (node/refill.ts), through the AntiEntropy facade over real replicas. */

useReplicaFixtures();

describe('anti-entropy between real replicas', () => {
  it('refills an empty disk from a full replica, refusing reads until every partition is synced', async () => {
    env.map = mapOf(['a', 'b', 'c']);
    let a = replica('a');
    for (let i = 0; i < 300; i++)
      await a.storage.applyRecord(partitionOfKey(i), key(i), live(env.now + i, `v${i}`));
    a = await reopen(a); // a full replica: not a fresh disk
    expect(a.ae.readyForReads()).toBe(true);
    const b = replica('b'); // the lost volume
    const c = replica('c'); // a second empty disk, not a source of anything
    expect(b.ae.readyForReads()).toBe(false);
    expect(b.ae.notReadyReason()).toMatch(/refilling/);

    // The only full replica is down: b syncs with c, but an empty peer is no source.
    a.down = true;
    b.ae.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(b.ae.readyForReads()).toBe(false);
    expect(b.ae.status().refilling).toBe(true);

    a.down = false;
    for (let i = 0; i < 200 && !b.ae.readyForReads(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(b.ae.readyForReads()).toBe(true);
    await b.ae.stop();
    for (let i = 0; i < 300; i++)
      expect(b.storage.get(partitionOfKey(i), key(i))?.value.toString()).toBe(`v${i}`);
    expect(allRoots(b).equals(allRoots(a))).toBe(true);

    // A restart mid-refill resumes the refill (the marker is on disk); a finished one does not.
    const b2 = await reopen(b);
    expect(b2.storage.freshDisk).toBe(false);
    expect(b2.ae.readyForReads()).toBe(true);
    expect(c.ae.readyForReads()).toBe(false);
  });

  it('makes a brand-new cluster (every disk empty) ready after one pass', async () => {
    env.map = mapOf(['a', 'b', 'c']);
    const rs = ['a', 'b', 'c'].map((id) => replica(id));
    expect(rs.every((r) => !r.ae.readyForReads())).toBe(true);
    await Promise.all(rs.map((r) => pass(r)));
    expect(rs.every((r) => r.ae.readyForReads())).toBe(true);
  });

  it('keeps refilling across a restart that interrupts it', async () => {
    env.map = mapOf(['a', 'b']);
    let a = replica('a');
    await a.storage.applyRecord(0, key(0), live(env.now, 'x'));
    a = await reopen(a);
    a.down = true;
    const b = replica('b');
    b.ae.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(b.ae.readyForReads()).toBe(false);
    const b2 = await reopen(b); // not a fresh disk any more, but the refill never finished
    expect(b2.ae.readyForReads()).toBe(false);
    a.down = false;
    await pass(b2);
    expect(b2.ae.readyForReads()).toBe(true);
    expect(b2.storage.get(0, key(0))?.value.toString()).toBe('x');
  });
});
