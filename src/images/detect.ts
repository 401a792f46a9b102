/** What a stream of image bytes is, told by its first bytes (never by a file name's suffix). */
export type ImageFormat = 'gzip' | 'xz' | 'zstd' | 'qcow2' | 'vmdk' | 'vhdx' | 'vdi' | 'raw';

export type CompressedFormat = Extract<ImageFormat, 'gzip' | 'xz' | 'zstd'>;
/** Formats qemu-img turns into raw; its own name for each is the same word. */
export type ContainerFormat = Extract<ImageFormat, 'qcow2' | 'vmdk' | 'vhdx' | 'vdi'>;

/** Enough bytes to see every signature below (the VDI one sits at 0x40). */
export const headBytes = 512;

const vdiSignatureOffset = 0x40;
const vdiSignature = 0xbeda107f;

const prefixes: Array<[ImageFormat, Buffer]> = [
  ['gzip', Buffer.from([0x1f, 0x8b])],
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ['qcow2', Buffer.from('QFI\xfb', 'latin1')],
  ['vmdk', Buffer.from('KDMV')],
  ['vmdk', Buffer.from('# Disk DescriptorFile')],
  ['vhdx', Buffer.from('vhdxfile')],
];

/** The format of a stream that starts with `head`; raw when nothing else matches. */
export function detectFormat(head: Buffer): ImageFormat {
  for (const [format, prefix] of prefixes) {
    if (head.length >= prefix.length && head.subarray(0, prefix.length).equals(prefix)) return format;
  }
  const hasVdiHeader = head.length >= vdiSignatureOffset + 4 && head.subarray(0, 4).toString('latin1') === '<<< ';
  if (hasVdiHeader && head.readUInt32LE(vdiSignatureOffset) === vdiSignature) return 'vdi';
  return 'raw';
}

export function isCompressed(format: ImageFormat): format is CompressedFormat {
  return format === 'gzip' || format === 'xz' || format === 'zstd';
}

export function isContainer(format: ImageFormat): format is ContainerFormat {
  return format === 'qcow2' || format === 'vmdk' || format === 'vhdx' || format === 'vdi';
}
