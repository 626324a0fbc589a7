import { readFile } from 'node:fs/promises';
import { errorMessage } from './errors';
import type { Logger } from './logger';
import { ApiKeyFileError, ApiKeySet } from './api-keys';

/**
 * The gateway's `--auth-file`: read at start (a missing or invalid file stops
 * the gateway), then polled for changes. A Kubernetes Secret mounted as a
 * volume is updated by swapping a symlink, which fs.watch on the file misses,
 * so the content is re-read every few seconds and compared instead. A new file
 * that does not parse is logged and the last good keys stay in force.
 */

export const DEFAULT_POLL_MS = 2_000;

export interface ApiKeyFileEvents {
  /** a reload outcome, for the kvstore_gateway_auth_key_reloads_total counter */
  onReload?(outcome: 'ok' | 'error', keys: number): void;
}

export class ApiKeyFile {
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  private constructor(
    readonly path: string,
    private keys: ApiKeySet,
    private text: string,
    private readonly log: Logger,
    private readonly events: ApiKeyFileEvents,
  ) {}

  /** Reads and parses the file once; throws ApiKeyFileError when it cannot be read or is invalid. */
  static async open(
    path: string,
    log: Logger,
    opts: { pollMs?: number } & ApiKeyFileEvents = {},
  ): Promise<ApiKeyFile> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new ApiKeyFileError(`cannot read the auth file ${path}: ${errorMessage(err)}`, { path });
    }
    const keys = ApiKeySet.parse(text, path);
    const file = new ApiKeyFile(path, keys, text, log, opts);
    const pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    if (pollMs > 0) {
      file.timer = setInterval(() => void file.poll(), pollMs);
      file.timer.unref();
    }
    return file;
  }

  /** The keys in force: the last version of the file that parsed. */
  current(): ApiKeySet {
    return this.keys;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Re-reads the file; swaps the keys in when it changed and parses. Never throws. */
  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const text = await readFile(this.path, 'utf8');
      if (text === this.text) return;
      this.text = text;
      const keys = ApiKeySet.parse(text, this.path);
      this.keys = keys;
      this.log.info({ path: this.path, keys: keys.size, ids: keys.ids() }, 'auth file reloaded');
      this.events.onReload?.('ok', keys.size);
    } catch (err) {
      // Half-written or mid-swap files are normal for a moment; the next poll sees the finished one.
      this.log.error(
        { path: this.path, err: errorMessage(err), keys: this.keys.size },
        'auth file not reloaded; the last good keys stay in force',
      );
      this.events.onReload?.('error', this.keys.size);
    } finally {
      this.polling = false;
    }
  }
}
