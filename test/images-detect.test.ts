import { describe, expect, it } from 'vitest';
import { detectFormat, type ImageFormat } from '../src/images/detect.js';

function vdiHead(signature: number): Buffer {
  const head = Buffer.alloc(512);
  head.write('<<< Oracle VM VirtualBox Disk Image >>>\n', 0, 'latin1');
  head.writeUInt32LE(signature, 0x40);
  return head;
}

const bytes = (...values: number[]) => Buffer.from(values);

describe('detectFormat tells a stream by its first bytes, never by a name', () => {
  const cases: Array<[string, Buffer, ImageFormat]> = [
    ['gzip', bytes(0x1f, 0x8b, 0x08, 0x00), 'gzip'],
    ['xz', bytes(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04), 'xz'],
    ['zstd', bytes(0x28, 0xb5, 0x2f, 0xfd, 0x04), 'zstd'],
    ['qcow2', Buffer.concat([Buffer.from('QFI\xfb', 'latin1'), bytes(0, 0, 0, 3)]), 'qcow2'],
    ['vmdk sparse', Buffer.from('KDMV\x01\x00\x00\x00', 'latin1'), 'vmdk'],
    ['vmdk descriptor', Buffer.from('# Disk DescriptorFile\nversion=1\n'), 'vmdk'],
    ['vhdx', Buffer.from('vhdxfile\0\0'), 'vhdx'],
    ['vdi', vdiHead(0xbeda107f), 'vdi'],
    ['vdi text without the signature', vdiHead(0x12345678), 'raw'],
    ['zeros (an MBR-less disk)', Buffer.alloc(512), 'raw'],
    ['an MBR', Buffer.concat([Buffer.alloc(510), bytes(0x55, 0xaa)]), 'raw'],
    ['xz magic cut short', bytes(0xfd, 0x37, 0x7a, 0x58, 0x5a), 'raw'],
    ['qcow2 magic one byte off', Buffer.from('QFI\xfa', 'latin1'), 'raw'],
    ['gzip magic not at the start', bytes(0x00, 0x1f, 0x8b), 'raw'],
    ['empty', Buffer.alloc(0), 'raw'],
  ];
  it.each(cases)('%s', (_what, head, format) => {
    expect(detectFormat(head)).toBe(format);
  });
});
