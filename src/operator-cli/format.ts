/** Local time, to the second, sortable: `2026-11-25 08:51:20`. */
export function formatTime(iso: string): string {
  const at = new Date(iso);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`;
}

/** Time of day only, for streams where the date rarely changes. */
export function formatClock(iso: string): string {
  return formatTime(iso).slice(11);
}

/** An event's details as `key=value` pairs, strings bare unless they hold spaces. */
export function formatDetails(details: Record<string, unknown>): string {
  return Object.entries(details)
    .map(([key, value]) => `${key}=${typeof value === 'string' && !/\s/.test(value) ? value : JSON.stringify(value)}`)
    .join(' ');
}
