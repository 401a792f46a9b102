/** Sizes, rates and durations as people read them, in the daemon's messages, the CLI and the dashboard alike. */

const byteUnits = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < byteUnits.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${byteUnits[unit]}`;
}

/** A transfer rate: `1.5 MiB/s`, or `idle` when nothing moves. */
export function formatRate(bytesPerSecond: number): string {
  return bytesPerSecond === 0 ? 'idle' : `${formatBytes(bytesPerSecond)}/s`;
}

/** From one time to another (or to now): `42s`, `3m07s`, `2h05m`, `3d04h`. */
export function formatDuration(fromIso: string, toIso: string | null, now = Date.now()): string {
  const seconds = Math.max(0, Math.round(((toIso ? Date.parse(toIso) : now) - Date.parse(fromIso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(seconds / 86400)}d${String(Math.floor((seconds % 86400) / 3600)).padStart(2, '0')}h`;
}
