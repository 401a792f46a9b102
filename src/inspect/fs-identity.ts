import type { FilesystemType, ReadAt } from './filesystems.js';

/** What an fstab's UUID= and LABEL= match, as blkid prints them. */
export interface FilesystemIdentity {
  uuid: string | null;
  label: string | null;
}

/**
 * The UUID and label the superblock of the `fstype` filesystem at `offset` carries, read where
 * each format keeps them (ext: s_uuid/s_volume_name; xfs: sb_uuid/sb_fname; btrfs: fsid/label;
 * vfat: the volume serial and label of its boot sector).
 */
export function filesystemIdentity(read: ReadAt, offset: number, fstype: FilesystemType): FilesystemIdentity {
  switch (fstype) {
    case 'ext2':
    case 'ext3':
    case 'ext4': {
      const sb = read(offset + 1024, 0x88);
      return { uuid: uuidOf(sb, 0x68), label: labelOf(sb, 0x78, 16) };
    }
    case 'xfs': {
      const sb = read(offset, 120);
      return { uuid: uuidOf(sb, 32), label: labelOf(sb, 108, 12) };
    }
    case 'btrfs': {
      const sb = read(offset + 0x10000, 0x12b + 256);
      return { uuid: uuidOf(sb, 0x20), label: labelOf(sb, 0x12b, 256) };
    }
    case 'vfat': {
      const boot = read(offset, 512);
      // FAT32 keeps its extended boot record 28 bytes further on than FAT12/16.
      const at = boot.toString('latin1', 82, 87) === 'FAT32' ? 67 : 39;
      if (boot.length < at + 15) return { uuid: null, label: null };
      const serial = boot.readUInt32LE(at).toString(16).toUpperCase().padStart(8, '0');
      const label = boot.toString('latin1', at + 4, at + 15).trimEnd();
      return { uuid: `${serial.slice(0, 4)}-${serial.slice(4)}`, label: label === '' || label === 'NO NAME' ? null : label };
    }
  }
}

function uuidOf(bytes: Buffer, at: number): string | null {
  if (bytes.length < at + 16) return null;
  const hex = bytes.toString('hex', at, at + 16);
  if (/^0+$/.test(hex)) return null;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A NUL-padded label; null when empty or unreadable. */
function labelOf(bytes: Buffer, at: number, length: number): string | null {
  if (bytes.length < at + length) return null;
  const raw = bytes.subarray(at, at + length);
  const end = raw.indexOf(0);
  const label = raw.subarray(0, end < 0 ? length : end).toString('utf8');
  return label === '' ? null : label;
}
