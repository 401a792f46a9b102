/** Reads `length` bytes at `offset` of the image; fewer (or none) past its end. */
export type ReadAt = (offset: number, length: number) => Buffer;

export const filesystemTypes = ['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'vfat'] as const;
export type FilesystemType = (typeof filesystemTypes)[number];

/** What ramboot's init mounts as a root (its `linux_fs`). */
export const linuxFilesystems: ReadonlySet<FilesystemType> = new Set(['ext2', 'ext3', 'ext4', 'xfs', 'btrfs']);

// ext feature bits beyond what ext3 knows, as blkid tells ext4 from ext3.
const extCompatHasJournal = 0x4;
const ext3IncompatKnown = 0x2 | 0x4 | 0x10; // filetype, recover, meta_bg
const ext3RoCompatKnown = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir

/** The filesystem whose superblock magic sits at its place after `offset`; null: none known. */
export function detectFilesystem(read: ReadAt, offset: number): FilesystemType | null {
  const ext = read(offset + 1024, 0x68);
  if (ext.length === 0x68 && ext.readUInt16LE(0x38) === 0xef53) {
    const compat = ext.readUInt32LE(0x5c);
    const incompat = ext.readUInt32LE(0x60);
    const roCompat = ext.readUInt32LE(0x64);
    if ((incompat & ~ext3IncompatKnown) !== 0 || (roCompat & ~ext3RoCompatKnown) !== 0) return 'ext4';
    return (compat & extCompatHasJournal) !== 0 ? 'ext3' : 'ext2';
  }
  if (read(offset, 4).toString('latin1') === 'XFSB') return 'xfs';
  if (read(offset + 0x10040, 8).toString('latin1') === '_BHRfS_M') return 'btrfs';
  const boot = read(offset, 512);
  if (boot.length === 512 && boot.readUInt16LE(510) === 0xaa55) {
    if (boot.toString('latin1', 54, 58) === 'FAT1' || boot.toString('latin1', 82, 87) === 'FAT32') return 'vfat';
  }
  return null;
}

/**
 * The bytes an ext2/3/4 filesystem at `offset` says it spans: blocks (64-bit count when the
 * 64bit feature is on) times the block size.
 */
export function extFilesystemBytes(read: ReadAt, offset: number): number {
  const sb = read(offset + 1024, 0x154);
  const is64bit = (sb.readUInt32LE(0x60) & 0x80) !== 0;
  const blocks = sb.readUInt32LE(0x04) + (is64bit ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  return blocks * 2 ** (10 + sb.readUInt32LE(0x18));
}
