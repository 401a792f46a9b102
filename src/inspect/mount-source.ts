import { detectFilesystem, type FilesystemType, type ReadAt } from './filesystems.js';
import { filesystemIdentity } from './fs-identity.js';
import type { DeviceSpec } from './fstab.js';
import type { Partition, PartitionTable } from './partitions.js';

export type MountSource = { found: true; partition: Partition; fstype: FilesystemType } | { found: false; reason: string };

/**
 * The partition of the image an fstab spec names, matched as blkid would: the filesystem's
 * UUID (case aside) or label from its superblock, the partition's PARTUUID or PARTLABEL from
 * the table, or its number for a device name. Exactly one must match.
 */
export function findMountSource(read: ReadAt, table: PartitionTable, spec: DeviceSpec, what: string): MountSource {
  if (spec.by === 'unknown') return { found: false, reason: `${what}: ${spec.why}` };
  const matches = table.partitions.filter((part) => {
    switch (spec.by) {
      case 'partition':
        return part.number === spec.number;
      case 'partuuid':
        return part.partuuid === spec.value.toLowerCase();
      case 'partlabel':
        return part.partlabel === spec.value;
      case 'uuid':
      case 'label': {
        const fstype = detectFilesystem(read, part.offset);
        if (!fstype) return false;
        const identity = filesystemIdentity(read, part.offset, fstype);
        return spec.by === 'uuid' ? identity.uuid?.toLowerCase() === spec.value.toLowerCase() : identity.label === spec.value;
      }
    }
  });
  const named = spec.by === 'partition' ? `partition ${spec.number}` : `${spec.by.toUpperCase()}=${spec.value}`;
  if (matches.length === 0) return { found: false, reason: `${what}: no partition of the image is ${named}` };
  if (matches.length > 1)
    return { found: false, reason: `${what}: partitions ${matches.map((p) => p.number).join(', ')} are all ${named}, so it is ambiguous` };
  const partition = matches[0]!;
  const fstype = detectFilesystem(read, partition.offset);
  if (!fstype) return { found: false, reason: `${what}: partition ${partition.number} (${named}) holds no filesystem nbdmux recognises` };
  return { found: true, partition, fstype };
}
