import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { unavailable } from '../errors.js';

const run = promisify(execFile);

/**
 * The persistent machines' state: one sparse ext4 file each, `DATA_DIR/machines/<MAC in hex>.ext4`, made
 * by mkfs.ext4 on a file (no root, no loop device) and held open here, as the descriptor every
 * nbd-server serving it inherits. ramboot mounts it as the overlay's upper layer.
 */
export class StateFiles {
  /** By MAC. */
  private readonly fds = new Map<string, number>();
  /**
   * Descriptors of discarded states, closed only once the data plane no longer names them: closed
   * at once, the number could be reused for another file that a cached config would then serve.
   */
  private retired: number[] = [];

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  pathOf(mac: string): string {
    return path.join(this.dir, `${mac.replaceAll(':', '')}.ext4`);
  }

  /** The open descriptor of a machine's state file, opened on first use; undefined when it has none. */
  fdOf(mac: string): number | undefined {
    let fd = this.fds.get(mac);
    if (fd === undefined) {
      try {
        fd = fs.openSync(this.pathOf(mac), fs.constants.O_RDWR | fs.constants.O_NOFOLLOW);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
      this.fds.set(mac, fd);
    }
    return fd;
  }

  exists(mac: string): boolean {
    return fs.existsSync(this.pathOf(mac));
  }

  /**
   * An empty filesystem of `size` bytes, written whole under a temporary name first: a crash
   * or a full disk midway never leaves a half-made file that a machine would mount.
   */
  async create(mac: string, size: number): Promise<void> {
    const file = this.pathOf(mac);
    const temp = `${file}.new`;
    try {
      fs.rmSync(temp, { force: true });
      fs.writeFileSync(temp, '', { mode: 0o600 });
      fs.truncateSync(temp, size);
      // Lazy init: only the metadata is written now, so a 4 GiB state costs a few MiB of disk.
      await run('mkfs.ext4', ['-q', '-F', '-L', 'nbdmux-state', '-E', 'lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0', temp], {
        timeout: 60_000,
      });
      fs.renameSync(temp, file);
    } catch (err) {
      fs.rmSync(temp, { force: true });
      throw unavailable(`cannot make the state filesystem ${file}, so nothing was changed: ${failureDetail(err)}`);
    }
  }

  /**
   * Grows a machine's state filesystem (offline: no connection may hold it). ext4 cannot shrink
   * offline safely, so a smaller size is the caller's to refuse.
   */
  async grow(mac: string, size: number): Promise<void> {
    const file = this.pathOf(mac);
    const before = fs.statSync(file).size;
    try {
      // resize2fs insists on a freshly checked filesystem; -p repairs only what is safe to.
      await run('e2fsck', ['-f', '-p', file], { timeout: 120_000 });
      fs.truncateSync(file, size);
      await run('resize2fs', [file], { timeout: 120_000 });
    } catch (err) {
      // The check runs before the file grows, and resize2fs writes the grown metadata as it closes the
      // filesystem, at its end: on a failure the file goes back to the size the database keeps.
      fs.truncateSync(file, before);
      throw unavailable(`cannot grow the state filesystem ${file}: ${failureDetail(err)}; the machine keeps its state at the size it had`);
    }
  }

  /**
   * Deletes a machine's state; a serving process still holding it keeps its own descriptor. Ours
   * is closed by closeRetired, once the data plane has the states without it.
   */
  discard(mac: string): void {
    const fd = this.fds.get(mac);
    if (fd !== undefined) this.retired.push(fd);
    this.fds.delete(mac);
    fs.rmSync(this.pathOf(mac), { force: true });
  }

  closeRetired(): void {
    for (const fd of this.retired.splice(0)) fs.closeSync(fd);
  }
}

/** What a failed tool or file call says: its stderr, else the error code. */
function failureDetail(err: unknown): string {
  return (err as { stderr?: string }).stderr?.trim() || (err as NodeJS.ErrnoException).code || (err as Error).message;
}
