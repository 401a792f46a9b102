import { decompressExtent } from './btrfs-extents.js';
import { BtrfsTrees, type Item, type Key } from './btrfs-tree.js';
import { ImageReadError, requireFile, resolvePath, type CopiedFile, type FileTree, type FsEntry, type Resolved } from './file-tree.js';
import type { ReadAt } from './filesystems.js';

const inodeItem = 1;
const dirItem = 84;
const dirIndex = 96;
const extentData = 108;
const rootItem = 132;
const rootRef = 156;
/** The top-level subvolume (BTRFS_FS_TREE_OBJECTID), and the root tree's directory holding "default". */
export const topLevel = 5;
const rootTreeDir = 6n;
const maxU64 = 2n ** 64n - 1n;
const maxSymlinkBytes = 4096;
const maxSubvolumes = 256;
/** Bytes handed to a sink at once while copying out. */
const copyChunk = 1024 * 1024;

interface Tree {
  bytenr: number;
  level: number;
  rootDir: number;
}

interface Extent {
  fileOffset: number;
  /** How many bytes of the file it gives. */
  length: number;
  bytes: (from: number, length: number) => Buffer;
}

export interface Subvolume {
  id: number;
  /** From the top level, as `subvol=` names it: "root", "@/boot". */
  path: string;
}

/**
 * A btrfs filesystem of the image, read through its trees (btrfs-tree.ts): subvolumes are
 * listed and opened as file trees, each from its own root directory.
 */
export class BtrfsVolume {
  readonly trees: BtrfsTrees;
  private readonly roots = new Map<number, Tree>();

  constructor(read: ReadAt, offset: number, size: number, label: string) {
    this.trees = new BtrfsTrees(read, offset, size, label);
  }

  /** The subvolume a mount without `subvol=` gets: `btrfs subvolume set-default`, else the top level. */
  defaultSubvolume(): number {
    const items = this.trees.items(this.trees.rootTree, key(rootTreeDir, dirItem, 0n), key(rootTreeDir, dirItem, maxU64), 'the root tree');
    for (const item of items) {
      const entry = dirItemOf(item.data, 0);
      if (entry?.name === 'default') return this.trees.number(entry.location.objectid, 'the default subvolume');
    }
    return topLevel;
  }

  /** Every subvolume under the top level, with its path, as `btrfs subvolume list` shows them. */
  subvolumes(): Subvolume[] {
    const refs = this.trees
      .items(this.trees.rootTree, key(0n, 0, 0n), key(maxU64, 255, maxU64), 'the root tree')
      .filter((item) => item.key.type === rootRef && item.data.length >= 18)
      .slice(0, maxSubvolumes);
    const parents = new Map<number, { parent: number; name: string; inParentRoot: boolean }>();
    for (const ref of refs) {
      const child = this.trees.number(ref.key.offset, 'a subvolume id');
      const nameLength = ref.data.readUInt16LE(16);
      const dirid = ref.data.readBigUInt64LE(0);
      const parent = this.trees.number(ref.key.objectid, 'a subvolume id');
      parents.set(child, { parent, name: ref.data.toString('utf8', 18, 18 + nameLength), inParentRoot: dirid === 256n });
    }
    const pathOf = (id: number, depth: number): string | null => {
      if (id === topLevel) return '';
      const ref = parents.get(id);
      // A subvolume inside a plain directory of its parent is reached by no path this list builds: left out.
      if (!ref || !ref.inParentRoot || depth > maxSubvolumes) return null;
      const above = pathOf(ref.parent, depth + 1);
      return above === null ? null : above === '' ? ref.name : `${above}/${ref.name}`;
    };
    return [...parents.keys()].flatMap((id) => {
      const path = pathOf(id, 0);
      return path === null ? [] : [{ id, path }];
    });
  }

  /** The file tree of subvolume `id`, named in reasons by `label`. */
  open(id: number, label: string): BtrfsFilesystem {
    return new BtrfsFilesystem(this, id, label);
  }

  tree(id: number): Tree {
    const known = this.roots.get(id);
    if (known) return known;
    const items = this.trees.items(this.trees.rootTree, key(BigInt(id), rootItem, 0n), key(BigInt(id), rootItem, maxU64), 'the root tree');
    const item = items.at(-1);
    if (!item || item.data.length < 239) throw this.trees.damaged(`subvolume ${id} has no root item`);
    const tree = {
      bytenr: this.trees.number(item.data.readBigUInt64LE(176), `subvolume ${id}'s root`),
      level: item.data[238]!,
      rootDir: this.trees.number(item.data.readBigUInt64LE(168), `subvolume ${id}'s root directory`),
    };
    this.roots.set(id, tree);
    return tree;
  }
}

/**
 * One subvolume of a btrfs as a file tree: its directories (crossing into subvolumes below it as
 * the kernel shows them), inodes and file extents: inline, regular, preallocated, holes, and
 * zlib- or zstd-compressed. Symlinks are resolved inside it.
 */
export class BtrfsFilesystem implements FileTree {
  /** FsEntry.ino is an index here: a btrfs inode is only unique within its subvolume. */
  private readonly inodes: { tree: number; ino: number }[] = [];
  private readonly root: FsEntry;
  private readonly listings = new Map<number, FsEntry[]>();

  constructor(
    private readonly volume: BtrfsVolume,
    readonly subvolume: number,
    private readonly label: string,
  ) {
    const tree = volume.tree(subvolume);
    this.root = { ino: this.entryId(subvolume, tree.rootDir), name: '', kind: 'directory', size: 0 };
  }

  list(dir: FsEntry, path: string): FsEntry[] {
    const known = this.listings.get(dir.ino);
    if (known) return known;
    const { tree, ino } = this.inodes[dir.ino]!;
    const items = this.items(tree, key(BigInt(ino), dirIndex, 0n), key(BigInt(ino), dirIndex, maxU64), path);
    const entries = items.flatMap((item): FsEntry[] => {
      const entry = dirItemOf(item.data, 0);
      if (!entry) throw this.volume.trees.damaged(`the directory ${path} has a damaged entry`);
      if (entry.location.type === rootItem) {
        const child = this.volume.trees.number(entry.location.objectid, 'a subvolume id');
        return [{ ino: this.entryId(child, this.volume.tree(child).rootDir), name: entry.name, kind: 'directory', size: 0 }];
      }
      if (entry.location.type !== inodeItem) return [];
      const childIno = this.volume.trees.number(entry.location.objectid, 'an inode number');
      const kind = entry.type === 1 ? 'file' : entry.type === 2 ? 'directory' : entry.type === 7 ? 'symlink' : 'other';
      return [{ ino: this.entryId(tree, childIno), name: entry.name, kind, size: this.inodeSize(tree, childIno, `${path}/${entry.name}`) }];
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
      (link, linkPath) => {
        if (link.size > maxSymlinkBytes) throw new ImageReadError(`the symlink ${linkPath} is ${link.size} bytes long`);
        return this.contents(link, linkPath).toString('utf8');
      },
    );
  }

  readFile(path: string, maxBytes: number): Buffer | null {
    const found = this.resolve(path);
    if (!found) return null;
    return this.contents(requireFile(found, maxBytes), found.path);
  }

  allocatedBytes(entries: readonly FsEntry[]): number[] {
    return entries.map((entry) => this.extents(entry, entry.name).reduce((sum, extent) => sum + extent.length, 0));
  }

  copyOut(files: readonly CopiedFile[]): Promise<void> {
    for (const { entry, what, sink } of files) this.stream(entry, what, sink);
    return Promise.resolve();
  }

  private contents(entry: FsEntry, what: string): Buffer {
    const chunks: Buffer[] = [];
    this.stream(entry, what, (chunk) => chunks.push(chunk));
    return Buffer.concat(chunks);
  }

  /** A file's bytes in order, holes as zeros, a chunk at a time. */
  private stream(entry: FsEntry, what: string, sink: (chunk: Buffer) => void): void {
    let at = 0;
    const zeros = (upTo: number) => {
      for (; at < upTo; at += Math.min(copyChunk, upTo - at)) sink(Buffer.alloc(Math.min(copyChunk, upTo - at)));
    };
    for (const extent of this.extents(entry, what)) {
      if (extent.fileOffset >= entry.size) break;
      if (extent.fileOffset < at) throw this.volume.trees.damaged(`${what} has overlapping extents`);
      zeros(extent.fileOffset);
      const end = Math.min(entry.size, extent.fileOffset + extent.length);
      for (; at < end;) {
        const length = Math.min(copyChunk, end - at);
        sink(extent.bytes(at - extent.fileOffset, length));
        at += length;
      }
    }
    zeros(entry.size);
  }

  /** A file's extents in file order, each able to give any range of its bytes. */
  private extents(entry: FsEntry, what: string): Extent[] {
    const { tree, ino } = this.inodes[entry.ino]!;
    const trees = this.volume.trees;
    return this.items(tree, key(BigInt(ino), extentData, 0n), key(BigInt(ino), extentData, maxU64), what).flatMap((item): Extent[] => {
      const data = item.data;
      if (data.length < 21) throw trees.damaged(`${what} has a damaged extent item`);
      const fileOffset = trees.number(item.key.offset, `${what}'s extent offset`);
      const ramBytes = trees.number(data.readBigUInt64LE(8), `${what}'s extent size`);
      const compression = data[16]!;
      if (data[17] !== 0 || data.readUInt16LE(18) !== 0) throw new ImageReadError(`${what} is encrypted or encoded: nbdmux cannot read it`);
      const type = data[20]!;
      if (type === 0) {
        const inline = data.subarray(21);
        const plain = compression === 0 ? inline : decompressExtent(compression, inline, ramBytes, trees.sectorSize, what);
        return [{ fileOffset, length: plain.length, bytes: (from, length) => plain.subarray(from, from + length) }];
      }
      if (data.length < 53) throw trees.damaged(`${what} has a damaged extent item`);
      const diskBytenr = trees.number(data.readBigUInt64LE(21), `${what}'s extent address`);
      const diskBytes = trees.number(data.readBigUInt64LE(29), `${what}'s extent length`);
      const offset = trees.number(data.readBigUInt64LE(37), `${what}'s extent offset`);
      const length = trees.number(data.readBigUInt64LE(45), `${what}'s extent length`);
      // A hole, or preallocated and never written: zeros, which stream() writes for what no extent covers.
      if (diskBytenr === 0 || type === 2) return [];
      if (compression === 0) {
        if (offset + length > diskBytes) throw trees.damaged(`${what} has an extent reaching past its disk extent`);
        return [{ fileOffset, length, bytes: (from, size) => trees.readLogical(diskBytenr + offset + from, size, what) }];
      }
      let plain: Buffer | null = null;
      const unpacked = () =>
        (plain ??= decompressExtent(compression, trees.readLogical(diskBytenr, diskBytes, what), ramBytes, trees.sectorSize, what));
      if (offset + length > ramBytes) throw trees.damaged(`${what} has an extent reaching past its compressed extent`);
      return [{ fileOffset, length, bytes: (from, size) => unpacked().subarray(offset + from, offset + from + size) }];
    });
  }

  private inodeSize(tree: number, ino: number, what: string): number {
    const item = this.item(tree, key(BigInt(ino), inodeItem, 0n), what);
    if (!item || item.data.length < 24) throw this.volume.trees.damaged(`${what} has no inode`);
    return this.volume.trees.number(item.data.readBigUInt64LE(16), `${what}'s size`);
  }

  private items(tree: number, min: Key, max: Key, what: string): Item[] {
    return this.volume.trees.items(this.volume.tree(tree), min, max, `${this.label} (${what})`);
  }

  private item(tree: number, at: Key, what: string): Item | null {
    return this.volume.trees.item(this.volume.tree(tree), at, `${this.label} (${what})`);
  }

  private entryId(tree: number, ino: number): number {
    this.inodes.push({ tree, ino });
    return this.inodes.length - 1;
  }
}

function key(objectid: bigint, type: number, offset: bigint): Key {
  return { objectid, type, offset };
}

/** A btrfs_dir_item at `at`: its location key, type and name; null when cut short. */
function dirItemOf(data: Buffer, at: number): { location: Key; type: number; name: string } | null {
  if (data.length < at + 30) return null;
  const nameLength = data.readUInt16LE(at + 27);
  if (data.length < at + 30 + nameLength) return null;
  return {
    location: { objectid: data.readBigUInt64LE(at), type: data[at + 8]!, offset: data.readBigUInt64LE(at + 9) },
    type: data[at + 29]!,
    name: data.toString('utf8', at + 30, at + 30 + nameLength),
  };
}
