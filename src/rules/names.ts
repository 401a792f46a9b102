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

/**
 * One version of an export, by the name a machine's boot script gives it: `<export>@v<version>`.
 * `@` is in no export name, so it can never collide with one. Each machine's boot names the
 * version it was written for, so two machines behind one address (a NAT) read their own.
 */
export function versionedExportName(exportName: string, version: number): string {
  return `${exportName}@v${version}`;
}

export const versionedExportNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}@v[1-9][0-9]{0,8}$/;
