import { ImageReadError } from './file-tree.js';
import type { ReadAt } from './filesystems.js';

/** A btrfs key: items sort by objectid, then type, then offset. */
export interface Key {
  objectid: bigint;
  type: number;
  offset: bigint;
}

export interface Item {
  key: Key;
  data: Buffer;
}

interface Chunk {
  logical: number;
  length: number;
  /** Byte offset of its first stripe on the one device, from the filesystem's start. */
  physical: number;
}

export const superblockAt = 0x10000;
const superblockBytes = 4096;
const headerBytes = 0x65;
const keyBytes = 17;
const itemBytes = keyBytes + 8;
const keyPtrBytes = keyBytes + 16;
const chunkItemBytes = 48;
const stripeBytes = 32;
const chunkItemType = 228;
/** Levels of a btrfs B-tree: the kernel's BTRFS_MAX_LEVEL. */
const maxLevels = 8;
/** Tree blocks read for one lookup: a lookup needs a few; a crafted tree that fans out far wider is refused. */
const maxBlocksPerWalk = 20_000;
/** Tree blocks kept read: 1024 of 16 KiB = 16 MiB, well inside the child's heap. */
const maxCachedBlocks = 1024;
/** Chunks mapped: a 2 TiB filesystem has about 2000 of 1 GiB. */
const maxChunks = 100_000;
// Block group profiles that spread one chunk over stripes of several devices or parity: nothing a one-device reader maps.
const stripedProfiles = 0x8 | 0x40 | 0x80 | 0x100;

export function compareKeys(a: Key, b: Key): number {
  if (a.objectid !== b.objectid) return a.objectid < b.objectid ? -1 : 1;
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  if (a.offset !== b.offset) return a.offset < b.offset ? -1 : 1;
  return 0;
}

function keyAt(raw: Buffer, at: number): Key {
  return { objectid: raw.readBigUInt64LE(at), type: raw[at + 8]!, offset: raw.readBigUInt64LE(at + 9) };
}

/** A u64 that must fit a JavaScript number to mean anything here. */
export function safeNumber(value: bigint, what: string, damaged: (why: string) => ImageReadError): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw damaged(`${what} is out of range`);
  return Number(value);
}

/**
 * The trees of one btrfs on one device, read at `offset` of the image: the superblock, the
 * chunk map (logical to physical, from the superblock's system chunks and the chunk tree), and
 * bounded lookups in any tree. Checked against the filesystem's bounds, every tree block's
 * address, owner filesystem and level, so a loop or a damaged block is a reason, never a hang.
 */
export class BtrfsTrees {
  readonly nodeSize: number;
  readonly sectorSize: number;
  readonly rootTree: { bytenr: number; level: number };
  private readonly fsid: Buffer;
  private readonly chunks: Chunk[] = [];
  private readonly blocks = new Map<number, Buffer>();
  private budget = 0;

  constructor(
    private readonly read: ReadAt,
    private readonly offset: number,
    private readonly size: number,
    private readonly label: string,
  ) {
    const sb = read(offset + superblockAt, superblockBytes);
    if (sb.length < superblockBytes) throw this.damaged('its superblock is cut short (the partition ends inside it)');
    if (sb.toString('latin1', 0x40, 0x48) !== '_BHRfS_M') throw this.damaged('no btrfs superblock');
    this.sectorSize = sb.readUInt32LE(0x90);
    this.nodeSize = sb.readUInt32LE(0x94);
    const sysChunkBytes = sb.readUInt32LE(0xa0);
    const powerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;
    const sound =
      Number(sb.readBigUInt64LE(0x30)) === superblockAt &&
      powerOfTwo(this.sectorSize) &&
      this.sectorSize >= 4096 &&
      this.sectorSize <= 65536 &&
      powerOfTwo(this.nodeSize) &&
      this.nodeSize >= this.sectorSize &&
      this.nodeSize <= 65536 &&
      sysChunkBytes <= 2048;
    if (!sound) throw this.damaged('its superblock is inconsistent (sector, node or system chunk sizes)');
    const devices = sb.readBigUInt64LE(0x88);
    if (devices !== 1n)
      throw new ImageReadError(
        `${this.label} spans ${devices} devices: nbdmux reads a btrfs on one device only (its other devices are not in this image)`,
      );
    const claimed = sb.readBigUInt64LE(0x70);
    if (claimed > BigInt(size)) throw this.damaged(`it claims ${claimed} bytes, more than the ${size} of its partition`);
    // With the metadata_uuid feature, tree blocks carry that UUID instead of the fsid.
    const metadataUuid = (sb.readBigUInt64LE(0xbc) & 0x400n) !== 0n;
    this.fsid = Buffer.from(sb.subarray(metadataUuid ? 0x23b : 0x20, (metadataUuid ? 0x23b : 0x20) + 16));
    this.readSystemChunks(sb.subarray(0x32b, 0x32b + sysChunkBytes));
    const chunkRoot = { bytenr: this.number(sb.readBigUInt64LE(0x58), 'the chunk tree root'), level: sb[0xc7]! };
    for (const item of this.items(
      chunkRoot,
      { objectid: 256n, type: chunkItemType, offset: 0n },
      { objectid: 256n, type: chunkItemType, offset: 2n ** 64n - 1n },
      'the chunk tree',
    )) {
      this.addChunk(item.key.offset, item.data, 0);
    }
    this.rootTree = { bytenr: this.number(sb.readBigUInt64LE(0x50), 'the root tree root'), level: sb[0xc6]! };
  }

  damaged(why: string): ImageReadError {
    return new ImageReadError(`${this.label} is damaged: ${why}`);
  }

  number(value: bigint, what: string): number {
    return safeNumber(value, what, (why) => this.damaged(why));
  }

  /** The items of a tree whose keys lie in [min, max], in key order. */
  items(root: { bytenr: number; level: number }, min: Key, max: Key, what: string): Item[] {
    this.budget = maxBlocksPerWalk;
    const found: Item[] = [];
    this.walk(root.bytenr, root.level, min, max, found, what);
    return found;
  }

  /** The one item with exactly `key`; null: none. */
  item(root: { bytenr: number; level: number }, key: Key, what: string): Item | null {
    return this.items(root, key, key, what)[0] ?? null;
  }

  /** `length` bytes at a logical address, through the chunk map; an extent may not cross a chunk's end. */
  readLogical(logical: number, length: number, what: string): Buffer {
    const chunk = this.chunks.find((c) => logical >= c.logical && logical < c.logical + c.length);
    if (!chunk || logical + length > chunk.logical + chunk.length) throw this.damaged(`${what} lies at a logical address no chunk maps`);
    const physical = chunk.physical + (logical - chunk.logical);
    if (physical + length > this.size) throw this.damaged(`${what} lies past the filesystem's end`);
    const bytes = this.read(this.offset + physical, length);
    if (bytes.length < length) throw this.damaged(`${what} lies past the image's end`);
    return bytes;
  }

  private walk(bytenr: number, level: number, min: Key, max: Key, found: Item[], what: string): void {
    if (--this.budget < 0) throw new ImageReadError(`${what} needs more than ${maxBlocksPerWalk} tree blocks for one lookup: refused`);
    if (level >= maxLevels) throw this.damaged(`${what} claims ${level + 1} levels, more than btrfs has`);
    const block = this.block(bytenr, what);
    if (block[0x64] !== level) throw this.damaged(`${what} has a block at ${bytenr} on the wrong level (a loop or a stale pointer)`);
    const count = block.readUInt32LE(0x60);
    if (level === 0) {
      if (headerBytes + count * itemBytes > block.length) throw this.damaged(`${what} has a leaf at ${bytenr} with too many items`);
      for (let i = 0; i < count; i++) {
        const at = headerBytes + i * itemBytes;
        const key = keyAt(block, at);
        if (compareKeys(key, min) < 0 || compareKeys(key, max) > 0) continue;
        const dataAt = headerBytes + block.readUInt32LE(at + keyBytes);
        const dataEnd = dataAt + block.readUInt32LE(at + keyBytes + 4);
        if (dataEnd > block.length || dataAt < headerBytes + count * itemBytes)
          throw this.damaged(`${what} has a leaf at ${bytenr} whose items overrun it`);
        found.push({ key, data: block.subarray(dataAt, dataEnd) });
      }
      return;
    }
    if (headerBytes + count * keyPtrBytes > block.length) throw this.damaged(`${what} has a node at ${bytenr} with too many pointers`);
    for (let i = 0; i < count; i++) {
      const at = headerBytes + i * keyPtrBytes;
      const next = i + 1 < count ? keyAt(block, at + keyPtrBytes) : null;
      // Child i holds keys from its own key up to the next child's: skip those wholly outside [min, max].
      if (compareKeys(keyAt(block, at), max) > 0) break;
      if (next && compareKeys(next, min) <= 0) continue;
      this.walk(this.number(block.readBigUInt64LE(at + keyBytes), `${what}'s pointer`), level - 1, min, max, found, what);
    }
  }

  private block(bytenr: number, what: string): Buffer {
    const known = this.blocks.get(bytenr);
    if (known) return known;
    const block = this.readLogical(bytenr, this.nodeSize, `${what}'s block at ${bytenr}`);
    if (Number(block.readBigUInt64LE(0x30)) !== bytenr || !block.subarray(0x20, 0x30).equals(this.fsid))
      throw this.damaged(`${what}'s block at ${bytenr} is not the block its parent points to`);
    if (this.blocks.size >= maxCachedBlocks) this.blocks.delete(this.blocks.keys().next().value!);
    this.blocks.set(bytenr, block);
    return block;
  }

  /** The superblock's copy of the system chunks: what maps the chunk tree itself. */
  private readSystemChunks(array: Buffer): void {
    let at = 0;
    while (at + keyBytes + chunkItemBytes <= array.length) {
      const key = keyAt(array, at);
      if (key.type !== chunkItemType) throw this.damaged('its system chunk array holds something other than chunks');
      at += keyBytes + this.addChunk(key.offset, array.subarray(at + keyBytes), at);
    }
    if (this.chunks.length === 0) throw this.damaged('its superblock maps no system chunk');
  }

  /** Adds the chunk at `logical` (the chunk item's bytes from `data`); returns the item's length. */
  private addChunk(logicalKey: bigint, data: Buffer, where: number): number {
    if (data.length < chunkItemBytes) throw this.damaged(`a chunk item at ${where} is cut short`);
    const stripes = data.readUInt16LE(44);
    const bytes = chunkItemBytes + stripes * stripeBytes;
    if (stripes === 0 || data.length < bytes) throw this.damaged(`a chunk item at ${where} is cut short`);
    const type = data.readBigUInt64LE(24);
    if ((type & BigInt(stripedProfiles)) !== 0n)
      throw new ImageReadError(
        `${this.label} uses a RAID0/10/5/6 profile (chunk type ${type}): nbdmux reads single, DUP and RAID1 btrfs only`,
      );
    const chunk = {
      logical: this.number(logicalKey, 'a chunk address'),
      length: this.number(data.readBigUInt64LE(0), 'a chunk length'),
      physical: this.number(data.readBigUInt64LE(48 + 8), 'a chunk stripe offset'),
    };
    if (chunk.physical + chunk.length > this.size) throw this.damaged(`a chunk at ${chunk.logical} lies past the filesystem's end`);
    if (this.chunks.length >= maxChunks) throw new ImageReadError(`${this.label} has more than ${maxChunks} chunks: refused`);
    if (!this.chunks.some((c) => c.logical === chunk.logical)) this.chunks.push(chunk);
    return bytes;
  }
}
