/** Structured logs: one JSON object per line on stderr, quiet (info) by default. */
export const logLevels = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof logLevels)[number];

export type Logger = Record<LogLevel, (msg: string, fields?: Record<string, unknown>) => void>;

export function createLogger(minimum: LogLevel, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const threshold = logLevels.indexOf(minimum);
  const at =
    (level: LogLevel) =>
    (msg: string, fields: Record<string, unknown> = {}) => {
      if (logLevels.indexOf(level) < threshold) return;
      write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** What a log line says of a failure: its stack where it has one, else what it is. */
export function errorText(err: unknown): string {
  return (err instanceof Error ? err.stack : undefined) ?? String(err);
}
