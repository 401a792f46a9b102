import fs from 'node:fs/promises';
import { constants, type Stats } from 'node:fs';
import path from 'node:path';
import { badInput } from '../errors.js';
import { configSafePathPattern } from '../supervisor/nbd-config.js';

export interface InspectedImage {
  /** What is exported: the real path, so a symlink swapped later cannot lead outside the image roots. */
  realPath: string;
  size: number;
}

/**
 * Checks that `file` can be served as asked: it resolves (through every symlink) to a regular
 * file or block device inside an image root, and nbd-server, running as this user, can open it
 * for reading (and writing, for a writable export).
 */
export async function inspectImage(file: string, imageRoots: readonly string[], readonly: boolean): Promise<InspectedImage> {
  const realPath = await fs.realpath(file).catch((err: NodeJS.ErrnoException) => {
    throw badInput('file', `${file}: ${describeFsError(err)}`);
  });
  if (!configSafePathPattern.test(realPath)) {
    throw badInput('file', `${file} resolves to ${realPath}, whose characters nbd-server's config would misread; rename the file`);
  }
  if (imageRoots.length > 0 && !(await isUnderAnyRoot(realPath, imageRoots))) {
    throw badInput('file', `${realPath} is outside the image roots (${imageRoots.join(', ')}); move the image under one of them`);
  }
  const stats = await fs.stat(realPath);
  const kind = unservableKind(stats);
  if (kind) throw badInput('file', `${file} is ${kind}, not an image file or block device`);

  const handle = await fs.open(realPath, readonly ? constants.O_RDONLY : constants.O_RDWR).catch((err: NodeJS.ErrnoException) => {
    const mode = readonly ? 'for reading' : 'for writing (or register it with "readonly": true)';
    throw badInput('file', `${file} cannot be opened ${mode}: ${describeFsError(err)}`);
  });
  await handle.close();

  const size = stats.isBlockDevice() ? await blockDeviceSize(stats) : stats.size;
  if (size === 0) throw badInput('file', `${file} is empty; there is nothing to serve`);
  return { realPath, size };
}

function unservableKind(stats: Stats): string | null {
  if (stats.isFile() || stats.isBlockDevice()) return null;
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

async function isUnderAnyRoot(realPath: string, imageRoots: readonly string[]): Promise<boolean> {
  for (const root of imageRoots) {
    const realRoot = await fs.realpath(root).catch(() => null);
    if (realRoot === null) continue;
    const relative = path.relative(realRoot, realPath);
    const outside = relative === '' || relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative);
    if (!outside) return true;
  }
  return false;
}

/** The kernel's own count of 512-byte sectors: stat reports 0 bytes for a block device. */
async function blockDeviceSize(stats: Stats): Promise<number> {
  const major = Math.floor(stats.rdev / 256) & 0xfff;
  const minor = (stats.rdev & 0xff) | ((Math.floor(stats.rdev / 2 ** 20) & 0xfff) << 8);
  const sectors = await fs.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  return Number(sectors.trim()) * 512;
}

function describeFsError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOTDIR':
      return 'a part of the path is not a directory';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    case 'EROFS':
      return 'the file system is read-only';
    default:
      return err.code ?? err.message;
  }
}
