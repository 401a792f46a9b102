import { crc32 } from 'node:zlib';
import { detectFilesystem, linuxFilesystems, type FilesystemType, type ReadAt } from './filesystems.js';

export interface Partition {
  /** The number the kernel gives it: nbd0pN, ramboot's nbdroot.part=N. */
  number: number;
  offset: number;
  size: number;
  /** What an fstab's PARTUUID= names: the GPT entry's unique GUID, or an MBR's `DISKSIG-NN`. */
  partuuid: string;
  /** A GPT entry's name (PARTLABEL=); null on MBR or when empty. */
  partlabel: string | null;
}

export interface PartitionTable {
  scheme: 'gpt' | 'mbr' | 'none';
  partitions: Partition[];
  /** Entries left out, and why: out of range, overlapping, too many. */
  problems: string[];
}

const sector = 512;
/** The spec's minimum entry array is 16 KiB; real tools write 128 x 128 bytes. Far beyond: hostile. */
const maxGptEntryBytes = 1024 * 1024;
/** Logical partitions followed along an extended partition's chain, at most. */
const maxLogicalPartitions = 128;
const extendedTypes = new Set([0x05, 0x0f, 0x85]);
const protectiveType = 0xee;

/**
 * Reads the partition table of a disk image of `diskSize` bytes: GPT (primary header, else the
 * backup), else MBR (primary and logical partitions). Garbage gives `none`, never a throw:
 * entries past the disk's end or overlapping an earlier one are left out with a problem noted.
 */
export function readPartitionTable(read: ReadAt, diskSize: number): PartitionTable {
  const mbr = read(0, sector);
  if (mbr.length < sector || mbr.readUInt16LE(510) !== 0xaa55) return { scheme: 'none', partitions: [], problems: [] };
  // A FAT (or other) boot sector also ends in 0x55AA: its boot code is not a partition table.
  if (detectFilesystem(read, 0) !== null) return { scheme: 'none', partitions: [], problems: [] };
  const primaries = [0, 1, 2, 3].map((i) => mbr.subarray(446 + 16 * i, 462 + 16 * i));
  if (primaries.some((entry) => entry[0] !== 0x00 && entry[0] !== 0x80)) {
    return { scheme: 'none', partitions: [], problems: ['sector 0 ends in 0x55AA but its partition entries are not valid MBR entries'] };
  }
  if (primaries.some((entry) => entry[4] === protectiveType)) {
    const gpt = readGpt(read, diskSize);
    if (gpt) return gpt;
    return { scheme: 'none', partitions: [], problems: ['a protective MBR announces a GPT, but neither GPT header is valid'] };
  }
  return readMbr(read, diskSize, primaries, mbr.readUInt32LE(440));
}

function readMbr(read: ReadAt, diskSize: number, primaries: Buffer[], signature: number): PartitionTable {
  const problems: string[] = [];
  // As blkid and the kernel name an MBR partition: the disk signature, then the number, in hex.
  const partuuidOf = (number: number) => `${signature.toString(16).padStart(8, '0')}-${number.toString(16).padStart(2, '0')}`;
  const found: Partition[] = [];
  let extendedStart: number | null = null;
  primaries.forEach((entry, i) => {
    const type = entry[4]!;
    const start = entry.readUInt32LE(8) * sector;
    const size = entry.readUInt32LE(12) * sector;
    if (type === 0 || size === 0) return;
    if (extendedTypes.has(type)) {
      if (extendedStart === null) extendedStart = start;
      return;
    }
    found.push({ number: i + 1, offset: start, size, partuuid: partuuidOf(i + 1), partlabel: null });
  });
  if (extendedStart !== null)
    found.push(...readLogicalPartitions(read, extendedStart, problems).map((part) => ({ ...part, partuuid: partuuidOf(part.number) })));
  return { scheme: 'mbr', partitions: keepSound(found, diskSize, problems), problems };
}

/** Follows the chain of extended boot records; numbers 5, 6, ... as the kernel does. */
function readLogicalPartitions(read: ReadAt, extendedStart: number, problems: string[]): Omit<Partition, 'partuuid'>[] {
  const logical: Omit<Partition, 'partuuid'>[] = [];
  const visited = new Set<number>();
  let ebrAt = extendedStart;
  while (logical.length < maxLogicalPartitions) {
    if (visited.has(ebrAt)) {
      problems.push(`the extended partition's chain loops back to byte ${ebrAt}`);
      break;
    }
    visited.add(ebrAt);
    const ebr = read(ebrAt, sector);
    if (ebr.length < sector || ebr.readUInt16LE(510) !== 0xaa55) break;
    const size = ebr.readUInt32LE(446 + 12) * sector;
    if (size > 0) logical.push({ number: 5 + logical.length, offset: ebrAt + ebr.readUInt32LE(446 + 8) * sector, size, partlabel: null });
    const next = ebr.readUInt32LE(462 + 8);
    if (next === 0) break;
    ebrAt = extendedStart + next * sector;
  }
  if (logical.length === maxLogicalPartitions) problems.push(`more than ${maxLogicalPartitions} logical partitions: the rest are ignored`);
  return logical;
}

function readGpt(read: ReadAt, diskSize: number): PartitionTable | null {
  const lastLba = Math.floor(diskSize / sector) - 1;
  for (const headerLba of [1, lastLba]) {
    const table = readGptAt(read, diskSize, headerLba);
    if (table) return table;
  }
  return null;
}

function readGptAt(read: ReadAt, diskSize: number, headerLba: number): PartitionTable | null {
  const header = read(headerLba * sector, sector);
  if (header.length < 92 || header.toString('latin1', 0, 8) !== 'EFI PART') return null;
  const headerSize = header.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sector) return null;
  const withoutCrc = Buffer.from(header.subarray(0, headerSize));
  withoutCrc.writeUInt32LE(0, 16);
  if (crc32(withoutCrc) !== header.readUInt32LE(16)) return null;
  const firstUsable = Number(header.readBigUInt64LE(40)) * sector;
  const lastUsable = Number(header.readBigUInt64LE(48)) * sector + sector;
  const entriesAt = Number(header.readBigUInt64LE(72)) * sector;
  const count = header.readUInt32LE(80);
  const entrySize = header.readUInt32LE(84);
  const problems: string[] = [];
  if (entrySize < 128 || entrySize % 8 !== 0 || count * entrySize > maxGptEntryBytes) {
    problems.push(`the GPT announces ${count} entries of ${entrySize} bytes: not a table nbdmux reads`);
    return { scheme: 'gpt', partitions: [], problems };
  }
  const entries = read(entriesAt, count * entrySize);
  if (entries.length < count * entrySize || crc32(entries) !== header.readUInt32LE(88)) return null;
  const found: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const entry = entries.subarray(i * entrySize, (i + 1) * entrySize);
    if (entry.subarray(0, 16).every((byte) => byte === 0)) continue;
    const first = Number(entry.readBigUInt64LE(32)) * sector;
    const last = Number(entry.readBigUInt64LE(40)) * sector;
    if (first < firstUsable || last + sector > lastUsable || last < first) {
      problems.push(`GPT entry ${i + 1} lies outside the usable area: ignored`);
      continue;
    }
    const name = entry.toString('utf16le', 56, 128).replace(/\0[\s\S]*$/, '');
    found.push({ number: i + 1, offset: first, size: last - first + sector, partuuid: guidOf(entry, 16), partlabel: name || null });
  }
  return { scheme: 'gpt', partitions: keepSound(found, diskSize, problems), problems };
}

/** A GUID as text: its first three fields are stored little-endian. */
export function guidOf(bytes: Buffer, at: number): string {
  const hex = (from: number, to: number) => bytes.subarray(at + from, at + to).toString('hex');
  const le = (from: number, to: number) =>
    Buffer.from(bytes.subarray(at + from, at + to))
      .reverse()
      .toString('hex');
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${hex(8, 10)}-${hex(10, 16)}`;
}

/** Drops partitions past the disk's end and any overlapping one listed before it. */
function keepSound(found: Partition[], diskSize: number, problems: string[]): Partition[] {
  const kept: Partition[] = [];
  for (const part of found) {
    if (part.offset <= 0 || part.offset + part.size > diskSize) {
      problems.push(`partition ${part.number} ends past the disk's end: ignored`);
    } else if (kept.some((other) => part.offset < other.offset + other.size && other.offset < part.offset + part.size)) {
      problems.push(`partition ${part.number} overlaps another: ignored`);
    } else {
      kept.push(part);
    }
  }
  return kept;
}

export type RootChoice =
  | { found: true; partition: number | null; offset: number; size: number; fstype: FilesystemType }
  | { found: false; partition: null; fstype: FilesystemType | null; reason: string };

/**
 * ramboot's rule: the largest partition holding a Linux filesystem, else the whole disk, never
 * a partition picked by its number (partition 1 is often the EFI system partition).
 */
export function chooseRoot(read: ReadAt, table: PartitionTable, diskSize: number): RootChoice {
  const bySizeDescending = [...table.partitions].sort((a, b) => b.size - a.size);
  const seen: string[] = [];
  for (const part of bySizeDescending) {
    const fstype = detectFilesystem(read, part.offset);
    if (fstype && linuxFilesystems.has(fstype))
      return { found: true, partition: part.number, offset: part.offset, size: part.size, fstype };
    seen.push(`${part.number}: ${fstype ?? 'unknown'}`);
  }
  const whole = detectFilesystem(read, 0);
  if (whole && linuxFilesystems.has(whole)) return { found: true, partition: null, offset: 0, size: diskSize, fstype: whole };
  if (table.partitions.length > 0) {
    return { found: false, partition: null, fstype: null, reason: `no partition holds a Linux filesystem (partitions ${seen.join(', ')})` };
  }
  if (whole) return { found: false, partition: null, fstype: whole, reason: `the disk holds ${whole}, not a Linux root filesystem` };
  const unread = table.problems.length > 0 ? ` (${table.problems.join('; ')})` : '';
  return { found: false, partition: null, fstype: null, reason: `no partition table and no filesystem nbdmux recognises${unread}` };
}
