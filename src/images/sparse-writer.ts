import fs from 'node:fs/promises';
import { ImportError, isOutOfSpaceCode } from './import-error.js';

/** All-zero blocks of this size are left as holes, as `qemu-img convert -S 4k` does. */
const blockBytes = 4096;
const zeroBlock = Buffer.alloc(blockBytes);
/** Bytes gathered before a write: large writes, few system calls. */
const batchBytes = 1 << 20;

/**
 * Writes a stream of bytes into a new file (0600, never an existing one), leaving zero blocks
 * as holes, and asks `checkSpace` between batches so a filling disk is seen before it is full.
 */
export class SparseWriter {
  private readonly batch = Buffer.allocUnsafe(batchBytes);
  private batchLength = 0;
  private written = 0;

  private constructor(
    private readonly file: fs.FileHandle,
    private readonly checkSpace: () => Promise<void>,
  ) {}

  static async create(path: string, checkSpace: () => Promise<void>): Promise<SparseWriter> {
    return new SparseWriter(await fs.open(path, 'wx', 0o600), checkSpace);
  }

  get bytesWritten(): number {
    return this.written + this.batchLength;
  }

  async write(chunk: Buffer): Promise<void> {
    for (let offset = 0; offset < chunk.length; ) {
      const taken = chunk.copy(this.batch, this.batchLength, offset);
      this.batchLength += taken;
      offset += taken;
      if (this.batchLength === batchBytes) await this.flush();
    }
  }

  /** Writes the rest, sets the length (a trailing hole too), and syncs it to the disk. */
  async finish(): Promise<number> {
    await this.flush();
    await this.guard(async () => {
      await this.file.truncate(this.written);
      await this.file.sync();
    });
    await this.file.close();
    return this.written;
  }

  async close(): Promise<void> {
    await this.file.close().catch(() => {});
  }

  private async flush(): Promise<void> {
    const data = this.batch.subarray(0, this.batchLength);
    await this.guard(async () => {
      let runStart = -1;
      for (let block = 0; block <= data.length; block += blockBytes) {
        const isData = block < data.length && !data.subarray(block, block + blockBytes).equals(zeroBlock.subarray(0, Math.min(blockBytes, data.length - block)));
        if (isData && runStart < 0) runStart = block;
        if (!isData && runStart >= 0) {
          const end = Math.min(block, data.length);
          await this.file.write(data, runStart, end - runStart, this.written + runStart);
          runStart = -1;
        }
      }
    });
    this.written += data.length;
    this.batchLength = 0;
    await this.checkSpace();
  }

  private async guard(io: () => Promise<void>): Promise<void> {
    try {
      await io();
    } catch (err) {
      if (isOutOfSpaceCode(err)) throw new ImportError('no-space', 'the image store ran out of space while writing the image: free space there (or use a larger --image-store), then import again');
      throw err;
    }
  }
}
