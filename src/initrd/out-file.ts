import fs from 'node:fs';
import { isOutOfSpace } from '../db/data-dir-space.js';
import { reservedBytes } from '../images/store.js';
import { ImageReadError } from '../inspect/file-tree.js';

/** Runs of zeros this long, aligned, become holes: the file system's block. */
const holeBytes = 4096;
const zeros = Buffer.alloc(holeBytes);
/** Free space is looked at again after each this many bytes written. */
const recheckBytes = 1024 * 1024;

/** The data dir has no room for a build: not the image's fault, so the next request builds again. */
export class NoSpaceError extends ImageReadError {}

/**
 * The free space of the directory a build writes in, judged before the build writes what it can
 * measure, and again as it writes: a build never takes the data dir below the reserve that
 * SQLite and nbd-server's config need (the image store's).
 */
export class BuildSpace {
  private sinceCheck = 0;

  constructor(private readonly dir: string) {}

  /** Refuses up front what cannot fit while leaving the reserve free. */
  require(bytes: number, what: string): void {
    const free = this.free();
    if (bytes + reservedBytes > free) throw this.refusal(`${what} needs ${mib(bytes)}`, free);
  }

  /** Counts bytes about to be written; refuses once the data dir is down to its reserve. */
  spend(bytes: number): void {
    this.sinceCheck += bytes;
    if (this.sinceCheck < recheckBytes) return;
    this.sinceCheck = 0;
    const free = this.free();
    if (free < reservedBytes) throw this.refusal('building the boot files ran it down to that', free);
  }

  /** A write the file system refused for want of space becomes a refusal in the same words; anything else is rethrown. */
  refusedWrite(err: unknown): never {
    if (isOutOfSpace(err)) throw this.refusal(`writing the boot files failed (${(err as NodeJS.ErrnoException).code})`, this.free());
    throw err;
  }

  private free(): number {
    const stats = fs.statfsSync(this.dir);
    return stats.bavail * stats.bsize;
  }

  private refusal(what: string, free: number): NoSpaceError {
    return new NoSpaceError(
      `the data dir has ${mib(free)} free at ${this.dir} and keeps ${mib(reservedBytes)} of it in reserve: ${what}; free space there, and the next boot request builds the image's files again`,
    );
  }
}

/**
 * A file written front to back, whose aligned runs of zeros are left as holes: a sparse file
 * in the image stays sparse in the data dir. Each byte written is counted against the space.
 */
export class SparseFile {
  private readonly fd: number;
  private length = 0;

  constructor(
    readonly path: string,
    private readonly space: BuildSpace,
  ) {
    try {
      this.fd = fs.openSync(path, 'wx', 0o600);
    } catch (err) {
      space.refusedWrite(err);
    }
  }

  get size(): number {
    return this.length;
  }

  write = (chunk: Buffer): void => {
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart < 0) return;
      this.space.spend(end - runStart);
      try {
        fs.writeSync(this.fd, chunk, runStart, end - runStart, this.length + runStart);
      } catch (err) {
        this.space.refusedWrite(err);
      }
      runStart = -1;
    };
    // Pieces end where the file's blocks do, so a hole is a whole block.
    for (let at = 0; at < chunk.length;) {
      const end = Math.min(chunk.length, at + holeBytes - ((this.length + at) % holeBytes));
      if (zeros.compare(chunk, at, end, 0, end - at) === 0) flush(at);
      else if (runStart < 0) runStart = at;
      at = end;
    }
    flush(chunk.length);
    this.length += chunk.length;
  };

  /** Gives the file its length (a trailing hole is not written) and closes it. */
  close(): void {
    try {
      fs.ftruncateSync(this.fd, this.length);
    } finally {
      fs.closeSync(this.fd);
    }
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
