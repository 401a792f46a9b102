import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { packCpio } from '../../src/boot/initrd/cpio.js';
import { tempDir } from './daemon.js';

/**
 * A kit whose bytes are sent, never booted: a kernel of the given bytes and an initrd holding only
 * the load order nbdmux reads from a kit. Booting a real kit through these routes is test/pxe-boot.test.ts's job.
 */
export function fakeKit(kernel: Buffer | { sparseBytes: number }): string {
  const kit = tempDir('nbdmux-kit-');
  if (Buffer.isBuffer(kernel)) fs.writeFileSync(path.join(kit, 'vmlinuz'), kernel);
  else {
    fs.writeFileSync(path.join(kit, 'vmlinuz'), '');
    fs.truncateSync(path.join(kit, 'vmlinuz'), kernel.sparseBytes);
  }
  const loadOrder = { name: 'lib/modules/load-order', mode: 0o100644, data: Buffer.from('nbd max_part=16\n') };
  // Random bytes, which gzip cannot shrink: an initrd larger than any buffer, sent whole all the same.
  const filler = { name: 'filler', mode: 0o100644, data: randomBytes(1024 * 1024 + 5) };
  fs.writeFileSync(path.join(kit, 'initrd.img'), gzipSync(packCpio([loadOrder, filler])));
  fs.writeFileSync(path.join(kit, 'kit.env'), 'KERNEL_PACKAGE=linux-image-6.1.0-99-amd64\nKERNEL_VERSION=6.1.0-99-amd64\n');
  return kit;
}
