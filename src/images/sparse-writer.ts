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
 * One batch is written while the next fills (two buffers), so the disk and the decompressor
 * feeding this work at the same time.
 */
export class SparseWriter {
  private readonly buffers = [Buffer.allocUnsafe(batchBytes), Buffer.allocUnsafe(batchBytes)];
  private batch = this.buffers[0]!;
  private batchLength = 0;
  private written = 0;
  /** The batch being written, if any; it never rejects: its error waits in `failure`. */
  private inFlight: Promise<void> = Promise.resolve();
  private failure: Error | null = null;

  private constructor(
    private readonly file: fs.FileHandle,
    private readonly checkSpace: () => void,
  ) {}

  static async create(path: string, checkSpace: () => void): Promise<SparseWriter> {
    return new SparseWriter(await fs.open(path, 'wx', 0o600), checkSpace);
  }

  async write(chunk: Buffer): Promise<void> {
    for (let offset = 0; offset < chunk.length;) {
      const taken = chunk.copy(this.batch, this.batchLength, offset);
      this.batchLength += taken;
      offset += taken;
      if (this.batchLength === batchBytes) await this.flush();
    }
  }

  /** Writes the rest, sets the length (a trailing hole too), and syncs it to the disk. */
  async finish(): Promise<number> {
    await this.flush();
    await this.settle();
    await this.guard(async () => {
      await this.file.truncate(this.written);
      await this.file.sync();
    });
    await this.file.close();
    return this.written;
  }

  /** Closes the file, whatever state it is in (the caller removes it). */
  async close(): Promise<void> {
    await this.inFlight;
    await this.file.close().catch(() => {});
  }

  /** Starts writing the full batch once the one before is written, and fills the other buffer meanwhile. */
  private async flush(): Promise<void> {
    await this.settle();
    const data = this.batch.subarray(0, this.batchLength);
    const position = this.written;
    this.written += data.length;
    this.batch = this.batch === this.buffers[0] ? this.buffers[1]! : this.buffers[0]!;
    this.batchLength = 0;
    this.inFlight = this.writeOut(data, position).catch((err: unknown) => {
      this.failure = err instanceof Error ? err : new Error(String(err));
    });
  }

  private async settle(): Promise<void> {
    await this.inFlight;
    if (this.failure !== null) throw this.failure;
  }

  private async writeOut(data: Buffer, position: number): Promise<void> {
    await this.guard(async () => {
      let runStart = -1;
      // One step past the last block, which may be short: a run of data still open there is written too.
      for (let block = 0; block < data.length + blockBytes; block += blockBytes) {
        const isData =
          block < data.length &&
          !data.subarray(block, block + blockBytes).equals(zeroBlock.subarray(0, Math.min(blockBytes, data.length - block)));
        if (isData && runStart < 0) runStart = block;
        if (!isData && runStart >= 0) {
          await this.file.write(data, runStart, Math.min(block, data.length) - runStart, position + runStart);
          runStart = -1;
        }
      }
    });
    this.checkSpace();
  }

  private async guard(io: () => Promise<void>): Promise<void> {
    try {
      await io();
    } catch (err) {
      if (isOutOfSpaceCode(err))
        throw new ImportError(
          'no-space',
          'the image store ran out of space while writing the image: free space there (or use a larger --image-store), then import again',
        );
      throw err;
    }
  }
}
