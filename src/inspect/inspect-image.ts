import { fstatSync, readSync } from 'node:fs';
import { ImageReadError, requireFile, type FileTree, type FsEntry, type Resolved } from './file-tree.js';
import type { FilesystemType, ReadAt } from './filesystems.js';
import { compareKernelVersions } from './kernel-version.js';
import { loadOrder, moduleKey, parseModulesBuiltin, parseModulesDep, type ModuleEntry } from './modules-dep.js';
import { absentModules } from './module-files.js';
import { osNameOf } from './os-release.js';
import { readPartitionTable } from './partitions.js';
import { locateRoot } from './root-location.js';
import { nothingFound, type BootInspection } from './result.js';
import { separateBoot, type KernelPlace } from './separate-boot.js';
import type { z } from 'zod';
import type { workerRequestSchema } from './worker-protocol.js';

/** A kernel beyond this is no kernel: Debian's is 8 MB, a unified kernel image with firmware ~100 MB. */
export const maxKernelBytes = 128 * 1024 * 1024;
const maxModuleBytes = 64 * 1024 * 1024;
const maxModulesDepBytes = 16 * 1024 * 1024;
const maxOsReleaseBytes = 64 * 1024;
/** Kernel versions under /lib/modules considered, newest first. */
const maxVersions = 32;
/** A version is a directory name, and later part of a cache key and a URL: nothing exotic. */
const versionPattern = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}$/;

/**
 * requiredModules: the modules the kit's init loads for themselves (Kit.rootModules): the
 * image's kernel must have each, or build it in. kernelVersion: one the export asks for;
 * default the newest.
 */
export type InspectOptions = Omit<z.input<typeof workerRequestSchema>, 'size'>;

/** A module to copy out of the image, found under its kernel's modules directory. */
export interface PlannedModule {
  module: ModuleEntry;
  file: FsEntry;
}

/**
 * Inspects the image held open as `fd` (`size` bytes): partition table, root filesystem, OS
 * name, the kernel to boot and its modules. Runs synchronously: it belongs in a child process
 * (see worker.ts). A damaged or hostile image gives `ready: false` and a reason, never a throw.
 */
export function inspectImage(fd: number, size: number, options: InspectOptions): BootInspection {
  const read = readerOf(fd, size);
  const table = readPartitionTable(read, size);
  const located = locateRoot(fd, read, table, size);
  if (!located.found) return { ...nothingFound, partition: located.partition, fstype: located.fstype, reason: located.reason };
  const { root } = located;
  const result: BootInspection = {
    ...nothingFound,
    partition: root.partition,
    fstype: root.fstype,
    partitionOffset: root.offset,
    lv: root.lv,
    subvol: root.subvol,
    layout: `${root.where} ${root.fstype}${root.subvol === null ? '' : ` subvol=${root.subvol}`}`,
  };
  try {
    const tree = root.tree;
    result.os = readOsName(tree);
    const boot = separateBoot(fd, read, table, { fs: tree, partition: root.partition, btrfs: root.btrfs });
    if (boot && 'place' in boot) result.layout = `${result.layout}, ${boot.place.layout}`;
    const rootBoot: KernelPlace = { fs: tree, offset: root.offset, dir: '/boot', name: '/boot', prefix: root.prefix, layout: '' };
    const places = boot && 'place' in boot ? [boot.place, rootBoot] : [rootBoot];
    const kernel = chooseKernel(tree, places, options.kernelVersion, boot && 'problem' in boot ? boot.problem : null);
    Object.assign(result, {
      kernel: kernel.version,
      kernelOffset: kernel.place.offset,
      kernelPath: `${kernel.place.prefix}${kernel.file.path}`,
      kernelSize: kernel.file.entry.size,
      modulesDir: `${root.prefix}${kernel.modulesDir}`,
    });
    requireFile(kernel.file, maxKernelBytes);
    planModules(tree, kernel.modulesDir, modulesToBoot(options.requiredModules, root.fstype, root.lv));
    return { ...result, ready: true, devicesMissing: absentModules(tree, kernel.modulesDir, options.deviceModules ?? []) };
  } catch (err) {
    if (err instanceof ImageReadError) return { ...result, reason: err.message };
    throw err;
  }
}

/**
 * The module a root of `fstype` needs beyond what every kit loads for itself; null for ext2/3/4,
 * whose ext4 driver is in ramboot/build-kit's fixed list (so in the kit's root modules already).
 */
export function rootFilesystemModule(fstype: FilesystemType): string | null {
  return fstype.startsWith('ext') ? null : fstype;
}

/** The module an LV root needs to be activated (device-mapper), beyond the root's filesystem. */
export function layoutModules(inspection: { lv: string | null }): string[] {
  return inspection.lv === null ? [] : ['dm_mod'];
}

/** What ramboot's init must load from the image's kernel: what the kit loads for itself, the root's filesystem, and dm_mod for an LV. */
export function modulesToBoot(required: readonly string[], fstype: FilesystemType, lv: string | null = null): string[] {
  const wanted = [...required];
  for (const module of [rootFilesystemModule(fstype), ...layoutModules({ lv })]) {
    if (module !== null && !wanted.some((name) => moduleKey(name) === moduleKey(module))) wanted.push(module);
  }
  return wanted;
}

/** Reads at most `size` bytes of the image: nothing past its end. */
export function readerOf(fd: number, size: number): ReadAt {
  return (offset, length) => {
    const wanted = Math.max(0, Math.min(length, size - offset));
    if (wanted === 0 || offset < 0) return Buffer.alloc(0);
    const buffer = Buffer.alloc(wanted);
    const got = readSync(fd, buffer, 0, wanted, offset);
    return buffer.subarray(0, got);
  };
}

/** The image's size: the caller's word for a block device, whose fstat says 0. */
export function imageSizeOf(fd: number, given: number | undefined): number {
  return given ?? fstatSync(fd).size;
}

function readOsName(tree: FileTree): string | null {
  for (const file of ['/etc/os-release', '/usr/lib/os-release']) {
    try {
      const text = tree.readFile(file, maxOsReleaseBytes);
      if (text) return osNameOf(text.toString('utf8'));
    } catch (err) {
      // A broken os-release only leaves the name unknown.
      if (!(err instanceof ImageReadError)) throw err;
    }
  }
  return null;
}

interface KernelChoice {
  version: string;
  place: KernelPlace;
  file: Resolved;
  modulesDir: string;
}

/**
 * The newest kernel (or the one asked for) that has both a file (vmlinuz-VERSION in the first of
 * `places` holding one: a separate /boot, then the root's, or /lib/modules/VERSION/vmlinuz as
 * Fedora keeps it) and its modules directory in the root. `bootProblem`: why a separate /boot the
 * fstab names was not looked in, told when no kernel is found.
 */
function chooseKernel(tree: FileTree, places: KernelPlace[], wantedVersion: string | undefined, bootProblem: string | null): KernelChoice {
  const modulesRoot = tree.resolve('/lib/modules');
  if (modulesRoot?.entry.kind !== 'directory')
    throw new ImageReadError('the image has no /lib/modules directory, so no kernel of its own to boot');
  const versions = tree
    .list(modulesRoot.entry, modulesRoot.path)
    .map((entry) => entry.name)
    .filter((name) => versionPattern.test(name))
    .sort((a, b) => compareKernelVersions(b, a));
  if (wantedVersion !== undefined && !versions.includes(wantedVersion)) {
    throw new ImageReadError(`the export asks for kernel ${wantedVersion}, but /lib/modules has ${versions.join(', ') || 'none'}`);
  }
  for (const version of wantedVersion === undefined ? versions.slice(0, maxVersions) : [wantedVersion]) {
    const modulesDir = tree.resolve(`${modulesRoot.path}/${version}`);
    if (modulesDir?.entry.kind !== 'directory') continue;
    for (const place of places) {
      const file = place.fs.resolve(`${place.dir}/vmlinuz-${version}`);
      if (file) return { version, place, file, modulesDir: modulesDir.path };
    }
    const inModules = tree.resolve(`${modulesDir.path}/vmlinuz`);
    if (inModules) return { version, place: places.at(-1)!, file: inModules, modulesDir: modulesDir.path };
  }
  const seen = places.map((place) => {
    const dir = place.fs.resolve(place.dir || '/');
    const kernels = dir?.entry.kind === 'directory' ? place.fs.list(dir.entry, dir.path).filter((e) => e.name.startsWith('vmlinuz')) : [];
    return `${place.name} has ${kernels.map((e) => e.name).join(', ') || 'no vmlinuz-*'}`;
  });
  throw new ImageReadError(
    `no kernel with a matching /lib/modules/VERSION: ${seen.join(', ')}, /lib/modules has ${versions.join(', ') || 'nothing'}${bootProblem ? `; ${bootProblem}` : ''}`,
  );
}

/**
 * The modules ramboot's init needs, from the image's own modules.dep, each after what it
 * needs, each a regular file of bounded size that stays under `modulesDir`.
 */
export function planModules(tree: FileTree, modulesDir: string, wanted: readonly string[]): PlannedModule[] {
  const depText = tree.readFile(`${modulesDir}/modules.dep`, maxModulesDepBytes);
  if (!depText) throw new ImageReadError(`${modulesDir}/modules.dep is missing: run depmod in the image`);
  const builtinText = tree.readFile(`${modulesDir}/modules.builtin`, maxModulesDepBytes);
  const order = loadOrder(parseModulesDep(depText.toString('utf8')), parseModulesBuiltin(builtinText?.toString('utf8') ?? ''), wanted);
  if (!order.ok) throw new ImageReadError(order.reason);
  return order.modules.map((module) => {
    const found = tree.resolve(`${modulesDir}/${module.path}`);
    if (!found) throw new ImageReadError(`modules.dep lists ${module.path}, which is missing from ${modulesDir}`);
    if (!found.path.startsWith(`${modulesDir}/`))
      throw new ImageReadError(`${modulesDir}/${module.path} leads to ${found.path}, outside ${modulesDir}`);
    return { module, file: requireFile(found, maxModuleBytes) };
  });
}
