import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import type https from 'node:https';
import tls from 'node:tls';
import { UsageError } from './cli-options';
import { errorMessage, KvError } from './errors';
import type { Logger } from './logger';

/**
 * TLS for the gateway's public listener from a PEM certificate and key file,
 * as a Kubernetes Secret (cert-manager's `tls.crt` / `tls.key`) is mounted.
 * The kubelet and cert-manager replace those files in place when the
 * certificate is renewed, so the pair is re-read periodically and applied to
 * the running server; a pair that does not load is logged and the one in use
 * kept, so a half-written renewal never takes the listener down.
 */

/** Older protocol versions have known weaknesses; every supported client speaks 1.2. */
export const TLS_MIN_VERSION: tls.SecureVersion = 'TLSv1.2';
/** The kubelet refreshes mounted Secrets within about a minute; checking twice as often costs nothing. */
export const DEFAULT_TLS_RELOAD_MS = 30_000;

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** A certificate chain and its key, read and checked to belong together. */
export interface TlsPair {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** of the leaf, for logs: what is being served */
  readonly subject: string;
  readonly validTo: string;
  readonly fingerprint256: string;
}

/** A pair that cannot be served: unreadable file, not PEM, or a key that does not match the certificate. */
export class TlsConfigError extends KvError {
  constructor(message: string, context: Record<string, unknown> = {}, cause?: unknown) {
    super('tls_config', message, context, cause === undefined ? undefined : { cause });
  }
}

function readFile(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new TlsConfigError(`cannot read the TLS ${what} file ${file}: ${errorMessage(err)}`, { file }, err);
  }
}

/** Checks `cert` and `key` (PEM) make a usable server identity; throws TlsConfigError naming the files. */
export function checkTlsPair(cert: Buffer, key: Buffer, files: TlsFiles): TlsPair {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new TlsConfigError(
      `${files.certFile} is not a PEM certificate: ${errorMessage(err)}`,
      { file: files.certFile },
      err,
    );
  }
  try {
    // Parses the key and checks it matches the leaf ("key values mismatch"), as the server would on load.
    tls.createSecureContext({ cert, key, minVersion: TLS_MIN_VERSION });
  } catch (err) {
    throw new TlsConfigError(
      `${files.keyFile} is not the private key of ${files.certFile}, or not a PEM key: ${errorMessage(err)}`,
      { certFile: files.certFile, keyFile: files.keyFile },
      err,
    );
  }
  return {
    cert,
    key,
    subject: leaf.subject.replace(/\n/g, ', '),
    validTo: leaf.validTo,
    fingerprint256: leaf.fingerprint256,
  };
}

/** Reads and checks the pair; throws TlsConfigError. */
export function loadTlsPair(files: TlsFiles): TlsPair {
  return checkTlsPair(readFile(files.certFile, 'certificate'), readFile(files.keyFile, 'key'), files);
}

/** Options for `https.createServer` serving `pair`. */
export function tlsServerOptions(pair: TlsPair): tls.TlsOptions {
  return { cert: pair.cert, key: pair.key, minVersion: TLS_MIN_VERSION };
}

/**
 * The gateway's TLS flags: both files or neither; the reload interval only with them.
 * Throws UsageError (exit 2) for a bad combination or a pair that cannot be served at start.
 */
export function tlsFromFlags(
  certFile: string | undefined,
  keyFile: string | undefined,
  reloadMs: number | undefined,
): { files: TlsFiles; pair: TlsPair } | undefined {
  if (certFile === undefined && keyFile === undefined) {
    if (reloadMs !== undefined) throw new UsageError('--tls-reload-ms needs --tls-cert and --tls-key');
    return undefined;
  }
  if (!certFile || !keyFile)
    throw new UsageError('--tls-cert and --tls-key go together: give both or neither');
  const files = { certFile, keyFile };
  try {
    return { files, pair: loadTlsPair(files) };
  } catch (err) {
    if (err instanceof TlsConfigError) throw new UsageError(err.message);
    throw err;
  }
}

/**
 * Re-reads the pair every `intervalMs` and, when its content changed, applies it to `server`
 * with setSecureContext: new connections get the new certificate, open ones keep theirs.
 */
export class TlsReloader {
  private current: TlsPair;
  /** the content last refused, so one bad renewal is logged once, not on every poll */
  private refused: { cert: Buffer; key: Buffer } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;

  constructor(
    private readonly server: Pick<https.Server, 'setSecureContext'>,
    private readonly files: TlsFiles,
    initial: TlsPair,
    private readonly log: Logger,
  ) {
    this.current = initial;
  }

  /** The pair being served. */
  get pair(): TlsPair {
    return this.current;
  }

  start(intervalMs: number): void {
    this.stop();
    this.timer = setInterval(() => this.check(), intervalMs);
    // A pending poll must not keep a stopping gateway alive.
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One poll: 'reloaded' when a new pair is now served, 'refused' when a changed pair did not load. */
  check(): 'unchanged' | 'reloaded' | 'refused' {
    if (this.checking) return 'unchanged';
    this.checking = true;
    try {
      let cert: Buffer;
      let key: Buffer;
      try {
        cert = readFile(this.files.certFile, 'certificate');
        key = readFile(this.files.keyFile, 'key');
      } catch (err) {
        return this.refuse(undefined, err);
      }
      if (cert.equals(this.current.cert) && key.equals(this.current.key)) {
        this.refused = undefined;
        return 'unchanged';
      }
      if (this.refused && cert.equals(this.refused.cert) && key.equals(this.refused.key)) return 'refused';
      let pair: TlsPair;
      try {
        pair = checkTlsPair(cert, key, this.files);
        this.server.setSecureContext(tlsServerOptions(pair));
      } catch (err) {
        return this.refuse({ cert, key }, err);
      }
      const previous = this.current;
      this.current = pair;
      this.refused = undefined;
      this.log.info(
        {
          subject: pair.subject,
          validTo: pair.validTo,
          fingerprint256: pair.fingerprint256,
          previousFingerprint256: previous.fingerprint256,
        },
        'TLS certificate reloaded',
      );
      return 'reloaded';
    } finally {
      this.checking = false;
    }
  }

  private refuse(content: { cert: Buffer; key: Buffer } | undefined, err: unknown): 'refused' {
    // Unreadable files are logged on every poll (cheap, and it says the mount is broken);
    // a changed but bad pair once per distinct content. Mid-renewal the cert and key may
    // briefly not match (the files are swapped one after the other): the next poll retries.
    this.refused = content;
    this.log.warn(
      { err: errorMessage(err), certFile: this.files.certFile, keyFile: this.files.keyFile },
      'TLS certificate not reloaded: keeping the one in use',
    );
    return 'refused';
  }
}
