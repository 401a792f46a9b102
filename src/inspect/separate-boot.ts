import { ExtFilesystem, ImageReadError } from './ext-fs.js';
import { extFilesystemBytes, type ReadAt } from './filesystems.js';
import { entryFor, parseDeviceSpec, parseFstab, refusedSummary } from './fstab.js';
import { findMountSource } from './mount-source.js';
import type { PartitionTable } from './partitions.js';

/** Real fstabs are a few hundred bytes; one past this is refused whole, never parsed. */
const maxFstabBytes = 64 * 1024;

/** A filesystem of the image that kernels are looked for in, under `dir`. */
export interface KernelPlace {
  fs: ExtFilesystem;
  /** Byte offset of the filesystem in the image. */
  offset: number;
  dir: string;
  /** How a reason names it: "/boot" or "the /boot partition 2". */
  name: string;
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
  root: { fs: ExtFilesystem; partition: number | null },
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
  if (partition.number === root.partition) return null;
  const name = `the /boot partition ${partition.number}`;
  if (!fstype.startsWith('ext')) return { problem: `${name} holds ${fstype}: nbdmux reads a separate /boot from ext2/3/4 only` };
  // As for the root: debugfs reads whatever the superblock claims, past the partition's end too.
  const claimed = extFilesystemBytes(read, partition.offset);
  if (claimed > partition.size)
    return { problem: `${name}'s ext filesystem claims ${claimed} bytes, more than the ${partition.size} of its partition: it is damaged` };
  return { place: { fs: new ExtFilesystem(fd, partition.offset, `${name}'s ext filesystem`), offset: partition.offset, dir: '', name } };
}
