/** Structured logs: one JSON object per line on stderr, quiet (info) by default. */
export const logLevels = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof logLevels)[number];

export type Logger = Record<LogLevel, (msg: string, fields?: Record<string, unknown>) => void>;

export function createLogger(minimum: LogLevel, write: (line: string) => void = writeStderr): Logger {
  const threshold = logLevels.indexOf(minimum);
  const at =
    (level: LogLevel) =>
    (msg: string, fields: Record<string, unknown> = {}) => {
      if (logLevels.indexOf(level) < threshold) return;
      write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

let stderrBroken: boolean | undefined;

/**
 * stderr until a write to it fails. Once its reader is gone (EPIPE: the terminal closed, the log
 * collector restarted), every failed line would be an uncaught error, logged again and failing
 * again, in a loop that starves every client and the stop itself. Lines are dropped from then on.
 */
function writeStderr(line: string): void {
  if (stderrBroken === undefined) {
    stderrBroken = false;
    process.stderr.on('error', () => {
      stderrBroken = true;
    });
  }
  if (!stderrBroken) process.stderr.write(line);
}

/** What a log line says of a failure: its stack where it has one, else what it is. */
export function errorText(err: unknown): string {
  return (err instanceof Error ? err.stack : undefined) ?? String(err);
}
