import fs from 'node:fs';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/logger';

/**
 * `<dataDir>/processes.json` and the identity of the processes it names: how a launcher finds
 * what a launcher before it left running, and tells a live process from a reused pid.
 */

/** `<dataDir>/processes.json`: who runs the cluster's processes, so a new launcher can adopt them. */
export interface ProcessesFile {
  readonly owner?: ProcessIdentity;
  readonly processes: Readonly<Record<string, ProcessRecord>>;
}

/** A pid and, where /proc exists, the process's start time: a reused pid has another one. */
export interface ProcessIdentity {
  readonly pid: number;
  readonly startTime?: string;
}

/** One recorded process: who it is and the flags it was started with. */
export type ProcessRecord = ProcessIdentity & { readonly args: readonly string[] };

/** True while `pid` exists and is not a zombie (where PID 1 does not reap, a dead orphan lingers as one). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  const stat = procStat(pid);
  return stat === undefined || stat[0] !== 'Z';
}

/** The fields of /proc/<pid>/stat after the command name (state first); undefined without /proc. */
function procStat(pid: number): string[] | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text
      .slice(text.lastIndexOf(')') + 2)
      .trim()
      .split(' ');
  } catch {
    return undefined;
  }
}

export function identityOf(pid: number): ProcessIdentity {
  // Field 22 of stat (start time since boot), the 20th after the command name.
  const startTime = procStat(pid)?.[19];
  return startTime === undefined ? { pid } : { pid, startTime };
}

/** The recorded process is still running: same pid and, where it can be told, same start time. */
export function sameProcess(rec: ProcessIdentity): boolean {
  if (!processAlive(rec.pid)) return false;
  const now = identityOf(rec.pid).startTime;
  return rec.startTime === undefined || now === undefined || now === rec.startTime;
}

export function readProcessesFile(file: string, log: Logger): ProcessesFile | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      log.warn({ file, err: errorMessage(err) }, 'ignoring unreadable file');
    return undefined;
  }
  const isIdentity = (v: unknown): v is ProcessIdentity =>
    typeof v === 'object' &&
    v !== null &&
    Number.isSafeInteger((v as ProcessIdentity).pid) &&
    (v as ProcessIdentity).pid > 0 &&
    ['string', 'undefined'].includes(typeof (v as ProcessIdentity).startTime);
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { owner, processes } = parsed as { owner?: unknown; processes?: unknown };
  const clean: Record<string, ProcessIdentity & { args: string[] }> = {};
  if (typeof processes === 'object' && processes !== null) {
    for (const [name, rec] of Object.entries(processes)) {
      const args: unknown = (rec as { args?: unknown }).args;
      if (isIdentity(rec) && Array.isArray(args) && args.every((a) => typeof a === 'string')) {
        clean[name] = { pid: rec.pid, ...(rec.startTime ? { startTime: rec.startTime } : {}), args };
      } else {
        log.warn({ file, process: name }, 'ignoring a malformed process record');
      }
    }
  }
  return { ...(isIdentity(owner) ? { owner } : {}), processes: clean };
}

/** Records this launcher as the owner of these processes. */
export function writeProcessesFile(file: string, processes: Readonly<Record<string, ProcessRecord>>): void {
  const content: ProcessesFile = { owner: identityOf(process.pid), processes };
  writeFileAtomic(file, `${JSON.stringify(content, null, 2)}\n`);
}

/** Write then rename, so a launcher killed mid-write leaves the old file or the new one, never half of one. */
function writeFileAtomic(file: string, content: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}
