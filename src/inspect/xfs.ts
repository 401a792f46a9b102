import { ImageReadError, requireFile, resolvePath, type CopiedFile, type FileTree, type FsEntry, type Resolved } from './file-tree.js';
import type { ReadAt } from './filesystems.js';

/** A directory's blocks read, at most: /usr/lib/modules/VERSION/kernel/... directories take a few KiB. */
const maxDirectoryBytes = 16 * 1024 * 1024;
const maxDirectoryEntries = 100_000;
/** A file's extents read, at most: a kernel has a handful; a fragmented one hundreds. */
const maxExtents = 100_000;
/** Levels of a file's extent B+tree: 5 reach every block of the largest filesystem. */
const maxTreeDepth = 8;
const maxSymlinkBytes = 4096;
/** Bytes handed to a sink at once while copying out. */
const copyChunk = 1024 * 1024;
/** Directory data lives below this byte offset of the directory (XFS_DIR2_LEAF_OFFSET); leaf and free blocks above. */
const dirLeafOffset = 32 * 1024 ** 3;

interface Inode {
  mode: number;
  /** XFS_DINODE_FMT_*: 1 local (inline), 2 extents, 3 btree. */
  format: number;
  size: number;
  nextents: number;
  /** The data fork: inline data, an extent list or a B+tree root. */
  fork: Buffer;
}

interface Extent {
  /** In filesystem blocks, from the file's start. */
  fileBlock: number;
  /** Byte offset in the image. */
  at: number;
  blocks: number;
  /** Allocated but never written: reads as zeros. */
  unwritten: boolean;
}

/**
 * An xfs filesystem at `offset` of the image, parsed here from its on-disk format (v4 and v5):
 * the superblock, inodes, short-form and block/data directories, extent lists and extent B+trees,
 * inline and remote symlinks. Read-only through `read`, every structure checked against the
 * filesystem's bounds, so a damaged one gives an ImageReadError, never a read outside it.
 */
export class XfsFilesystem implements FileTree {
  private readonly blockSize: number;
  private readonly agBlocks: number;
  private readonly agCount: number;
  private readonly agBlockLog: number;
  private readonly inodeSize: number;
  private readonly inodesPerBlockLog: number;
  private readonly dirBlockSize: number;
  private readonly v5: boolean;
  private readonly hasFtype: boolean;
  private readonly bigExtentCounts: boolean;
  private readonly root: FsEntry;
  private readonly listings = new Map<number, FsEntry[]>();
  private readonly inodes = new Map<number, Inode>();

  constructor(
    private readonly read: ReadAt,
    private readonly offset: number,
    size: number,
    private readonly label: string,
  ) {
    const sb = read(offset, 512);
    if (sb.length < 512 || sb.toString('latin1', 0, 4) !== 'XFSB') throw this.damaged('no xfs superblock');
    this.blockSize = sb.readUInt32BE(4);
    const blockLog = sb[120]!;
    this.agBlocks = sb.readUInt32BE(84);
    this.agCount = sb.readUInt32BE(88);
    this.inodeSize = sb.readUInt16BE(104);
    this.inodesPerBlockLog = sb[123]!;
    this.agBlockLog = sb[124]!;
    this.dirBlockSize = this.blockSize * 2 ** sb[192]!;
    this.v5 = (sb.readUInt16BE(100) & 0xf) === 5;
    const incompat = this.v5 ? sb.readUInt32BE(216) : 0;
    // v5: the ftype incompat bit; v4: XFS_SB_VERSION2_FTYPE in features2.
    this.hasFtype = this.v5 ? (incompat & 0x1) !== 0 : (sb.readUInt32BE(200) & 0x200) !== 0;
    this.bigExtentCounts = (incompat & 0x20) !== 0;
    const sound =
      this.blockSize === 2 ** blockLog &&
      blockLog >= 9 &&
      blockLog <= 16 &&
      this.inodeSize >= 256 &&
      this.inodeSize <= 2048 &&
      this.inodeSize === 2 ** sb[122]! &&
      this.blockSize === this.inodeSize * 2 ** this.inodesPerBlockLog &&
      this.agCount > 0 &&
      this.agBlocks > 0 &&
      this.agBlocks <= 2 ** this.agBlockLog &&
      this.agBlocks > 2 ** (this.agBlockLog - 1) &&
      this.dirBlockSize <= 65536;
    if (!sound) throw this.damaged('its superblock is inconsistent (block, inode or allocation group sizes)');
    const claimed = Number(sb.readBigUInt64BE(8)) * this.blockSize;
    if (claimed > size) throw this.damaged(`it claims ${claimed} bytes, more than the ${size} of its partition`);
    const rootIno = this.inodeNumber(sb.readBigUInt64BE(56));
    this.root = { ino: rootIno, name: '', kind: 'directory', size: 0 };
    if (this.kindOf(this.inode(rootIno).mode) !== 'directory') throw this.damaged('its root inode is not a directory');
  }

  list(dir: FsEntry, path: string): FsEntry[] {
    const known = this.listings.get(dir.ino);
    if (known) return known;
    const inode = this.inode(dir.ino);
    if (this.kindOf(inode.mode) !== 'directory') throw this.damaged(`${path} is not a directory`);
    const named = inode.format === 1 ? this.shortFormEntries(inode, path) : this.blockEntries(inode, path);
    const entries = named.map(({ name, ino }) => {
      const child = this.inode(ino);
      return { ino, name, kind: this.kindOf(child.mode), size: child.size };
    });
    this.listings.set(dir.ino, entries);
    return entries;
  }

  resolve(path: string, followLast = true): Resolved | null {
    return resolvePath(
      this.root,
      path,
      followLast,
      (dir, dirPath) => this.list(dir, dirPath),
      (link, linkPath) => this.readLink(link, linkPath),
    );
  }

  readFile(path: string, maxBytes: number): Buffer | null {
    const found = this.resolve(path);
    if (!found) return null;
    const file = requireFile(found, maxBytes);
    const chunks: Buffer[] = [];
    this.stream(file, found.path, (chunk) => chunks.push(chunk));
    return Buffer.concat(chunks);
  }

  allocatedBytes(entries: readonly FsEntry[]): number[] {
    return entries.map((entry) => this.extents(this.inode(entry.ino), entry.name).reduce((sum, e) => sum + e.blocks * this.blockSize, 0));
  }

  copyOut(files: readonly CopiedFile[]): Promise<void> {
    for (const { entry, what, sink } of files) this.stream(entry, what, sink);
    return Promise.resolve();
  }

  /** A regular file's bytes, in order, holes and unwritten extents as zeros, a chunk at a time. */
  private stream(file: FsEntry, what: string, sink: (chunk: Buffer) => void): void {
    const inode = this.inode(file.ino);
    if (inode.format !== 2 && inode.format !== 3) throw this.damaged(`${what} has no extents to read (format ${inode.format})`);
    let at = 0;
    for (const extent of this.extents(inode, what)) {
      const start = extent.fileBlock * this.blockSize;
      if (start >= inode.size) break;
      if (start < at) throw this.damaged(`${what} has overlapping extents`);
      for (; at < start; at += Math.min(copyChunk, start - at)) sink(Buffer.alloc(Math.min(copyChunk, start - at)));
      const end = Math.min(inode.size, start + extent.blocks * this.blockSize);
      for (; at < end;) {
        const length = Math.min(copyChunk, end - at);
        const chunk = extent.unwritten ? Buffer.alloc(length) : this.readExactly(extent.at + (at - start), length, what);
        sink(chunk);
        at += length;
      }
    }
    for (; at < inode.size; at += Math.min(copyChunk, inode.size - at)) sink(Buffer.alloc(Math.min(copyChunk, inode.size - at)));
  }

  private readLink(link: FsEntry, path: string): string {
    const inode = this.inode(link.ino);
    if (inode.size > maxSymlinkBytes) throw new ImageReadError(`the symlink ${path} is ${inode.size} bytes long`);
    if (inode.format === 1) {
      if (inode.size > inode.fork.length) throw this.damaged(`the symlink ${path} claims more than its inode holds`);
      return inode.fork.toString('utf8', 0, inode.size);
    }
    // Remote symlink: each block carries a 56-byte header on v5.
    const header = this.v5 ? 56 : 0;
    const parts: Buffer[] = [];
    for (const extent of this.extents(inode, path)) {
      for (let i = 0; i < extent.blocks; i++) {
        const block = this.readExactly(extent.at + i * this.blockSize, this.blockSize, path);
        if (this.v5 && block.toString('latin1', 0, 4) !== 'XSLM') throw this.damaged(`the symlink ${path} has a bad block`);
        parts.push(block.subarray(header));
      }
    }
    const target = Buffer.concat(parts);
    if (target.length < inode.size) throw this.damaged(`the symlink ${path} is shorter than it claims`);
    return target.toString('utf8', 0, inode.size);
  }

  private inode(ino: number): Inode {
    const known = this.inodes.get(ino);
    if (known) return known;
    const perAgLog = this.agBlockLog + this.inodesPerBlockLog;
    const ag = Math.floor(ino / 2 ** perAgLog);
    const agBlock = Math.floor((ino % 2 ** perAgLog) / 2 ** this.inodesPerBlockLog);
    const index = ino % 2 ** this.inodesPerBlockLog;
    if (ag >= this.agCount || agBlock >= this.agBlocks) throw this.damaged(`inode ${ino} lies outside the filesystem`);
    const raw = this.readExactly(this.blockByte(ag, agBlock) + index * this.inodeSize, this.inodeSize, `inode ${ino}`);
    if (raw.readUInt16BE(0) !== 0x494e) throw this.damaged(`inode ${ino} has no inode magic`);
    const core = raw[4]! >= 3 ? 176 : 100;
    const forkOffset = raw[82]!;
    const forkEnd = forkOffset > 0 ? core + forkOffset * 8 : this.inodeSize;
    if (forkEnd > this.inodeSize) throw this.damaged(`inode ${ino} has an attribute fork past its end`);
    const size = Number(raw.readBigUInt64BE(56));
    const nextents = this.bigExtentCounts && raw[4]! >= 3 ? Number(raw.readBigUInt64BE(24)) : raw.readUInt32BE(76);
    if (!Number.isSafeInteger(size) || size < 0) throw this.damaged(`inode ${ino} claims a size of ${size}`);
    const inode = { mode: raw.readUInt16BE(2), format: raw[5]!, size, nextents, fork: raw.subarray(core, forkEnd) };
    this.inodes.set(ino, inode);
    return inode;
  }

  /** The extents of a file or directory, in file order. */
  private extents(inode: Inode, what: string): Extent[] {
    const extents: Extent[] = [];
    if (inode.format === 2) {
      if (inode.nextents * 16 > inode.fork.length) throw this.damaged(`${what} claims more extents than its inode holds`);
      this.pushRecords(inode.fork, 0, inode.nextents, extents, what);
    } else if (inode.format === 3) {
      const level = inode.fork.readUInt16BE(0);
      const records = inode.fork.readUInt16BE(2);
      const maxRecords = Math.floor((inode.fork.length - 4) / 16);
      if (level === 0 || records > maxRecords) throw this.damaged(`${what} has a damaged extent tree root`);
      for (let i = 0; i < records; i++) this.walkTree(inode.fork.readBigUInt64BE(4 + maxRecords * 8 + i * 8), level - 1, extents, what, 1);
    } else {
      throw this.damaged(`${what} has no extents (format ${inode.format})`);
    }
    extents.sort((a, b) => a.fileBlock - b.fileBlock);
    return extents;
  }

  private walkTree(block: bigint, level: number, extents: Extent[], what: string, depth: number): void {
    if (depth > maxTreeDepth) throw this.damaged(`${what}'s extent tree is deeper than ${maxTreeDepth} levels`);
    const raw = this.readExactly(this.fsBlockByte(block, 1, what), this.blockSize, what);
    const header = this.v5 ? 72 : 24;
    if (raw.toString('latin1', 0, 4) !== (this.v5 ? 'BMA3' : 'BMAP') || raw.readUInt16BE(4) !== level)
      throw this.damaged(`${what} has a damaged extent tree block`);
    const records = raw.readUInt16BE(6);
    const maxRecords = Math.floor((this.blockSize - header) / 16);
    if (records > maxRecords) throw this.damaged(`${what} has a damaged extent tree block`);
    if (level === 0) return this.pushRecords(raw, header, records, extents, what);
    for (let i = 0; i < records; i++)
      this.walkTree(raw.readBigUInt64BE(header + maxRecords * 8 + i * 8), level - 1, extents, what, depth + 1);
  }

  /** Unpacks 128-bit extent records: flag (1 bit), file offset (54), start block (52), length (21). */
  private pushRecords(raw: Buffer, at: number, count: number, extents: Extent[], what: string): void {
    if (extents.length + count > maxExtents) throw new ImageReadError(`${what} has more than ${maxExtents} extents`);
    for (let i = 0; i < count; i++) {
      const high = raw.readBigUInt64BE(at + i * 16);
      const low = raw.readBigUInt64BE(at + i * 16 + 8);
      const blocks = Number(low & 0x1fffffn);
      const start = ((high & 0x1ffn) << 43n) | (low >> 21n);
      extents.push({
        fileBlock: Number((high >> 9n) & ((1n << 54n) - 1n)),
        at: this.fsBlockByte(start, blocks, what),
        blocks,
        unwritten: high >> 63n === 1n,
      });
    }
  }

  /** Entries of a directory held inline in its inode. */
  private shortFormEntries(inode: Inode, path: string): { name: string; ino: number }[] {
    const data = inode.fork.subarray(0, Math.min(inode.size, inode.fork.length));
    const count = data[0] ?? 0;
    const wide = (data[1] ?? 0) > 0;
    const inoBytes = wide ? 8 : 4;
    const entries: { name: string; ino: number }[] = [];
    let at = 2 + inoBytes;
    for (let i = 0; i < count; i++) {
      const nameLength = data[at];
      const end = at + 3 + (nameLength ?? 0) + (this.hasFtype ? 1 : 0) + inoBytes;
      if (nameLength === undefined || nameLength === 0 || end > data.length) throw this.damaged(`the directory ${path} is damaged`);
      const name = data.toString('utf8', at + 3, at + 3 + nameLength);
      const inoAt = end - inoBytes;
      const ino = wide ? this.inodeNumber(data.readBigUInt64BE(inoAt)) : data.readUInt32BE(inoAt);
      entries.push({ name, ino });
      at = end;
    }
    return entries;
  }

  /** Entries of a directory kept in blocks (block, leaf or node form): only its data blocks hold names. */
  private blockEntries(inode: Inode, path: string): { name: string; ino: number }[] {
    const fsBlocksPerDirBlock = this.dirBlockSize / this.blockSize;
    const byFileBlock = new Map<number, number>();
    let bytes = 0;
    for (const extent of this.extents(inode, `the directory ${path}`)) {
      for (let i = 0; i < extent.blocks && (extent.fileBlock + i) * this.blockSize < dirLeafOffset; i++) {
        if ((bytes += this.blockSize) > maxDirectoryBytes)
          throw new ImageReadError(`the directory ${path} is larger than the ${maxDirectoryBytes} bytes nbdmux reads`);
        byFileBlock.set(extent.fileBlock + i, extent.at + i * this.blockSize);
      }
    }
    const entries: { name: string; ino: number }[] = [];
    for (const first of [...byFileBlock.keys()].filter((block) => block % fsBlocksPerDirBlock === 0).sort((a, b) => a - b)) {
      const parts: Buffer[] = [];
      for (let i = 0; i < fsBlocksPerDirBlock; i++) {
        const at = byFileBlock.get(first + i);
        if (at === undefined) throw this.damaged(`the directory ${path} has a directory block with a hole`);
        parts.push(this.readExactly(at, this.blockSize, `the directory ${path}`));
      }
      this.dataBlockEntries(Buffer.concat(parts), path, entries);
    }
    return entries;
  }

  private dataBlockEntries(block: Buffer, path: string, entries: { name: string; ino: number }[]): void {
    const magic = block.toString('latin1', 0, 4);
    const blockForm = magic === 'XDB3' || magic === 'XD2B';
    if (!blockForm && magic !== 'XDD3' && magic !== 'XD2D') throw this.damaged(`the directory ${path} has a block of unknown kind`);
    let end = block.length;
    if (blockForm) {
      // The block form ends with its leaf entries (8 bytes each) and a tail of two counts.
      end = block.length - 8 - block.readUInt32BE(block.length - 8) * 8;
    }
    let at = this.v5 ? 64 : 16;
    if (end < at) throw this.damaged(`the directory ${path} has a damaged block`);
    while (at + 8 <= end) {
      if (block.readUInt16BE(at) === 0xffff) {
        const length = block.readUInt16BE(at + 2);
        if (length < 8 || length % 8 !== 0) throw this.damaged(`the directory ${path} has a damaged free entry`);
        at += length;
        continue;
      }
      const nameLength = block[at + 8]!;
      const length = Math.ceil((8 + 1 + nameLength + (this.hasFtype ? 1 : 0) + 2) / 8) * 8;
      if (nameLength === 0 || at + length > end) throw this.damaged(`the directory ${path} has a damaged entry`);
      const name = block.toString('utf8', at + 9, at + 9 + nameLength);
      if (name !== '.' && name !== '..') {
        if (entries.length >= maxDirectoryEntries)
          throw new ImageReadError(`the directory ${path} has more than ${maxDirectoryEntries} entries`);
        entries.push({ name, ino: this.inodeNumber(block.readBigUInt64BE(at)) });
      }
      at += length;
    }
  }

  private kindOf(mode: number): FsEntry['kind'] {
    const type = mode & 0o170000;
    if (type === 0o040000) return 'directory';
    if (type === 0o100000) return 'file';
    if (type === 0o120000) return 'symlink';
    return 'other';
  }

  private inodeNumber(value: bigint): number {
    const ino = Number(value);
    if (!Number.isSafeInteger(ino)) throw this.damaged(`an inode number (${value}) is out of range`);
    return ino;
  }

  /** The image byte of `count` blocks from filesystem block `block` (allocation group, block in it), all inside one group. */
  private fsBlockByte(block: bigint, count: number, what: string): number {
    const ag = Number(block >> BigInt(this.agBlockLog));
    const agBlock = Number(block & ((1n << BigInt(this.agBlockLog)) - 1n));
    if (ag >= this.agCount || agBlock + count > this.agBlocks) throw this.damaged(`${what} points outside the filesystem`);
    return this.blockByte(ag, agBlock);
  }

  private blockByte(ag: number, agBlock: number): number {
    return this.offset + (ag * this.agBlocks + agBlock) * this.blockSize;
  }

  private readExactly(at: number, length: number, what: string): Buffer {
    const bytes = this.read(at, length);
    if (bytes.length < length) throw this.damaged(`${what} lies past the image's end`);
    return bytes;
  }

  private damaged(why: string): ImageReadError {
    return new ImageReadError(`${this.label} is damaged: ${why}`);
  }
}
