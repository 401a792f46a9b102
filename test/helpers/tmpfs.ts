import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { tempDir } from '../../testkit/daemon.js';

/** Mounting a small tmpfs needs root; CI runs as root, so these tests run there. */
export const isRoot = process.getuid?.() === 0;

/** A fresh tmpfs of `size` (as mount takes it: `4m`), to fill up on purpose. */
export function mountTmpfs(size: string, prefix = 'nbdmux-tmpfs-'): string {
  const mount = tempDir(prefix);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mount]);
  return mount;
}

/** Lazily: a process that still holds a file there must not keep the test from ending. */
export function unmountTmpfs(mount: string): void {
  execFileSync('umount', ['-l', mount]);
  fs.rmdirSync(mount);
}

/** Writes zeros to `file` until the file system says it is full; returns the bytes written. */
export function fillUp(file: string): number {
  const chunk = Buffer.alloc(64 * 1024);
  const fd = fs.openSync(file, 'w');
  let written = 0;
  try {
    for (;;) written += fs.writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    fs.closeSync(fd);
  }
  return written;
}
