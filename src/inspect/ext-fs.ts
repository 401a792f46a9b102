import { spawnSync } from 'node:child_process';
import { startStreamingTool } from '../bounded-child.js';
import { ImageReadError, requireFile, resolvePath, type CopiedFile, type FileTree, type FsEntry, type Resolved } from './file-tree.js';

const maxListingBytes = 4 * 1024 * 1024;
const maxSymlinkBytes = 4096;
const callTimeoutMs = 5000;
/** One run copying a kernel and its modules out, up to the largest sizes accepted, on a loaded machine. */
const copyTimeoutMs = 30_000;
/** Address space of one debugfs: a hostile filesystem cannot make it eat the machine. */
const debugfsAddressSpace = 1024 * 1024 * 1024;
const root: FsEntry = { ino: 2, name: '', kind: 'directory', size: 0 };

/**
 * An ext2/3/4 filesystem inside the image held open as `imageFd`, read with e2fsprogs'
 * debugfs (read-only, catastrophic mode: no bitmaps read, never a write). Every file is
 * addressed by inode number after a walk done here, symlinks included: a path can never lead
 * out of this filesystem, and `..` at its root stays there. Each debugfs run is bounded in
 * time, output and memory.
 */
export class ExtFilesystem implements FileTree {
  private readonly listings = new Map<number, FsEntry[]>();
  private readonly device: string;

  constructor(
    private readonly imageFd: number,
    offset: number,
    /** How reasons name it: the root's, or "the /boot partition 2's". */
    private readonly label = 'the ext filesystem',
  ) {
    // debugfs inherits the descriptor and opens its own /proc/self/fd/N at the byte offset.
    this.device = `/proc/self/fd/${imageFd}?offset=${offset}`;
  }

  /** Runs one debugfs request; its stdout. */
  private run(args: string[], maxBytes: number, what: string, input?: string): Buffer {
    const result = spawnSync('prlimit', this.debugfsArgs(args), {
      stdio: this.stdio(input === undefined ? 'ignore' : 'pipe'),
      input,
      timeout: callTimeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: maxBytes,
    });
    if (result.error) {
      const code = (result.error as NodeJS.ErrnoException).code;
      if (code === 'ENOBUFS') throw new ImageReadError(`${what} is larger than the ${maxBytes} bytes nbdmux reads`);
      if (code === 'ETIMEDOUT')
        throw new ImageReadError(`reading ${what} took longer than ${callTimeoutMs / 1000} s: the filesystem looks damaged`);
      throw new ImageReadError(`cannot run debugfs (install e2fsprogs): ${result.error.message}`);
    }
    checkDebugfs(result.status, result.stderr.toString(), what, this.label);
    return result.stdout;
  }

  private debugfsArgs(args: string[]): string[] {
    return [`--as=${debugfsAddressSpace}`, '--', 'debugfs', '-c', ...args, this.device];
  }

  /** The image's descriptor stays at its number in debugfs, which opens it as /proc/self/fd/N. */
  private stdio(stdin: 'ignore' | 'pipe'): ('ignore' | 'pipe' | number)[] {
    const stdio: ('ignore' | 'pipe' | number)[] = [stdin, 'pipe', 'pipe'];
    while (stdio.length < this.imageFd) stdio.push('ignore');
    stdio[this.imageFd] = this.imageFd;
    return stdio;
  }

  /** A directory's entries (without `.` and `..`), read once. */
  list(dir: FsEntry, path: string): FsEntry[] {
    const known = this.listings.get(dir.ino);
    if (known) return known;
    const entries: FsEntry[] = [];
    for (const line of this.run(['-R', `ls -p <${dir.ino}>`], maxListingBytes, `the directory ${path}`)
      .toString('utf8')
      .split('\n')) {
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
    return resolvePath(
      root,
      path,
      followLast,
      (dir, dirPath) => this.list(dir, dirPath),
      (link, linkPath) => this.readLink(link, linkPath),
    );
  }

  /** A regular file's bytes, refused beyond `maxBytes`; null when the path leads nowhere. */
  readFile(path: string, maxBytes: number): Buffer | null {
    const found = this.resolve(path);
    if (!found) return null;
    const file = requireFile(found, maxBytes);
    return this.run(['-R', `cat <${file.ino}>`], maxBytes + 1, path);
  }

  /**
   * The bytes each file's blocks take in the filesystem (holes are not counted), from its inode
   * in one debugfs run: what a sparse copy of it can need at most, if the inode tells the truth.
   */
  allocatedBytes(entries: readonly FsEntry[]): number[] {
    const text = this.run(
      ['-f', '-'],
      maxListingBytes,
      `the inodes of ${entries.length} files`,
      entries.map(({ ino }) => `stat <${ino}>\n`).join(''),
    ).toString('utf8');
    let at = 0;
    return entries.map(({ ino, name }) => {
      // Sections in the order asked; the first Blockcount after a section's head is its own (xattr values come later).
      const head = new RegExp(`^Inode: ${ino}\\s`, 'm').exec(text.slice(at));
      const blocks = head ? /Blockcount: (\d+)/.exec(text.slice(at + head.index)) : null;
      if (!head || !blocks) throw new ImageReadError(`the inode of ${name} (${ino}) cannot be read: the filesystem looks damaged`);
      at += head.index + blocks.index + blocks[0].length;
      // In 512-byte units, as stat(2)'s st_blocks.
      return Number(blocks[1]) * 512;
    });
  }

  /**
   * Streams regular files' bytes, each to its `sink`, as one debugfs run reads them (`cat`), a
   * pipe's worth at a time, never a file whole. debugfs echoes each command before its bytes
   * (flushed first), so each file's bytes are told apart by its echo and its size. Throws what a
   * sink throws, and when what comes is not each file whole.
   */
  async copyOut(files: readonly CopiedFile[]): Promise<void> {
    const what = `${files.length} files`;
    const debugfs = startStreamingTool('prlimit', this.debugfsArgs(['-f', '-']), { timeoutMs: copyTimeoutMs, stdio: this.stdio('pipe') });
    const { child } = debugfs;
    child.stdin!.on('error', () => {});
    child.stdin!.end(files.map(({ entry }) => `cat <${entry.ino}>\n`).join(''));
    const split = new CatSplitter(files);
    try {
      for await (const chunk of child.stdout! as AsyncIterable<Buffer>) split.push(chunk);
      const [status] = await debugfs.closed.catch((err: Error) => {
        throw new ImageReadError(`cannot run debugfs (install e2fsprogs): ${err.message}`);
      });
      if (debugfs.timedOut())
        throw new ImageReadError(
          `copying ${what} out of the image took longer than ${copyTimeoutMs / 1000} s: the filesystem looks damaged`,
        );
      checkDebugfs(status, debugfs.stderr(), what, this.label);
      split.end();
    } finally {
      debugfs.stop();
    }
  }

  private readLink(entry: FsEntry, path: string): string {
    if (entry.size > maxSymlinkBytes) throw new ImageReadError(`the symlink ${path} is ${entry.size} bytes long`);
    const stat = this.run(['-R', `stat <${entry.ino}>`], 64 * 1024, `the symlink ${path}`).toString('utf8');
    const fast = /^Fast link dest: "(.*)"$/m.exec(stat);
    return fast ? fast[1]! : this.run(['-R', `cat <${entry.ino}>`], maxSymlinkBytes + 1, `the symlink ${path}`).toString('utf8');
  }
}

function kindOf(octalMode: string): FsEntry['kind'] {
  const type = Number.parseInt(octalMode, 8) & 0o170000;
  if (type === 0o040000) return 'directory';
  if (type === 0o100000) return 'file';
  if (type === 0o120000) return 'symlink';
  return 'other';
}

/** Tells apart the files of one debugfs run of `cat` commands: each command's echo, then the file's bytes. */
class CatSplitter {
  private index = 0;
  /** Bytes of the current file still to come; null while its echo is. */
  private left: number | null = null;
  private echo = Buffer.alloc(0);

  constructor(private readonly files: readonly CopiedFile[]) {}

  push(chunk: Buffer): void {
    for (let at = 0; at < chunk.length;) {
      const file = this.files[this.index];
      if (!file) throw new ImageReadError('debugfs gave more bytes than the files asked for: the filesystem looks damaged');
      if (this.left === null) {
        const expected = Buffer.from(`debugfs: cat <${file.entry.ino}>\n`);
        const piece = chunk.subarray(at, at + expected.length - this.echo.length);
        this.echo = Buffer.concat([this.echo, piece]);
        at += piece.length;
        if (this.echo.length < expected.length) continue;
        if (!this.echo.equals(expected)) throw this.short(file);
        this.echo = Buffer.alloc(0);
        this.left = file.entry.size;
      }
      const piece = chunk.subarray(at, at + this.left);
      if (piece.length > 0) file.sink(piece);
      at += piece.length;
      this.left -= piece.length;
      if (this.left === 0) {
        this.index++;
        this.left = null;
      }
    }
  }

  /** The run ended: every file must have come whole. */
  end(): void {
    const file = this.files[this.index];
    if (file) throw this.short(file);
  }

  private short(file: CopiedFile): ImageReadError {
    return new ImageReadError(
      `debugfs could not copy ${file.what} (inode ${file.entry.ino}) out of the image whole: the filesystem looks damaged`,
    );
  }
}

/** Refuses what debugfs said on stderr about the image: it could not open it, or a read failed. */
function checkDebugfs(status: number | null, stderr: string, what: string, label: string): void {
  // e.g. "debugfs: The ext2 superblock is corrupt while trying to open /proc/self/fd/3?offset=..."
  const openFailure = /^(?:debugfs: )?(.*) while trying to open /m.exec(stderr);
  if (status !== 0 || openFailure) {
    throw new ImageReadError(`${label} cannot be opened: ${openFailure?.[1] ?? lastLine(stderr)}`);
  }
  if (/File not found by ext2_lookup|Attempt to read block|Corrupt|Bad/i.test(stderr)) {
    throw new ImageReadError(`${label} is damaged where ${what} lies: ${lastLine(stderr)}`);
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? '';
}
