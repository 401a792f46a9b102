import fs from 'node:fs';

/** The "newc" cpio format the kernel unpacks an initramfs from (Documentation/driver-api/early-userspace). */
export interface CpioEntry {
  name: string;
  /** File type and permission bits, as st_mode. */
  mode: number;
  data?: Buffer;
  /** Or a file whose bytes are read as the archive is written, a chunk at a time. */
  file?: string;
}

const trailer = 'TRAILER!!!';
const headerBytes = 110;
const readChunkBytes = 256 * 1024;

/**
 * One archive, as chunks in order: each entry owned by root, time 0 (the same bytes for the
 * same input). A file entry is read a chunk at a time, so the archive is never held whole.
 */
export function* cpioChunks(entries: readonly CpioEntry[]): Generator<Buffer> {
  let written = 0;
  const padAfter = (length: number) => Buffer.alloc((4 - (length % 4)) % 4);
  for (const [i, entry] of [...entries, { name: trailer, mode: 0 }].entries()) {
    const fd = entry.file === undefined ? undefined : fs.openSync(entry.file, 'r');
    try {
      const size = fd === undefined ? (entry.data?.length ?? 0) : fs.fstatSync(fd).size;
      const isDirectory = (entry.mode & 0o170000) === 0o040000;
      const fields = [i + 1, entry.mode, 0, 0, isDirectory ? 2 : 1, 0, size, 0, 0, 0, 0, Buffer.byteLength(entry.name) + 1, 0];
      const header = Buffer.from(`070701${fields.map((field) => field.toString(16).padStart(8, '0')).join('')}${entry.name}\0`, 'latin1');
      const head = Buffer.concat([header, padAfter(written + header.length), entry.data ?? Buffer.alloc(0)]);
      written += head.length;
      yield head;
      for (let at = 0; fd !== undefined && at < size;) {
        const chunk = Buffer.allocUnsafe(Math.min(readChunkBytes, size - at));
        const got = fs.readSync(fd, chunk, 0, chunk.length, at);
        if (got === 0) throw new Error(`${entry.file} ended at byte ${at} of its ${size} while it was packed`);
        at += got;
        written += got;
        yield chunk.subarray(0, got);
      }
      const after = padAfter(written);
      written += after.length;
      if (after.length > 0) yield after;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
}

/** The entries of one archive, up to its trailer; throws on anything that is not newc. */
export function unpackCpio(archive: Buffer): CpioEntry[] {
  const entries: CpioEntry[] = [];
  let at = 0;
  const align = (n: number) => n + ((4 - (n % 4)) % 4);
  for (;;) {
    const magic = archive.toString('latin1', at, at + 6);
    if (magic !== '070701' && magic !== '070702') throw new Error(`no newc cpio header at byte ${at}`);
    const field = (index: number) => Number.parseInt(archive.toString('latin1', at + 6 + index * 8, at + 14 + index * 8), 16);
    const [mode, size, nameSize] = [field(1), field(6), field(11)];
    const name = archive.toString('latin1', at + headerBytes, at + headerBytes + nameSize - 1);
    if (name === trailer) return entries;
    const dataAt = align(at + headerBytes + nameSize);
    if (dataAt + size > archive.length) throw new Error(`the cpio entry ${name} runs past the archive's end`);
    entries.push({ name, mode, data: archive.subarray(dataAt, dataAt + size) });
    at = align(dataAt + size);
  }
}
