import type { BigIntStats } from 'node:fs';

/**
 * Device, inode and birth time: a path that leads to another identity leads to another file.
 * The birth time tells a new file from an old one that reused a freed inode number (0 on file
 * systems that do not record it, where device and inode alone decide).
 */
export function fileIdentityOf(stats: BigIntStats): string {
  return `${stats.dev}:${stats.ino}:${stats.birthtimeNs}`;
}
