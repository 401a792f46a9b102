import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

/** Why an image cannot be read as nbdmux wants: said to the operator as the `reason`. */
export class ImageReadError extends Error {}

export interface ExtEntry {
  ino: number;
  name: string;
  kind: 'directory' | 'file' | 'symlink' | 'other';
  /** Bytes: a file's length, a symlink's target length. */
  size: number;
}

export interface Resolved {
  entry: ExtEntry;
  /** The path with every symlink resolved, inside the filesystem. */
  path: string;
}

/** Symlinks followed while resolving one path, as Linux's MAXSYMLINKS. */
const maxSymlinkHops = 40;
const maxListingBytes = 4 * 1024 * 1024;
const maxSymlinkBytes = 4096;
const callTimeoutMs = 5000;
/** Address space of one debugfs: a hostile filesystem cannot make it eat the machine. */
const debugfsAddressSpace = 1024 * 1024 * 1024;
const root: ExtEntry = { ino: 2, name: '', kind: 'directory', size: 0 };

/**
 * An ext2/3/4 filesystem inside the image held open as `imageFd`, read with e2fsprogs'
 * debugfs (read-only, catastrophic mode: no bitmaps read, never a write). Every file is
 * addressed by inode number after a walk done here, symlinks included: a path can never lead
 * out of this filesystem, and `..` at its root stays there. Each debugfs run is bounded in
 * time, output and memory.
 */
export class ExtFilesystem {
  private readonly listings = new Map<number, ExtEntry[]>();
  private readonly device: string;

  constructor(
    private readonly imageFd: number,
    offset: number,
  ) {
    // debugfs inherits the descriptor and opens its own /proc/self/fd/N at the byte offset.
    this.device = `/proc/self/fd/${imageFd}?offset=${offset}`;
  }

  /** Runs one debugfs request; its stdout. */
  private run(args: string[], maxBytes: number, what: string): Buffer {
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe'];
    while (stdio.length < this.imageFd) stdio.push('ignore');
    stdio[this.imageFd] = this.imageFd;
    const result = spawnSync('prlimit', [`--as=${debugfsAddressSpace}`, '--', 'debugfs', '-c', ...args, this.device], {
      stdio,
      timeout: callTimeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: maxBytes,
    });
    if (result.error) {
      const code = (result.error as NodeJS.ErrnoException).code;
      if (code === 'ENOBUFS') throw new ImageReadError(`${what} is larger than the ${maxBytes} bytes nbdmux reads`);
      if (code === 'ETIMEDOUT') throw new ImageReadError(`reading ${what} took longer than ${callTimeoutMs / 1000} s: the filesystem looks damaged`);
      throw new ImageReadError(`cannot run debugfs (install e2fsprogs): ${result.error.message}`);
    }
    const stderr = result.stderr.toString();
    // e.g. "debugfs: The ext2 superblock is corrupt while trying to open /proc/self/fd/3?offset=..."
    const openFailure = /^(?:debugfs: )?(.*) while trying to open /m.exec(stderr);
    if (result.status !== 0 || openFailure) {
      throw new ImageReadError(`the ext filesystem cannot be opened: ${openFailure?.[1] ?? lastLine(stderr)}`);
    }
    if (/File not found by ext2_lookup|Attempt to read block|Corrupt|Bad/i.test(stderr)) {
      throw new ImageReadError(`the ext filesystem is damaged where ${what} lies: ${lastLine(stderr)}`);
    }
    return result.stdout;
  }

  /** A directory's entries (without `.` and `..`), read once. */
  list(dir: ExtEntry, path: string): ExtEntry[] {
    const known = this.listings.get(dir.ino);
    if (known) return known;
    const entries: ExtEntry[] = [];
    for (const line of this.run(['-R', `ls -p <${dir.ino}>`], maxListingBytes, `the directory ${path}`).toString('utf8').split('\n')) {
      // /INODE/MODE/UID/GID/NAME/SIZE/
      const match = /^\/(\d+)\/(\d+)\/\d+\/\d+\/(.*)\/(\d*)\/$/.exec(line);
      if (!match || match[3] === '.' || match[3] === '..') continue;
      entries.push({ ino: Number(match[1]), name: match[3]!, kind: kindOf(match[2]!), size: Number(match[4] || 0) });
    }
    this.listings.set(dir.ino, entries);
    return entries;
  }

  /**
   * Resolves `path` (absolute, inside the filesystem) through every symlink, the last one
   * included unless `followLast` is false; null when some component does not exist.
   */
  resolve(path: string, followLast = true): Resolved | null {
    let stack: ExtEntry[] = [root];
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
      const entry = this.list(dir, pathOf(stack)).find((e) => e.name === component);
      if (!entry) return null;
      if (entry.kind === 'symlink' && (pending.length > 0 || followLast)) {
        if (++hops > maxSymlinkHops) throw new ImageReadError(`resolving ${path} went through more than ${maxSymlinkHops} symlinks: a symlink loop`);
        const target = this.readLink(entry, `${pathOf(stack)}/${component}`);
        if (target.startsWith('/')) stack = [root];
        pending.unshift(...target.split('/'));
        continue;
      }
      stack.push(entry);
    }
    return { entry: stack.at(-1)!, path: pathOf(stack) };
  }

  /** A regular file's bytes, refused beyond `maxBytes`; null when the path leads nowhere. */
  readFile(path: string, maxBytes: number): Buffer | null {
    const found = this.resolve(path);
    if (!found) return null;
    const file = this.requireFile(found, maxBytes);
    return this.run(['-R', `cat <${file.ino}>`], maxBytes + 1, path);
  }

  /** The entry of a regular file of at most `maxBytes`, or a reason thrown. */
  requireFile(found: Resolved, maxBytes: number): ExtEntry {
    if (found.entry.kind !== 'file') throw new ImageReadError(`${found.path} is not a regular file`);
    if (found.entry.size > maxBytes) throw new ImageReadError(`${found.path} is ${found.entry.size} bytes, more than the ${maxBytes} nbdmux accepts`);
    return found.entry;
  }

  /** Copies files out, each to its `out` path, in one debugfs run driven by a command file. */
  dump(files: { entry: ExtEntry; out: string }[], commandFile: string): void {
    writeFileSync(commandFile, files.map(({ entry, out }) => `dump <${entry.ino}> "${out}"\n`).join(''));
    this.run(['-f', commandFile], 1024 * 1024, `${files.length} files`);
  }

  private readLink(entry: ExtEntry, path: string): string {
    if (entry.size > maxSymlinkBytes) throw new ImageReadError(`the symlink ${path} is ${entry.size} bytes long`);
    const stat = this.run(['-R', `stat <${entry.ino}>`], 64 * 1024, `the symlink ${path}`).toString('utf8');
    const fast = /^Fast link dest: "(.*)"$/m.exec(stat);
    return fast ? fast[1]! : this.run(['-R', `cat <${entry.ino}>`], maxSymlinkBytes + 1, `the symlink ${path}`).toString('utf8');
  }
}

function kindOf(octalMode: string): ExtEntry['kind'] {
  const type = Number.parseInt(octalMode, 8) & 0o170000;
  if (type === 0o040000) return 'directory';
  if (type === 0o100000) return 'file';
  if (type === 0o120000) return 'symlink';
  return 'other';
}

function pathOf(stack: ExtEntry[]): string {
  return stack.length === 1 ? '/' : stack.map((e) => e.name).join('/');
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? '';
}
