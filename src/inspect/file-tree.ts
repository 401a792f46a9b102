/** Why an image cannot be read as nbdmux wants: said to the operator as the `reason`. */
export class ImageReadError extends Error {}

export interface FsEntry {
  ino: number;
  name: string;
  kind: 'directory' | 'file' | 'symlink' | 'other';
  /** Bytes: a file's length, a symlink's target length. */
  size: number;
}

/** A file `copyOut` streams out: `what` names it in reasons, `sink` takes its bytes in order. */
export interface CopiedFile {
  entry: FsEntry;
  what: string;
  sink: (chunk: Buffer) => void;
}

export interface Resolved {
  entry: FsEntry;
  /** The path with every symlink resolved, inside the filesystem. */
  path: string;
}

/**
 * A filesystem inside the image, read without mounting it: ext2/3/4 through debugfs, xfs and
 * btrfs parsed here. Paths never lead out of it: symlinks are resolved inside it.
 */
export interface FileTree {
  /** A directory's entries (without `.` and `..`). */
  list(dir: FsEntry, path: string): FsEntry[];
  /** `path` with every symlink resolved (the last unless `followLast` is false); null when a component does not exist. */
  resolve(path: string, followLast?: boolean): Resolved | null;
  /** A regular file's bytes, refused beyond `maxBytes`; null when the path leads nowhere. */
  readFile(path: string, maxBytes: number): Buffer | null;
  /** The bytes each file's blocks take (holes not counted): what a sparse copy can need at most. */
  allocatedBytes(entries: readonly FsEntry[]): number[];
  /** Streams regular files' bytes, each to its sink, never a file whole in memory. */
  copyOut(files: readonly CopiedFile[]): Promise<void>;
}

/** Symlinks followed while resolving one path, as Linux's MAXSYMLINKS. */
const maxSymlinkHops = 40;

/**
 * Walks `path` from `root` through `list`, following symlinks through `readLink` (an absolute
 * target starts again at `root`, `..` at the root stays there), so no path leaves the tree.
 */
export function resolvePath(
  root: FsEntry,
  path: string,
  followLast: boolean,
  list: (dir: FsEntry, path: string) => FsEntry[],
  readLink: (link: FsEntry, path: string) => string,
): Resolved | null {
  let stack: FsEntry[] = [root];
  const pending = path.split('/');
  let hops = 0;
  while (pending.length > 0) {
    const component = pending.shift()!;
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (stack.length > 1) stack.pop();
      continue;
    }
    const dir = stack.at(-1)!;
    if (dir.kind !== 'directory') return null;
    const entry = list(dir, pathOf(stack)).find((e) => e.name === component);
    if (!entry) return null;
    if (entry.kind === 'symlink' && (pending.length > 0 || followLast)) {
      if (++hops > maxSymlinkHops)
        throw new ImageReadError(`resolving ${path} went through more than ${maxSymlinkHops} symlinks: a symlink loop`);
      const target = readLink(entry, pathOf([...stack, entry]));
      if (target.startsWith('/')) stack = [root];
      pending.unshift(...target.split('/'));
      continue;
    }
    stack.push(entry);
  }
  return { entry: stack.at(-1)!, path: pathOf(stack) };
}

/** The entry of a regular file of at most `maxBytes`, or a reason thrown. */
export function requireFile(found: Resolved, maxBytes: number): FsEntry {
  if (found.entry.kind !== 'file') throw new ImageReadError(`${found.path} is not a regular file`);
  if (found.entry.size > maxBytes)
    throw new ImageReadError(`${found.path} is ${found.entry.size} bytes, more than the ${maxBytes} nbdmux accepts`);
  return found.entry;
}

function pathOf(stack: FsEntry[]): string {
  return stack.length === 1 ? '/' : stack.map((e) => e.name).join('/');
}
