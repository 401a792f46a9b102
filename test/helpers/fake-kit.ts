import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { cpioChunks } from '../../src/initrd/cpio.js';
import { tempDir } from '../../testkit/daemon.js';
import { makeExt4, writeTree, type TreeEntry } from './images.js';

/**
 * A kit whose bytes are sent, never booted: a kernel of the given bytes and an initrd holding only
 * the load order nbdmux reads from a kit (`modules`: what its init loads, so what an image's kernel must have).
 * Booting a real kit through these routes is test/pxe-boot.test.ts's job.
 */
export function fakeKit(kernel: Buffer | { sparseBytes: number }, modules = 'nbd max_part=16\n'): string {
  const kit = tempDir('nbdmux-kit-');
  if (Buffer.isBuffer(kernel)) fs.writeFileSync(path.join(kit, 'vmlinuz'), kernel);
  else {
    fs.writeFileSync(path.join(kit, 'vmlinuz'), '');
    fs.truncateSync(path.join(kit, 'vmlinuz'), kernel.sparseBytes);
  }
  const loadOrder = { name: 'lib/modules/load-order', mode: 0o100644, data: Buffer.from(modules) };
  // Random bytes, which gzip cannot shrink: an initrd larger than any buffer, sent whole all the same.
  const filler = { name: 'filler', mode: 0o100644, data: randomBytes(1024 * 1024 + 5) };
  fs.writeFileSync(path.join(kit, 'initrd.img'), gzipSync(Buffer.concat([...cpioChunks([loadOrder, filler])])));
  fs.writeFileSync(path.join(kit, 'kit.env'), 'KERNEL_PACKAGE=linux-image-6.1.0-99-amd64\nKERNEL_VERSION=6.1.0-99-amd64\n');
  return kit;
}

/** The kernel version of every fakeBootImage. */
export const fakeKernelVersion = '6.1.0-98-amd64';

/**
 * A whole-disk ext4 image the inspection finds bootable with its own kernel (ready: true): a
 * `/boot/vmlinuz-VERSION` of the given bytes (or `head` followed by a hole up to `bytes`), and
 * `/lib/modules/VERSION` holding `modules` (paths relative to it) and the `modulesDep` naming them.
 */
export function fakeBootImage(
  file: string,
  options: { kernel: Buffer | { head: Buffer; bytes: number }; modules: Record<string, TreeEntry>; modulesDep: string; sizeMiB: number },
): string {
  const modulesDir = `lib/modules/${fakeKernelVersion}`;
  const tree = writeTree(`${file}.tree`, {
    ...Object.fromEntries(Object.entries(options.modules).map(([name, entry]) => [`${modulesDir}/${name}`, entry])),
    [`${modulesDir}/modules.dep`]: options.modulesDep,
  });
  const kernel = path.join(tree, `boot/vmlinuz-${fakeKernelVersion}`);
  fs.mkdirSync(path.dirname(kernel));
  if (Buffer.isBuffer(options.kernel)) fs.writeFileSync(kernel, options.kernel);
  else {
    fs.writeFileSync(kernel, options.kernel.head);
    fs.truncateSync(kernel, options.kernel.bytes);
  }
  makeExt4(file, tree, options.sizeMiB);
  fs.rmSync(tree, { recursive: true });
  return file;
}
