import type { ApiError } from './api-error';

export interface Outcome<T> {
  readonly ok: ReadonlyArray<readonly [string, T]>;
  readonly failed: ReadonlyArray<readonly [string, unknown]>;
}

/**
 * Why a key's request fell short of its level: the 503 to answer, the newest epoch a replica that
 * refused it as stale holds (undefined: none did), and `report`, which counts and logs the failure
 * once it is the answer (an attempt retried with a newer map is not a failure).
 */
export interface Shortfall {
  readonly error: ApiError;
  readonly staleEpoch: number | undefined;
  report(): void;
}

/** The level is met, out of reach, or every target has answered: the quorum promise settles. */
export function levelSettled(ok: number, failed: number, targets: number, need: number): boolean {
  return ok >= need || failed > targets - need || ok + failed === targets;
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
    if (levelSettled(ok.length, failed.length, targets.length, need)) {
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

/** Why `gatherStaged` asked one more target than the level needs. */
export type ExtraReason = 'failed' | 'slow';

export interface StagedOptions {
  /**
   * Ask one more target each time this long passes with the level still short
   * (a replica that is up but not answering: stopped, paused by GC, overloaded).
   * Undefined: only after failures.
   */
  readonly hedgeAfterMs?: number;
  /** told each time a target beyond the first `need` is asked */
  readonly onExtra?: (reason: ExtraReason) => void;
}

/**
 * Asks the first `need` targets (in the order given: the caller puts the likeliest
 * to answer quickly first) and the next one for each that fails or, with
 * `hedgeAfterMs`, for each hedge interval that passes short of the level. When
 * every replica answers, a read costs R requests instead of RF: the design's
 * "reads from R replicas". Settles `quorum` as `gather` does; `all` settles once
 * every target that was asked has answered or failed (targets never asked are in
 * neither list).
 */
export function gatherStaged<T>(
  targets: readonly string[],
  need: number,
  call: (target: string) => Promise<T>,
  opts: StagedOptions = {},
): { quorum: Promise<Outcome<T>>; all: Promise<Outcome<T>> } {
  const ok: [string, T][] = [];
  const failed: [string, unknown][] = [];
  let settleQuorum!: (o: Outcome<T>) => void;
  const quorum = new Promise<Outcome<T>>((resolve) => (settleQuorum = resolve));
  let settleAll!: (o: Outcome<T>) => void;
  const all = new Promise<Outcome<T>>((resolve) => (settleAll = resolve));
  let quorumDone = false;
  let started = 0;
  let hedge: NodeJS.Timeout | undefined;

  const finishIfSettled = (): void => {
    if (quorumDone && ok.length + failed.length === started) settleAll({ ok: [...ok], failed: [...failed] });
  };
  const check = (): void => {
    if (quorumDone) return;
    if (levelSettled(ok.length, failed.length, targets.length, need)) {
      quorumDone = true;
      if (hedge) clearTimeout(hedge);
      settleQuorum({ ok: [...ok], failed: [...failed] });
    }
  };
  const start = (reason?: ExtraReason): void => {
    const t = targets[started++];
    if (reason) opts.onExtra?.(reason);
    let p: Promise<T>;
    try {
      p = call(t);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (v) => {
        ok.push([t, v]);
        check();
        finishIfSettled();
      },
      (err: unknown) => {
        failed.push([t, err]);
        check();
        if (!quorumDone && started < targets.length) start('failed');
        finishIfSettled();
      },
    );
  };
  const armHedge = (): void => {
    if (opts.hedgeAfterMs === undefined || started >= targets.length) return;
    hedge = setTimeout(() => {
      hedge = undefined;
      if (quorumDone || started >= targets.length) return;
      start('slow');
      armHedge();
    }, opts.hedgeAfterMs);
  };

  while (started < Math.min(need, targets.length)) start();
  check();
  finishIfSettled();
  if (!quorumDone) armHedge();
  return { quorum, all };
}
