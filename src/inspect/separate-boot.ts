import type { BtrfsVolume } from './btrfs.js';
import { ImageReadError, type FileTree } from './file-tree.js';
import type { ReadAt } from './filesystems.js';
import { entryFor, parseDeviceSpec, parseFstab, refusedSummary } from './fstab.js';
import { findMountSource } from './mount-source.js';
import { openFileTree } from './open-tree.js';
import type { PartitionTable } from './partitions.js';

/** Real fstabs are a few hundred bytes; one past this is refused whole, never parsed. */
const maxFstabBytes = 64 * 1024;

/** A filesystem of the image that kernels are looked for in, under `dir`. */
export interface KernelPlace {
  fs: FileTree;
  /** Byte offset of the filesystem in the image. */
  offset: number;
  dir: string;
  /** How a reason names it: "/boot" or "the /boot partition 2". */
  name: string;
  /** Put before a path found here to name it from where a plain open of its filesystem starts (a btrfs: its default subvolume). */
  prefix: string;
  /** How the boot summary's layout shows it: "/boot partition 2 ext4", "/boot subvol=boot". */
  layout: string;
}

/**
 * The separate /boot partition the root's /etc/fstab mounts, opened: null when the fstab names
 * none (or /boot is the root's own directory). When one is named but cannot be used, `problem`
 * says why: the inspection then looks in the root's /boot alone and tells it if no kernel is there.
 */
export function separateBoot(
  fd: number,
  read: ReadAt,
  table: PartitionTable,
  root: { fs: FileTree; partition: number | null; btrfs: { volume: BtrfsVolume; defaultPath: string } | null },
): { place: KernelPlace } | { problem: string } | null {
  let text: Buffer | null;
  try {
    text = root.fs.readFile('/etc/fstab', maxFstabBytes);
  } catch (err) {
    if (err instanceof ImageReadError) return { problem: `the root's /etc/fstab cannot be read: ${err.message}` };
    throw err;
  }
  if (!text) return null;
  const fstab = parseFstab(text.toString('utf8'));
  const entry = entryFor(fstab, '/boot');
  if (!entry) {
    return fstab.refused.length > 0 ? { problem: `/etc/fstab mounts no /boot that nbdmux reads (${refusedSummary(fstab)})` } : null;
  }
  const source = findMountSource(read, table, parseDeviceSpec(entry.spec), `/etc/fstab mounts /boot from ${entry.spec}`);
  if (!source.found) return { problem: source.reason };
  const { partition, fstype } = source;
  if (partition.number === root.partition) return root.btrfs ? bootSubvolume(root.btrfs, entry.options, partition.offset) : null;
  const name = `the /boot partition ${partition.number}`;
  try {
    const fs = openFileTree(fd, read, partition, fstype, name);
    return { place: { fs, offset: partition.offset, dir: '', name, prefix: '', layout: `/boot partition ${partition.number} ${fstype}` } };
  } catch (err) {
    if (err instanceof ImageReadError) return { problem: err.message };
    throw err;
  }
}

/** /boot as a subvolume of the root's own btrfs (`subvol=` in its fstab line); null: the root's own /boot directory. */
function bootSubvolume(
  btrfs: { volume: BtrfsVolume; defaultPath: string },
  options: string[],
  offset: number,
): { place: KernelPlace } | { problem: string } | null {
  const path = options
    .find((o) => o.startsWith('subvol='))
    ?.slice('subvol='.length)
    .replace(/^\/+/, '');
  if (path === undefined) return null;
  const subvolume = btrfs.volume.subvolumes().find((s) => s.path === path);
  if (!subvolume) return { problem: `/etc/fstab mounts /boot from the btrfs subvolume ${path}, which the filesystem does not have` };
  const { defaultPath } = btrfs;
  if (defaultPath !== '' && !path.startsWith(`${defaultPath}/`))
    return { problem: `/etc/fstab mounts /boot from the btrfs subvolume ${path}, outside the default subvolume nbdmux's build reads from` };
  const name = `the /boot subvolume ${path}`;
  try {
    const fs = btrfs.volume.open(subvolume.id, name);
    const prefix = `/${defaultPath === '' ? path : path.slice(defaultPath.length + 1)}`;
    return { place: { fs, offset, dir: '', name, prefix, layout: `/boot subvol=${path}` } };
  } catch (err) {
    if (err instanceof ImageReadError) return { problem: err.message };
    throw err;
  }
}
