/**
 * nbd-server's config is a GKeyFile that silently misreads a lot (see shared/notes/nbd-server.md):
 * a `[`, `]` or control character in a section name breaks the whole file, `\`, `%`, `#` and
 * whitespace in a value change its meaning. Only names and paths matching these are registered,
 * and the supervisor's renderer checks them again before it writes any.
 */
export const exportNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const configSafePathPattern = /^\/[A-Za-z0-9._/+-]+$/;

/** `generic` is nbd-server's global section; `__` names are nbdmux's own (the placeholder, machines' states). */
export function isReservedExportName(name: string): boolean {
  return name === 'generic' || name.startsWith('__');
}

/** A persistent machine's state export: `__state-<MAC in hex>`, reserved, so no export can take it. */
export function stateExportName(mac: string): string {
  return `__state-${mac.replaceAll(':', '')}`;
}

export const stateNamePattern = /^__state-[0-9a-f]{12}$/;
