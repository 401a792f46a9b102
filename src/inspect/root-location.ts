import { BtrfsVolume, topLevel, type BtrfsFilesystem } from './btrfs.js';
import { ImageReadError, type FileTree } from './file-tree.js';
import { detectFilesystem, linuxFilesystems, type FilesystemType, type ReadAt } from './filesystems.js';
import { entryFor, parseFstab } from './fstab.js';
import { readVolumeGroups, type LogicalVolume } from './lvm.js';
import { openFileTree } from './open-tree.js';
import { chooseRoot, type PartitionTable } from './partitions.js';
import { lvNamePattern, subvolPathPattern } from './result.js';

const maxFstabBytes = 64 * 1024;

/** The root filesystem found, opened, and what ramboot must be told to mount it. */
export interface RootLocation {
  partition: number | null;
  offset: number;
  size: number;
  fstype: FilesystemType;
  tree: FileTree;
  /** `VG/LV` when the root is a logical volume (nbdroot.lv=). */
  lv: string | null;
  /** The btrfs subvolume's path when the root is not the default subvolume (nbdroot.subvol=). */
  subvol: string | null;
  /** Put before a path of `tree` to name it from where a plain open of this filesystem starts (its default subvolume). */
  prefix: string;
  /** The opened btrfs, for a /boot subvolume of the same filesystem. */
  btrfs: { volume: BtrfsVolume; defaultPath: string } | null;
  /** How GET /exports shows where the root lies: "gpt/p2", "gpt/lvm:vg0/root". */
  where: string;
}

export type RootFound =
  { found: true; root: RootLocation } | { found: false; partition: number | null; fstype: FilesystemType | null; reason: string };

/**
 * Where the image's root filesystem lies, as ramboot finds it: a logical volume whose filesystem
 * holds an OS (preferring one named root) when the image has LVM physical volumes; else the
 * largest partition with a Linux filesystem (chooseRoot). A btrfs whose default subvolume holds
 * no OS gets the subvolume whose fstab mounts itself as `/`.
 */
export function locateRoot(fd: number, read: ReadAt, table: PartitionTable, diskSize: number): RootFound {
  const groups = table.partitions.length > 0 ? readVolumeGroups(read, table.partitions) : null;
  const lvmProblems: string[] = [...(groups?.problems ?? [])];
  if (groups && groups.physicalVolumes.length > 0) {
    const candidates = [...groups.volumes].sort((a, b) => Number(b.name === 'root') - Number(a.name === 'root'));
    for (const lv of candidates) {
      const found = openLogicalVolume(fd, read, lv, table.scheme);
      if ('root' in found) return { found: true, root: found.root };
      lvmProblems.push(`${lv.vg}/${lv.name}: ${found.problem}`);
    }
  }
  const plain = chooseRoot(read, table, diskSize);
  if (!plain.found) {
    return groups?.physicalVolumes.length ? { ...plain, reason: lvmReason(groups.physicalVolumes, lvmProblems) } : plain;
  }
  const where = plain.partition === null ? 'disk' : `${table.scheme}/p${plain.partition}`;
  try {
    const opened = openRoot(fd, read, plain, plain.fstype, where);
    // With physical volumes beside it, a partition is the root only when it holds an OS; else the LVM reason tells more.
    if (groups?.physicalVolumes.length && !hasOs(opened.tree))
      return { found: false, partition: null, fstype: null, reason: lvmReason(groups.physicalVolumes, lvmProblems) };
    return { found: true, root: { ...opened, partition: plain.partition, offset: plain.offset, size: plain.size, lv: null } };
  } catch (err) {
    if (err instanceof ImageReadError) return { found: false, partition: plain.partition, fstype: plain.fstype, reason: err.message };
    throw err;
  }
}

function lvmReason(physicalVolumes: number[], problems: string[]): string {
  const why = problems.length > 0 ? problems.slice(0, 4).join('; ') : 'no visible logical volume';
  return `the image has LVM physical volumes (partition ${physicalVolumes.join(', ')}) but no logical volume with an OS nbdmux can read: ${why}`;
}

function openLogicalVolume(fd: number, read: ReadAt, lv: LogicalVolume, scheme: string): { root: RootLocation } | { problem: string } {
  const name = `${lv.vg}/${lv.name}`;
  if (!lvNamePattern.test(name)) return { problem: 'its name has characters ramboot does not accept in nbdroot.lv' };
  const fstype = detectFilesystem(read, lv.offset);
  if (!fstype || !linuxFilesystems.has(fstype)) return { problem: `holds ${fstype ?? 'no filesystem nbdmux recognises'}` };
  try {
    const opened = openRoot(fd, read, lv, fstype, `${scheme}/lvm:${name}`);
    if (!hasOs(opened.tree)) return { problem: `its ${fstype} holds no OS (/etc/os-release and /sbin/init or /usr/lib/systemd/systemd)` };
    return { root: { ...opened, partition: lv.partition, offset: lv.offset, size: lv.size, lv: name } };
  } catch (err) {
    if (err instanceof ImageReadError) return { problem: err.message };
    throw err;
  }
}

type Opened = Pick<RootLocation, 'fstype' | 'tree' | 'subvol' | 'prefix' | 'btrfs' | 'where'>;

function openRoot(fd: number, read: ReadAt, part: { offset: number; size: number }, fstype: FilesystemType, where: string): Opened {
  if (fstype !== 'btrfs') return { fstype, tree: openFileTree(fd, read, part, fstype, null), subvol: null, prefix: '', btrfs: null, where };
  const volume = new BtrfsVolume(read, part.offset, part.size, 'the btrfs filesystem');
  const defaultId = volume.defaultSubvolume();
  const subvolumes = volume.subvolumes();
  const pathOf = (id: number) => (id === topLevel ? '' : (subvolumes.find((s) => s.id === id)?.path ?? null));
  const defaultPath = pathOf(defaultId);
  const defaultTree = volume.open(defaultId, 'the btrfs filesystem');
  const btrfs = { volume, defaultPath: defaultPath ?? '' };
  const others = subvolumes.filter((s) => s.path !== defaultPath);
  // Without other subvolumes there is nothing to choose: what the default lacks, the kernel search says.
  if (others.length === 0 || hasOs(defaultTree)) return { fstype, tree: defaultTree, subvol: null, prefix: '', btrfs, where };
  const chosen = rootSubvolume(
    volume,
    subvolumes.filter((s) => s.path !== defaultPath),
  );
  if ('problem' in chosen) throw new ImageReadError(chosen.problem);
  if (!subvolPathPattern.test(chosen.path))
    throw new ImageReadError(
      `the root's btrfs subvolume ${JSON.stringify(chosen.path)} has characters ramboot does not accept in nbdroot.subvol`,
    );
  if (defaultPath === null || (defaultPath !== '' && !chosen.path.startsWith(`${defaultPath}/`)))
    throw new ImageReadError(
      `the root's btrfs subvolume ${chosen.path} is not inside the default subvolume, where nbdmux's build reads from`,
    );
  const prefix = `/${defaultPath === '' ? chosen.path : chosen.path.slice(defaultPath.length + 1)}`;
  return { fstype, tree: chosen.tree, subvol: chosen.path, prefix, btrfs, where };
}

/** The subvolume holding an OS whose fstab mounts it as `/`; else the one named root (or @), else the only one with an OS. */
function rootSubvolume(
  volume: BtrfsVolume,
  subvolumes: { id: number; path: string }[],
): { path: string; tree: BtrfsFilesystem } | { problem: string } {
  const withOs = subvolumes.flatMap((s) => {
    try {
      const tree = volume.open(s.id, `the btrfs subvolume ${s.path}`);
      return hasOs(tree) ? [{ ...s, tree }] : [];
    } catch (err) {
      if (err instanceof ImageReadError) return [];
      throw err;
    }
  });
  const mountsItself = withOs.find((s) => fstabSubvolume(s.tree, '/') === s.path);
  const chosen = mountsItself ?? withOs.find((s) => s.path === 'root' || s.path === '@') ?? (withOs.length === 1 ? withOs[0] : undefined);
  if (chosen) return chosen;
  const listed =
    subvolumes
      .map((s) => s.path)
      .slice(0, 10)
      .join(', ') || 'none';
  return withOs.length > 1
    ? {
        problem: `the btrfs's default subvolume holds no OS and several subvolumes do (${withOs.map((s) => s.path).join(', ')}), none named root or mounted as / by its own fstab`,
      }
    : { problem: `the btrfs's default subvolume holds no OS, and no subvolume does (subvolumes: ${listed})` };
}

/** The `subvol=` its /etc/fstab mounts at `mountPoint`, without a leading `/`; null: none. */
function fstabSubvolume(tree: FileTree, mountPoint: string): string | null {
  try {
    const text = tree.readFile('/etc/fstab', maxFstabBytes);
    const entry = text ? entryFor(parseFstab(text.toString('utf8')), mountPoint) : undefined;
    const option = entry?.options.find((o) => o.startsWith('subvol='));
    return option ? option.slice('subvol='.length).replace(/^\/+/, '') : null;
  } catch (err) {
    if (err instanceof ImageReadError) return null;
    throw err;
  }
}

/** An OS as ramboot looks for one: an os-release and an init. */
export function hasOs(tree: FileTree): boolean {
  try {
    const release = tree.resolve('/etc/os-release') ?? tree.resolve('/usr/lib/os-release');
    const init = tree.resolve('/sbin/init') ?? tree.resolve('/usr/lib/systemd/systemd');
    return release?.entry.kind === 'file' && init !== null;
  } catch (err) {
    if (err instanceof ImageReadError) return false;
    throw err;
  }
}
