/**
 * nbd-server's config is a GKeyFile that silently misreads a lot (see shared/notes/nbd-server.md):
 * a `[`, `]` or control character in a section name breaks the whole file, `\`, `%`, `#` and
 * whitespace in a value change its meaning. Only names and paths matching these are registered,
 * and the supervisor's renderer checks them again before it writes any.
 */
export const exportNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const configSafePathPattern = /^\/[A-Za-z0-9._/+-]+$/;

/** `generic` is nbd-server's global section; `__` names are the supervisor's (its placeholder). */
export function isReservedExportName(name: string): boolean {
  return name === 'generic' || name.startsWith('__');
}
