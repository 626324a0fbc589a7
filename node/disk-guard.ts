import fs from 'node:fs';
import client from 'prom-client';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';
import { admits, assessDisk, type DiskSample, type DiskState, type DiskWatermark } from './disk-space';
import { StorageError } from './storage';

/** What Storage asks before each write transaction, and tells after one failed. */
export interface WriteAdmission {
  /** throws StorageError (insufficient_storage, write_failed) when the write must not go in now */
  admit(bytes: number, shrinking: boolean): void;
  onCommitFailure(err: unknown): void;
}

export interface DiskGuardOptions {
  readonly dataDir: string;
  /** LMDB's file size and the bytes of its pages in use (Storage.diskUsage) */
  readonly usage: () => { fileBytes: number; usedBytes: number };
  readonly watermark: DiskWatermark;
  readonly log: Logger;
  readonly registry: client.Registry;
  /** how often the filesystem is measured; default 1 s */
  readonly intervalMs?: number;
  /** after a failed commit, writes are refused this long, then tried again; default 5 s */
  readonly retryAfterFailureMs?: number;
  readonly now?: () => number;
}

export interface DiskStatus {
  readonly pressure: boolean;
  readonly availableBytes: number;
  readonly thresholdBytes: number;
  readonly reason?: string;
}

/**
 * Watches the data volume (node/disk-space.ts) and admits or refuses each write transaction, so a
 * full disk makes the node refuse writes with `insufficient_storage` and keep serving reads,
 * instead of LMDB failing mid-commit. A commit that fails anyway (the disk filled faster than the
 * samples, or an I/O error) refuses writes for a while and is retried after. Each episode is logged
 * once when it starts and once when it ends.
 */
export class DiskGuard implements WriteAdmission {
  private state: DiskState | undefined;
  /** bytes admitted since the last sample */
  private spent = 0;
  private failedUntil = 0;
  private lastFailure: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private readonly refused: client.Counter<'reason'>;

  constructor(private readonly o: DiskGuardOptions) {
    this.now = o.now ?? Date.now;
    const registry = o.registry;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the gauges' collect() has its own `this`
    const guard = this;
    new client.Gauge({
      name: 'kvstore_node_disk_available_bytes',
      help: 'Room for new data: free bytes on the data volume plus LMDB pages that can be reused',
      registers: [registry],
      collect() {
        this.set(guard.state?.availableBytes ?? 0);
      },
    });
    new client.Gauge({
      name: 'kvstore_node_disk_watermark_bytes',
      help: 'Writes that grow the data are refused with less room than this (--disk-min-free-bytes, --disk-min-free-percent)',
      registers: [registry],
      collect() {
        this.set(guard.state?.thresholdBytes ?? 0);
      },
    });
    new client.Gauge({
      name: 'kvstore_node_disk_pressure',
      help: '1 while the node refuses writes for lack of disk space (or after a failed commit), else 0',
      registers: [registry],
      collect() {
        this.set(guard.refusing() ? 1 : 0);
      },
    });
    this.refused = new client.Counter({
      name: 'kvstore_node_writes_refused_total',
      help: 'Write transactions refused before they began, by reason',
      labelNames: ['reason'],
      registers: [registry],
    });
    for (const reason of ['insufficient_storage', 'write_failed']) this.refused.inc({ reason }, 0);
    this.sample();
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sample(), this.o.intervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Measures now; logs the start and end of a pressure episode. */
  sample(): DiskState | undefined {
    let measured: DiskSample;
    try {
      const s = fs.statfsSync(this.o.dataDir);
      const { fileBytes, usedBytes } = this.o.usage();
      measured = { fsSizeBytes: s.blocks * s.bsize, fsFreeBytes: s.bavail * s.bsize, fileBytes, usedBytes };
    } catch (err) {
      // Unmeasured is not full: the last state stands, and a commit that fails is still caught.
      this.o.log.warn({ err }, 'cannot measure the data volume');
      return this.state;
    }
    const was = this.state?.pressure ?? false;
    const state = assessDisk(measured, this.o.watermark, was);
    this.state = state;
    this.spent = 0;
    if (state.pressure && !was) {
      this.o.log.error(
        { availableBytes: state.availableBytes, thresholdBytes: state.thresholdBytes },
        `disk pressure: ${state.reason}; refusing writes that grow the data, serving reads`,
      );
    } else if (!state.pressure && was) {
      this.o.log.info(
        { availableBytes: state.availableBytes, thresholdBytes: state.thresholdBytes },
        'disk pressure over: taking writes again',
      );
    }
    return state;
  }

  admit(bytes: number, shrinking: boolean): void {
    if (this.now() < this.failedUntil) {
      this.refused.inc({ reason: 'write_failed' });
      throw new StorageError(
        'write_failed',
        `the last write transaction failed (${this.lastFailure ?? 'unknown'}); writes resume within ${this.failedUntil - this.now()} ms`,
      );
    }
    const state = this.state;
    if (!state || admits(state, this.spent, bytes, shrinking)) {
      this.spent += bytes;
      return;
    }
    this.refused.inc({ reason: 'insufficient_storage' });
    if (!state.pressure) {
      // Refusing growing writes is being under pressure, whatever the last sample said: the episode
      // starts now and ends only once a sample finds room a margin above the watermark.
      this.state = {
        ...state,
        pressure: true,
        reason: `writes of ${bytes} bytes would leave less than the watermark of ${(state.thresholdBytes / (1024 * 1024)).toFixed(1)} MiB free`,
      };
      this.o.log.error(
        { availableBytes: state.availableBytes, thresholdBytes: state.thresholdBytes },
        `disk pressure: ${this.state.reason ?? ''}; refusing writes that grow the data, serving reads`,
      );
    }
    throw new StorageError('insufficient_storage', this.state?.reason ?? 'the data volume is full', {
      availableBytes: state.availableBytes,
      thresholdBytes: state.thresholdBytes,
    });
  }

  onCommitFailure(err: unknown): void {
    const wasFailing = this.now() < this.failedUntil;
    this.failedUntil = this.now() + (this.o.retryAfterFailureMs ?? 5000);
    this.lastFailure = errorMessage(err);
    if (!wasFailing) {
      this.o.log.error({ err }, 'a write transaction failed; refusing writes for a while, then trying again');
    }
    this.sample();
  }

  status(): DiskStatus {
    const s = this.state;
    const failing = this.now() < this.failedUntil;
    return {
      pressure: this.refusing(),
      availableBytes: s?.availableBytes ?? 0,
      thresholdBytes: s?.thresholdBytes ?? 0,
      ...(failing
        ? { reason: `the last write transaction failed: ${this.lastFailure ?? 'unknown'}` }
        : s?.reason === undefined
          ? {}
          : { reason: s.reason }),
    };
  }

  private refusing(): boolean {
    return (this.state?.pressure ?? false) || this.now() < this.failedUntil;
  }
}
