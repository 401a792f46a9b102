/** A kernel module as the image's modules.dep lists it. */
export interface ModuleEntry {
  /** Its name as depmod and insmod see it: the file name without `.ko[.xz|.gz|.zst]`. */
  name: string;
  /** Relative to /lib/modules/VERSION, checked: no `..`, no absolute path. */
  path: string;
  /** Paths of the modules it needs, as listed. */
  needs: string[];
}

export interface ModulesDep {
  byPath: Map<string, ModuleEntry>;
  /** By name with `-` and `_` alike, as the kernel treats them. */
  byName: Map<string, ModuleEntry>;
  /** Lines refused, each with why. */
  refused: string[];
}

export const moduleSuffixes = ['.ko', '.ko.xz', '.ko.gz', '.ko.zst'] as const;
const maxLines = 100_000;

/** The kernel's module name for a module file path. */
export function moduleNameOf(modulePath: string): string {
  const base = modulePath.slice(modulePath.lastIndexOf('/') + 1);
  const suffix = moduleSuffixes.find((s) => base.endsWith(s)) ?? '';
  return base.slice(0, base.length - suffix.length);
}

/** `-` and `_` are one character to the kernel's module loader. */
export function moduleKey(name: string): string {
  return name.replaceAll('-', '_');
}

/** Why `modulePath` may not be read from the image; null: it may. */
export function unsafeModulePath(modulePath: string): string | null {
  if (modulePath.startsWith('/')) return 'an absolute path';
  const parts = modulePath.split('/');
  if (parts.some((part) => part === '..')) return 'a path climbing out with ".."';
  if (parts.some((part) => part === '' || part === '.')) return 'an empty or "." path component';
  if (/[\p{Cc}\\]/u.test(modulePath)) return 'control characters or backslashes';
  if (!moduleSuffixes.some((suffix) => modulePath.endsWith(suffix))) return `no module suffix (${moduleSuffixes.join(', ')})`;
  return null;
}

/**
 * Parses modules.dep (`PATH: NEEDED NEEDED ...`, paths relative to /lib/modules/VERSION).
 * Lines naming a path that would leave that directory are refused, with the reason.
 */
export function parseModulesDep(text: string): ModulesDep {
  const dep: ModulesDep = { byPath: new Map(), byName: new Map(), refused: [] };
  const lines = text.split('\n');
  if (lines.length > maxLines) dep.refused.push(`modules.dep has ${lines.length} lines: only the first ${maxLines} are read`);
  for (const line of lines.slice(0, maxLines)) {
    if (line.trim() === '') continue;
    const shown = JSON.stringify(line.slice(0, 120));
    const colon = line.indexOf(':');
    if (colon < 0) {
      dep.refused.push(`${shown}: no ":"`);
      continue;
    }
    const modulePath = line.slice(0, colon).trim();
    const needs = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    const unsafe = [modulePath, ...needs].map((p) => [p, unsafeModulePath(p)] as const).find(([, why]) => why !== null);
    if (unsafe) {
      dep.refused.push(`${shown}: ${JSON.stringify(unsafe[0])} is ${unsafe[1]}`);
      continue;
    }
    const entry: ModuleEntry = { name: moduleNameOf(modulePath), path: modulePath, needs };
    if (dep.byPath.has(modulePath) || dep.byName.has(moduleKey(entry.name))) continue;
    dep.byPath.set(modulePath, entry);
    dep.byName.set(moduleKey(entry.name), entry);
  }
  return dep;
}

/** Names built into the kernel, from modules.builtin (one module path a line). */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split('\n')
      .map((line) => line.trim())
      .filter(Boolean)
      .map((line) => moduleKey(moduleNameOf(line))),
  );
}

export type LoadOrder = { ok: true; modules: ModuleEntry[] } | { ok: false; reason: string };

/**
 * Every module of `wanted` (names) that is not built in, each after the modules it needs,
 * as insmod must load them. A wanted module neither listed nor built in, a need modules.dep
 * does not list, or a cycle: not ok, with the reason.
 */
export function loadOrder(dep: ModulesDep, builtin: ReadonlySet<string>, wanted: readonly string[]): LoadOrder {
  const ordered: ModuleEntry[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (entry: ModuleEntry, wantedBy: string): string | null => {
    if (done.has(entry.path)) return null;
    if (visiting.has(entry.path)) return `modules.dep has a cycle through ${entry.name}`;
    visiting.add(entry.path);
    for (const needed of entry.needs) {
      const neededEntry = dep.byPath.get(needed);
      if (!neededEntry) return `${entry.name} (for ${wantedBy}) needs ${needed}, which modules.dep does not list`;
      const problem = visit(neededEntry, wantedBy);
      if (problem) return problem;
    }
    visiting.delete(entry.path);
    done.add(entry.path);
    ordered.push(entry);
    return null;
  };
  for (const name of wanted) {
    const entry = dep.byName.get(moduleKey(name));
    if (!entry) {
      if (builtin.has(moduleKey(name))) continue;
      const refused = dep.refused.length > 0 ? `; modules.dep lines refused: ${dep.refused.slice(0, 3).join('; ')}` : '';
      return { ok: false, reason: `the image's kernel has no module ${name}, which ramboot needs${refused}` };
    }
    const problem = visit(entry, name);
    if (problem) return { ok: false, reason: problem };
  }
  return { ok: true, modules: ordered };
}
