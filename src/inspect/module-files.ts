import { ImageReadError, type FileTree } from './file-tree.js';
import { moduleKey, parseModulesBuiltin, parseModulesDep } from './modules-dep.js';
import {
  nicDrivers,
  nicText,
  parseBuiltinModinfo,
  parseModulesAlias,
  type ModuleAlias,
  type NicDrivers,
  type NicId,
} from './nic-drivers.js';

/** Debian's modules.alias is ~1.5 MB, modules.builtin.modinfo ~0.5 MB: room for a kernel with every driver. */
const maxIndexBytes = 16 * 1024 * 1024;

/** Of `names`, those the kernel whose modules lie in `modulesDir` has neither as a module nor built in. */
export function absentModules(tree: FileTree, modulesDir: string, names: readonly string[]): string[] {
  if (names.length === 0) return [];
  const dep = parseModulesDep(tree.readFile(`${modulesDir}/modules.dep`, maxIndexBytes)?.toString('utf8') ?? '');
  const builtin = parseModulesBuiltin(tree.readFile(`${modulesDir}/modules.builtin`, maxIndexBytes)?.toString('utf8') ?? '');
  return names.filter((name) => !dep.byName.has(moduleKey(name)) && !builtin.has(moduleKey(name)));
}

/**
 * The modules of the kernel in `modulesDir` that drive `nic`, from its modules.alias and
 * modules.builtin.modinfo; not ok, with the reason, when none does. A driver built in whose
 * aliases the kernel's build did not record (Debian's 6.12 has virtio_pci so) is known by the
 * kit's own module of that name: `kitAliases`, counted when modules.builtin lists it.
 */
export function nicModules(tree: FileTree, modulesDir: string, nic: NicId, kitAliases: readonly ModuleAlias[]): NicDrivers {
  const alias = tree.readFile(`${modulesDir}/modules.alias`, maxIndexBytes);
  if (!alias)
    throw new ImageReadError(
      `${modulesDir}/modules.alias is missing, so no driver for the NIC ${nicText(nic)} can be found: run depmod in the image`,
    );
  const builtinInfo = parseBuiltinModinfo(tree.readFile(`${modulesDir}/modules.builtin.modinfo`, maxIndexBytes) ?? Buffer.alloc(0));
  const builtinNames = parseModulesBuiltin(tree.readFile(`${modulesDir}/modules.builtin`, maxIndexBytes)?.toString('utf8') ?? '');
  const builtin = {
    aliases: [...builtinInfo.aliases, ...kitAliases.filter(({ module }) => builtinNames.has(moduleKey(module)))],
    refused: builtinInfo.refused,
  };
  return nicDrivers(nic, parseModulesAlias(alias.toString('utf8')), builtin);
}
