import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Whether a resolved path lies inside one of the image roots (`--image-root`, the image store):
 * the one place an image file may come from, whether registered by path or fetched from a
 * file:// URL. Roots are resolved too, so a root that is itself a symlink still holds.
 */
export async function isUnderAnyRoot(realPath: string, imageRoots: readonly string[]): Promise<boolean> {
  for (const root of imageRoots) {
    const realRoot = await fs.realpath(root).catch(() => null);
    if (realRoot === null) continue;
    const relative = path.relative(realRoot, realPath);
    const outside = relative === '' || relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative);
    if (!outside) return true;
  }
  return false;
}
