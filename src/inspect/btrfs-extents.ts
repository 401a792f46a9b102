import { execFileSync } from 'node:child_process';
import { inflateSync } from 'node:zlib';
import { ImageReadError } from './file-tree.js';
import { lzo1xDecompress } from './lzo.js';

/** btrfs compresses at most 128 KiB of a file into one extent (BTRFS_MAX_UNCOMPRESSED). */
export const maxCompressedExtent = 128 * 1024;
const zstdTimeoutMs = 5_000;

/**
 * The bytes of one compressed extent (`type`: btrfs_compression_type), exactly `ramBytes` long.
 * zlib and lzo unpack here; zstd goes through the zstd tool (Node 20 has no zstd), bounded in output and time.
 */
export function decompressExtent(type: number, packed: Buffer, ramBytes: number, sectorSize: number, what: string): Buffer {
  if (ramBytes > maxCompressedExtent)
    throw new ImageReadError(`${what} claims a compressed extent of ${ramBytes} bytes, more than btrfs writes`);
  let plain: Buffer;
  try {
    switch (type) {
      case 1:
        plain = inflateSync(packed, { maxOutputLength: ramBytes + 1 });
        break;
      case 3:
        plain = execFileSync('zstd', ['-dcq'], { input: zstdFrame(packed, what), maxBuffer: ramBytes + 1, timeout: zstdTimeoutMs });
        break;
      case 2:
        plain = lzoSegments(packed, ramBytes, sectorSize);
        break;
      default:
        throw new ImageReadError(`${what} is stored with btrfs compression type ${type}, which nbdmux does not know`);
    }
  } catch (err) {
    if (err instanceof ImageReadError) throw err;
    throw new ImageReadError(`${what} has a compressed extent that does not unpack (${(err as Error).message.split('\n')[0]})`);
  }
  // A short stream leaves the rest of the extent zeros, as the kernel reads it.
  if (plain.length > ramBytes) throw new ImageReadError(`${what} has a compressed extent that unpacks past its ${ramBytes} bytes`);
  return plain.length === ramBytes ? plain : Buffer.concat([plain, Buffer.alloc(ramBytes - plain.length)]);
}

/**
 * The one zstd frame an extent holds, without the zeros that pad it to a sector: the zstd tool
 * would read them as a second, broken frame. Walks the frame header and block headers (RFC 8878).
 */
function zstdFrame(packed: Buffer, what: string): Buffer {
  const bad = () => new ImageReadError(`${what} has a zstd extent whose frame is damaged`);
  if (packed.length < 6 || packed.readUInt32LE(0) !== 0xfd2fb528) throw bad();
  const descriptor = packed[4]!;
  const singleSegment = (descriptor & 0x20) !== 0;
  const contentSizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6]!;
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]! + contentSizeBytes;
  for (;;) {
    if (at + 3 > packed.length) throw bad();
    const header = packed[at]! | (packed[at + 1]! << 8) | (packed[at + 2]! << 16);
    const blockType = (header >> 1) & 3;
    if (blockType === 3) throw bad();
    at += 3 + (blockType === 1 ? 1 : header >> 3);
    if ((header & 1) !== 0) break;
  }
  at += (descriptor & 4) !== 0 ? 4 : 0;
  if (at > packed.length) throw bad();
  return packed.subarray(0, at);
}

/**
 * btrfs's lzo layout (fs/btrfs/lzo.c): the total length (4 bytes LE), then segments, each its
 * length (4 bytes LE) and an LZO1X stream of at most one sector; a segment's length never
 * straddles a sector's end (the rest of that sector is padding).
 */
function lzoSegments(packed: Buffer, ramBytes: number, sectorSize: number): Buffer {
  if (packed.length < 4) throw new Error('the lzo extent is cut short');
  const total = packed.readUInt32LE(0);
  if (total > packed.length || total < 4) throw new Error(`the lzo extent claims ${total} bytes`);
  const parts: Buffer[] = [];
  let unpacked = 0;
  let at = 4;
  while (at < total && unpacked < ramBytes) {
    if (sectorSize - (at % sectorSize) < 4) at += sectorSize - (at % sectorSize);
    if (at + 4 > total) break;
    const length = packed.readUInt32LE(at);
    at += 4;
    if (at + length > total) throw new Error(`an lzo segment of ${length} bytes runs past the extent`);
    const part = lzo1xDecompress(packed.subarray(at, at + length), Math.min(sectorSize, ramBytes - unpacked));
    parts.push(part);
    unpacked += part.length;
    at += length;
  }
  return Buffer.concat(parts);
}
