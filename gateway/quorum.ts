export interface Outcome<T> {
  readonly ok: ReadonlyArray<readonly [string, T]>;
  readonly failed: ReadonlyArray<readonly [string, unknown]>;
}

/**
 * Calls every target at once and settles `quorum` as soon as `need` calls have
 * succeeded, or as soon as so many have failed that `need` is out of reach: one
 * dead or slow replica never holds a request beyond what the level requires.
 * `all` settles when every call has, for read repair and logging.
 */
export function gather<T>(
  targets: readonly string[],
  need: number,
  call: (target: string) => Promise<T>,
): { quorum: Promise<Outcome<T>>; all: Promise<Outcome<T>> } {
  const ok: [string, T][] = [];
  const failed: [string, unknown][] = [];
  let settleQuorum!: (o: Outcome<T>) => void;
  const quorum = new Promise<Outcome<T>>((resolve) => (settleQuorum = resolve));
  let quorumDone = false;
  const check = (): void => {
    if (quorumDone) return;
    if (
      ok.length >= need ||
      failed.length > targets.length - need ||
      ok.length + failed.length === targets.length
    ) {
      quorumDone = true;
      settleQuorum({ ok: [...ok], failed: [...failed] });
    }
  };
  const all = Promise.all(
    targets.map((t) => {
      let p: Promise<T>;
      try {
        p = call(t);
      } catch (err) {
        p = Promise.reject(err);
      }
      return p.then(
        (v) => {
          ok.push([t, v]);
          check();
        },
        (err: unknown) => {
          failed.push([t, err]);
          check();
        },
      );
    }),
  ).then(() => ({ ok: [...ok], failed: [...failed] }));
  check();
  return { quorum, all };
}
