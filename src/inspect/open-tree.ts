import { BtrfsVolume } from './btrfs.js';
import { ExtFilesystem } from './ext-fs.js';
import { ImageReadError, type FileTree } from './file-tree.js';
import { extFilesystemBytes, type FilesystemType, type ReadAt } from './filesystems.js';
import { XfsFilesystem } from './xfs.js';

/**
 * The filesystem of `fstype` spanning `part` (a partition, or the whole disk) opened to read
 * files, or why not. `owner` names it in reasons ("the /boot partition 2"); null: the root.
 */
export function openFileTree(
  fd: number,
  read: ReadAt,
  part: { offset: number; size: number },
  fstype: FilesystemType,
  owner: string | null,
): FileTree {
  const family = fstype.startsWith('ext') ? 'ext' : fstype;
  const label = owner === null ? `the ${family} filesystem` : `${owner}'s ${family} filesystem`;
  switch (fstype) {
    case 'ext2':
    case 'ext3':
    case 'ext4': {
      // debugfs reads whatever the superblock claims: a filesystem claiming more than its partition could read the next one.
      const claimed = extFilesystemBytes(read, part.offset);
      if (claimed > part.size)
        throw new ImageReadError(`${label} claims ${claimed} bytes, more than the ${part.size} of its partition: it is damaged`);
      return new ExtFilesystem(fd, part.offset, label);
    }
    case 'xfs':
      return new XfsFilesystem(read, part.offset, part.size, label);
    case 'btrfs': {
      // Its default subvolume, as a mount without subvol= shows it: the paths an inspection hands on start there.
      const volume = new BtrfsVolume(read, part.offset, part.size, label);
      return volume.open(volume.defaultSubvolume(), label);
    }
    default:
      throw new ImageReadError(`${owner ?? 'the root filesystem'} is ${fstype}: nbdmux reads kernels from ext2/3/4, xfs and btrfs only`);
  }
}
