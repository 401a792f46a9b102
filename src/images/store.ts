import fs from 'node:fs';
import crypto from 'node:crypto';
import path from 'node:path';
import { ImportError } from './import-error.js';

const partialPrefix = '.partial-';

/**
 * Space an import leaves free in the image store: the data dir may share its disk (the store's
 * default is DATA_DIR/images), and SQLite and nbd-server's config must still be written.
 */
export const reservedBytes = 16 << 20;

/** Where imported images live: complete ones under their final name, work in progress under `.partial-*`. */
export class ImageStore {
  readonly reservedBytes = reservedBytes;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** A new temporary name for the import `key`; `kind` tells its files apart. */
  partialPath(key: string, kind: 'download' | 'raw'): string {
    return path.join(this.dir, `${partialPrefix}${fileSafe(key)}-${crypto.randomBytes(4).toString('hex')}.${kind}`);
  }

  freeBytes(): number {
    const stats = fs.statfsSync(this.dir);
    return stats.bavail * stats.bsize;
  }

  /** Refuses up front an image that cannot fit while leaving the reserve free. */
  ensureRoomFor(bytes: number, what: string): void {
    const free = this.freeBytes();
    if (bytes + reservedBytes > free) {
      throw new ImportError(
        'no-space',
        `${what} needs ${bytes} bytes but the image store ${this.dir} has ${free} free (and keeps ${reservedBytes} in reserve): free space there, then import again`,
      );
    }
  }

  /** Fails the import once the store is down to its reserve (a statfs: microseconds, so sync). */
  checkSpace = (): void => {
    const free = this.freeBytes();
    if (free < reservedBytes) {
      throw new ImportError(
        'no-space',
        `the image store ${this.dir} is down to ${free} free bytes (${reservedBytes} are kept in reserve): free space there, then import again`,
      );
    }
  };

  /**
   * Gives a complete, synced partial file its final name, `<key>-<sha256 prefix>.img` (a counter
   * added if taken): link() never replaces an existing file, so no image is ever overwritten.
   * Off the event loop: on a busy disk the directory's sync waits for the journal.
   */
  async keep(partial: string, key: string, sha256: string): Promise<string> {
    const base = `${fileSafe(key)}-${sha256.slice(0, 12)}`;
    for (let attempt = 1; ; attempt++) {
      const final = path.join(this.dir, attempt === 1 ? `${base}.img` : `${base}-${attempt}.img`);
      try {
        await fs.promises.link(partial, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw err;
      }
      await fs.promises.rm(partial);
      await syncDirectory(this.dir);
      return final;
    }
  }

  /** Off the event loop too: unlinking a GiB takes a while on a busy disk. */
  async remove(file: string): Promise<void> {
    await fs.promises.rm(file, { force: true });
  }

  /** Partial files an earlier run left behind (it stopped mid-import): removed, their names returned. */
  removeLeftovers(): string[] {
    const names = fs.readdirSync(this.dir).filter((name) => name.startsWith(partialPrefix));
    for (const name of names) fs.rmSync(path.join(this.dir, name), { force: true, recursive: true });
    return names;
  }
}

/** A key as a file name part: anything but letters, digits, `.`, `_` and `-` becomes `_`, and so does a leading dot (hidden, or taken for a partial file). */
function fileSafe(key: string): string {
  return key
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .replace(/^\./, '_')
    .slice(0, 100);
}

/** The rename is durable only once the directory itself is synced. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
