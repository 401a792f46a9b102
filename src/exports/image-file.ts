import fs from 'node:fs/promises';
import { closeSync, constants, fstatSync, open as openCallback, readlinkSync, type BigIntStats } from 'node:fs';
import { promisify } from 'node:util';
import { badInput } from '../errors.js';
import { fileIdentityOf } from '../rules/file-identity.js';
import { isUnderAnyRoot } from '../rules/image-roots.js';
import { configSafePathPattern } from '../rules/names.js';

const openFd = promisify(openCallback);

export interface PinnedImage {
  /** The real path, as judged against the image roots. */
  realPath: string;
  size: number;
  /** An open descriptor on the judged file: nbd-server is handed this very file, never the path. */
  fd: number;
  /** What names the judged file for good (see `fileIdentityOf`). */
  identity: string;
}

/**
 * Judges `file` and opens it: it resolves (through every symlink) to a regular file or block
 * device inside an image root, and nbd-server, running as this user, can open it for reading
 * (and writing, for a writable export). Every check after the open is made on the descriptor,
 * so a path swapped meanwhile cannot slip another file in. The caller owns the descriptor.
 */
export async function pinImage(file: string, imageRoots: readonly string[], readonly: boolean): Promise<PinnedImage> {
  const realPath = await fs.realpath(file).catch((err: NodeJS.ErrnoException) => {
    throw badInput('file', `${file}: ${describeFsError(err)}`);
  });
  if (!configSafePathPattern.test(realPath)) {
    throw badInput('file', `${file} resolves to ${realPath}, whose characters nbd-server's config would misread; rename the file`);
  }
  if (imageRoots.length > 0 && !(await isUnderAnyRoot(realPath, imageRoots))) {
    throw badInput('file', `${realPath} is outside the image roots (${imageRoots.join(', ')}); move the image under one of them`);
  }
  // Said before the open, which would fail on a socket with a less useful message.
  refuseUnservableKind(file, await fs.stat(realPath, { bigint: true }));
  // O_NONBLOCK: a FIFO swapped in would otherwise block the open forever; O_NOFOLLOW: a symlink swapped in is refused.
  const fd = await openFd(realPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(
    (err: NodeJS.ErrnoException) => {
      throw badInput('file', `${file} cannot be opened for reading: ${describeFsError(err)}`);
    },
  );
  try {
    // A directory on the way swapped for a symlink since realpath() shows here, not in the open.
    if (readlinkSync(`/proc/self/fd/${fd}`) !== realPath)
      throw badInput('file', `${file} changed while nbdmux checked it; register it again`);
    const stats = fstatSync(fd, { bigint: true });
    refuseUnservableKind(file, stats);
    if (!readonly) {
      // Opening the descriptor's magic link asks the kernel about this very inode.
      const writable = await openFd(`/proc/self/fd/${fd}`, constants.O_RDWR).catch((err: NodeJS.ErrnoException) => {
        throw badInput('file', `${file} cannot be opened for writing (or register it with "readonly": true): ${describeFsError(err)}`);
      });
      closeSync(writable);
    }
    const size = stats.isBlockDevice() ? await blockDeviceSize(stats) : Number(stats.size);
    if (size === 0) throw badInput('file', `${file} is empty; there is nothing to serve`);
    return { realPath, size, fd, identity: fileIdentityOf(stats) };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

function refuseUnservableKind(file: string, stats: BigIntStats): void {
  const kind = unservableKind(stats);
  if (kind) throw badInput('file', `${file} is ${kind}, not an image file or block device`);
}

function unservableKind(stats: BigIntStats): string | null {
  if (stats.isFile() || stats.isBlockDevice()) return null;
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

/** The kernel's own count of 512-byte sectors: stat reports 0 bytes for a block device. */
async function blockDeviceSize(stats: BigIntStats): Promise<number> {
  const rdev = Number(stats.rdev);
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((Math.floor(rdev / 2 ** 20) & 0xfff) << 8);
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
