import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * How every kvstore log line looks: JSON, an ISO time, and the level as its name (`"level":"warn"`,
 * not pino's 40), which is what log pipelines (Loki, Elasticsearch, Cloud Logging) read as a level.
 */
export const LOG_FORMAT = {
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label: string) => ({ level: label }) },
} satisfies LoggerOptions;

/** JSON logs to stdout; the level comes from LOG_LEVEL so operators can turn on debug without a rebuild. */
export function createLogger(
  component: string,
  bindings: Record<string, unknown> = {},
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = {
    ...LOG_FORMAT,
    level: process.env.LOG_LEVEL ?? 'info',
    base: { component, pid: process.pid, ...bindings },
  };
  return destination ? pino(options, destination) : pino(options);
}
