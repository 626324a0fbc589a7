import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON logs to stdout; the level comes from LOG_LEVEL so operators can turn on debug without a rebuild. */
export function createLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level: process.env.LOG_LEVEL ?? 'info',
    base: { component, pid: process.pid, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
