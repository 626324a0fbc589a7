import Redis, { type RedisOptions } from 'ioredis';
import { errorMessage } from './errors';
import { createLogger, type Logger } from './logger';
import { checkCompareAndSetArgs, MapWatchHub, MetadataError, type MetadataStore } from './metadata-store';
import {
  InvalidMapError,
  parsePartitionMap,
  serializePartitionMap,
  type PartitionMap,
} from './partition-map';

export interface RedisMetadataStoreOptions {
  /** redis://[:password@]host:port[/db] */
  readonly url: string;
  readonly cluster: string;
  /** safety-net poll behind pub/sub (default 5000 ms) */
  readonly pollIntervalMs?: number;
  /**
   * Upper bound for one call, connection wait included (default 2000 ms), so
   * callers fail fast with MetadataError while Redis is down and can fall back.
   */
  readonly timeoutMs?: number;
  readonly log?: Logger;
}

const CLUSTER_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * Compare the stored epoch, then SET and PUBLISH, in one script: Redis runs it
 * atomically, so two writers expecting the same epoch cannot both win, and a
 * notification is sent exactly when a write happens.
 * KEYS[1] map key; ARGV[1] expected epoch, ARGV[2] map JSON, ARGV[3] channel, ARGV[4] new epoch.
 * Returns {1, storedEpoch} on success, {0, storedEpoch} on a lost race.
 */
const CAS_SCRIPT = `
local cur = redis.call('GET', KEYS[1])
local curEpoch = 0
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  if not ok or type(decoded) ~= 'table' or type(decoded.epoch) ~= 'number' then
    return redis.error_reply('KVCORRUPT stored partition map has no numeric epoch')
  end
  curEpoch = decoded.epoch
end
if curEpoch ~= tonumber(ARGV[1]) then
  return {0, curEpoch}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {1, curEpoch}
`;

/**
 * The fast copy of the partition map (docs/design.md, "Metadata: ConfigMap and Redis"): JSON under
 * `kvstore:<cluster>:map`, change notifications on `kvstore:<cluster>:map-changed`
 * (message = the new epoch).
 *
 * Failure behaviour: ioredis reconnects forever in the background, but no call
 * waits for it longer than timeoutMs; commands are never queued while
 * disconnected nor replayed after a reconnect, so a call that failed does not
 * run later behind the caller's back (an in-flight compareAndSet that timed
 * out may still have been applied: load() to find out).
 */
export class RedisMetadataStore implements MetadataStore {
  readonly key: string;
  readonly channel: string;
  private readonly cluster: string;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly endpoint: string;
  private readonly redisOptions: RedisOptions;
  private readonly client: Redis;
  private subscriber: Redis | undefined;
  private readonly hub: MapWatchHub;
  private lastError: string | undefined;
  private nextReady: Promise<void> | undefined;
  /** ends the calls in flight, on close() */
  private readonly cancels = new Set<() => void>();
  private closed = false;

  constructor(opts: RedisMetadataStoreOptions) {
    if (!CLUSTER_RE.test(opts.cluster)) {
      throw new MetadataError('invalid', `bad cluster name ${JSON.stringify(opts.cluster)}`, {
        cluster: opts.cluster,
      });
    }
    this.cluster = opts.cluster;
    this.key = `kvstore:${opts.cluster}:map`;
    this.channel = `kvstore:${opts.cluster}:map-changed`;
    this.log = opts.log ?? createLogger('metadata-store');
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.endpoint = redactUrl(opts.url);
    this.redisOptions = {
      connectTimeout: this.timeoutMs,
      commandTimeout: this.timeoutMs,
      // Never queue while disconnected (a queued CAS could run after its caller gave up); run() bounds the wait.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // Reconnect forever, quickly at first, at most once a second.
      retryStrategy: (times) => Math.min(50 * times, 1000),
      // ioredis arms this timer on disconnect() even when the socket is already closed
      // (Redis down): the default 2 s would hold a stopping process (and jest) that long.
      disconnectTimeout: 200,
    };
    this.client = this.connect(opts.url, 'client');
    this.hub = new MapWatchHub({
      load: () => this.load(),
      pollIntervalMs: opts.pollIntervalMs ?? 5000,
      source: `redis ${this.endpoint} ${this.key}`,
      log: this.log,
      onStart: () => this.openSubscriber(opts.url),
      onStop: () => this.closeSubscriber(),
    });
  }

  async load(): Promise<PartitionMap | undefined> {
    this.ensureOpen();
    const text = await this.run('GET', () => this.client.get(this.key));
    if (text === null) return undefined;
    let map: PartitionMap;
    try {
      map = parsePartitionMap(text);
    } catch (err) {
      if (!(err instanceof InvalidMapError)) throw err;
      throw new MetadataError(
        'corrupt',
        `partition map at ${this.key} is invalid: ${err.message}`,
        { endpoint: this.endpoint, key: this.key, ...err.context },
        { cause: err },
      );
    }
    if (map.cluster !== this.cluster) {
      throw new MetadataError('corrupt', `partition map at ${this.key} belongs to cluster ${map.cluster}`, {
        endpoint: this.endpoint,
        key: this.key,
        mapCluster: map.cluster,
      });
    }
    return map;
  }

  async compareAndSet(map: PartitionMap, expectedEpoch: number | undefined): Promise<boolean> {
    this.ensureOpen();
    const clean = checkCompareAndSetArgs(map, expectedEpoch, this.cluster);
    const reply = await this.run('EVAL', () =>
      this.client.eval(
        CAS_SCRIPT,
        1,
        this.key,
        String(expectedEpoch ?? 0),
        serializePartitionMap(clean),
        this.channel,
        String(clean.epoch),
      ),
    );
    if (!Array.isArray(reply) || (reply[0] !== 0 && reply[0] !== 1)) {
      throw new MetadataError('corrupt', 'unexpected reply from the compare-and-set script', {
        endpoint: this.endpoint,
        reply: String(reply),
      });
    }
    if (reply[0] === 1) {
      // Our own watchers need not wait for the round trip through pub/sub.
      this.hub.trigger(clean.epoch);
      return true;
    }
    this.log.debug({ epoch: clean.epoch, expectedEpoch, storedEpoch: reply[1] }, 'partition map CAS lost');
    return false;
  }

  /**
   * Deletes this cluster's map from Redis (its KVCluster was deleted): a cluster created later
   * under the same name must start from its own new map, not read this one. True if one was there.
   */
  async remove(): Promise<boolean> {
    this.ensureOpen();
    return (await this.run('DEL', () => this.client.del(this.key))) > 0;
  }

  watch(listener: (map: PartitionMap) => void): () => void {
    this.ensureOpen();
    return this.hub.add(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hub.close();
    this.closeSubscriber();
    for (const cancel of [...this.cancels]) cancel();
    await quitOrDisconnect(this.client, this.timeoutMs, this.log);
  }

  private connect(url: string, role: 'client' | 'subscriber'): Redis {
    const conn = new Redis(url, {
      ...this.redisOptions,
      connectionName: `kvstore-metadata-${role}`,
      // The subscriber subscribes on every 'ready' itself: ioredis would not retry a subscribe that failed.
      autoResubscribe: false,
    });
    conn.on('error', (err: Error) => {
      // ioredis emits this on every failed reconnect: log the first of a run at warn, repeats at debug.
      const message = errorMessage(err);
      const fields = { err, endpoint: this.endpoint, role };
      if (message !== this.lastError) this.log.warn(fields, 'redis metadata connection error');
      else this.log.debug(fields, 'redis metadata connection error (repeated)');
      this.lastError = message;
    });
    conn.on('ready', () => {
      if (this.lastError !== undefined) {
        this.log.info({ endpoint: this.endpoint, role }, 'redis metadata connection ready again');
        this.lastError = undefined;
      }
    });
    return conn;
  }

  private openSubscriber(url: string): void {
    if (this.subscriber || this.closed) return;
    // Subscribing takes a connection over: a second one keeps load and CAS usable.
    const sub = this.connect(url, 'subscriber');
    sub.on('ready', () => {
      sub.subscribe(this.channel).then(
        // Notifications sent while we were away are lost: look now.
        () => this.hub.trigger(),
        (err: unknown) =>
          this.log.warn({ err, channel: this.channel }, 'cannot subscribe to map changes; polling only'),
      );
    });
    sub.on('message', (channel: string, message: string) => {
      if (channel !== this.channel) return;
      const epoch = Number(message);
      this.hub.trigger(Number.isSafeInteger(epoch) ? epoch : undefined);
    });
    this.subscriber = sub;
  }

  private closeSubscriber(): void {
    // disconnect, not quit: nothing is pending on a subscriber, and quit would wait for a dead server.
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }

  /**
   * Runs one command within timeoutMs, the connection wait included, with
   * errors typed. A command is sent only while its caller still waits, so a
   * call that failed never runs later; close() ends every wait at once.
   */
  private async run<T>(op: string, command: () => Promise<T>): Promise<T> {
    let abandoned = false;
    let timer: NodeJS.Timeout | undefined;
    let cancel: (() => void) | undefined;
    const guard = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const connected = this.client.status === 'ready';
        reject(
          connected
            ? new MetadataError('timeout', `redis ${op} got no answer within ${this.timeoutMs} ms`, {
                endpoint: this.endpoint,
                op,
              })
            : new MetadataError(
                'unavailable',
                `redis at ${this.endpoint} not reachable within ${this.timeoutMs} ms`,
                {
                  endpoint: this.endpoint,
                  op,
                  status: this.client.status,
                  lastError: this.lastError,
                },
              ),
        );
      }, this.timeoutMs);
      cancel = () => reject(new MetadataError('closed', `redis metadata store closed during ${op}`, { op }));
      this.cancels.add(cancel);
    });
    const attempt = this.whenReady(op).then(() => {
      if (abandoned) throw new MetadataError('timeout', `redis ${op} abandoned`, { op });
      return command();
    });
    try {
      return await Promise.race([attempt, guard]);
    } catch (err) {
      if (err instanceof MetadataError) throw err;
      if (errorMessage(err).startsWith('KVCORRUPT')) {
        throw new MetadataError('corrupt', `partition map at ${this.key} is invalid: ${errorMessage(err)}`, {
          endpoint: this.endpoint,
          key: this.key,
        });
      }
      throw new MetadataError(
        'unavailable',
        `redis ${op} failed: ${errorMessage(err)}`,
        { endpoint: this.endpoint, op },
        { cause: err },
      );
    } finally {
      abandoned = true;
      clearTimeout(timer);
      if (cancel) this.cancels.delete(cancel);
    }
  }

  /** Resolves when the command connection is ready; one 'ready' listener however many calls wait. */
  private whenReady(op: string): Promise<void> {
    const client = this.client;
    if (client.status === 'ready') return Promise.resolve();
    if (client.status === 'end') {
      return Promise.reject(new MetadataError('closed', 'redis metadata connection is closed', { op }));
    }
    this.nextReady ??= new Promise<void>((resolve) => {
      client.once('ready', () => {
        this.nextReady = undefined;
        resolve();
      });
    });
    return this.nextReady;
  }

  private ensureOpen(): void {
    if (this.closed) throw new MetadataError('closed', `redis metadata store for ${this.cluster} is closed`);
  }
}

/** QUIT lets pending replies arrive; when the server is gone, drop the socket at once. */
async function quitOrDisconnect(conn: Redis, timeoutMs: number, log: Logger): Promise<void> {
  if (conn.status !== 'ready') {
    conn.disconnect();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      conn.quit(),
      new Promise<void>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`QUIT not answered within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    log.debug({ err }, 'redis QUIT failed; disconnecting');
    conn.disconnect();
  } finally {
    clearTimeout(timer);
  }
}

/** host:port/db without credentials, for logs and error context. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '6379'}${u.pathname && u.pathname !== '/' ? u.pathname : ''}`;
  } catch {
    // Not a URL ioredis would parse either; it will report the error itself.
    return '<unparsable redis url>';
  }
}
