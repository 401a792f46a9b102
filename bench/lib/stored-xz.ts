import fs from 'node:fs';
import zlib from 'node:zlib';

/** LZMA2 stores at most this many bytes in one uncompressed chunk. */
const chunkBytes = 1 << 16;

/**
 * Packs `input` as an .xz of stored (uncompressed) LZMA2 chunks, as xz itself emits for data
 * it cannot shrink, in a second instead of xz's minutes per GiB of random bytes. One block, a
 * CRC32 check; `xz -t` accepts it (the import benchmark checks). Format: xz-file-format.txt.
 */
export function writeStoredXz(input: string, output: string): void {
  const inFd = fs.openSync(input, 'r');
  const outFd = fs.openSync(output, 'w');
  try {
    const write = (bytes: Buffer) => fs.writeSync(outFd, bytes);
    const flags = Buffer.from([0x00, 0x01]);
    write(Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), flags, le32(zlib.crc32(flags))]));
    // Header size (12 / 4 - 1), no sizes, one filter: LZMA2 (0x21) with a 1 MiB dictionary (16); padding.
    const header = Buffer.from([0x02, 0x00, 0x21, 0x01, 16, 0, 0, 0]);
    write(Buffer.concat([header, le32(zlib.crc32(header))]));
    const piece = Buffer.allocUnsafe(chunkBytes);
    let uncompressed = 0;
    let compressed = 0;
    let check = 0;
    for (;;) {
      const length = fs.readSync(inFd, piece, 0, chunkBytes, null);
      if (length === 0) break;
      // 1: stored, dictionary reset (the first chunk); 2: stored.
      write(Buffer.from([uncompressed === 0 ? 0x01 : 0x02, (length - 1) >> 8, (length - 1) & 0xff]));
      write(piece.subarray(0, length));
      check = zlib.crc32(piece.subarray(0, length), check);
      uncompressed += length;
      compressed += 3 + length;
    }
    write(Buffer.from([0x00]));
    compressed += 1;
    write(Buffer.concat([Buffer.alloc((4 - (compressed % 4)) % 4), le32(check)]));
    const records = Buffer.concat([Buffer.from([0x00, 0x01]), varint(12 + compressed + 4), varint(uncompressed)]);
    const index = Buffer.concat([records, Buffer.alloc((4 - (records.length % 4)) % 4)]);
    const indexWithCrc = Buffer.concat([index, le32(zlib.crc32(index))]);
    write(indexWithCrc);
    const footer = Buffer.concat([le32(indexWithCrc.length / 4 - 1), flags]);
    write(Buffer.concat([le32(zlib.crc32(footer)), footer, Buffer.from('YZ')]));
  } finally {
    fs.closeSync(inFd);
    fs.closeSync(outFd);
  }
}

function le32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(value >>> 0);
  return bytes;
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  while (value >= 0x80) {
    bytes.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  bytes.push(value);
  return Buffer.from(bytes);
}
