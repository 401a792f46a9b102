import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const cachedLayoutImages = fileURLToPath(new URL('../../ramboot/cached-layout-images', import.meta.url));

export interface LayoutImages {
  /** GPT: ESP, /boot (xfs), LVM volume group rl with logical volume root (xfs). */
  rocky: string;
  /** GPT: ESP, /boot (ext4), btrfs with subvolumes root and home. */
  fedora: string;
  /** The kernel both images carry: the package the kit boots (ramboot/kernel-package). */
  kernelVersion: string;
  rockyImageId: string;
  fedoraImageId: string;
}

/** The layout images, built by ramboot/cached-layout-images (once per content, cached outside the clone). */
export function layoutImages(timeoutMs: number): Promise<LayoutImages> {
  return new Promise((resolve, reject) => {
    execFile(cachedLayoutImages, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`ramboot/cached-layout-images failed: ${err.message}\n${stderr}`));
      const dir = stdout.trim();
      const env = Object.fromEntries(
        fs
          .readFileSync(path.join(dir, 'layout-images.env'), 'utf8')
          .split('\n')
          .filter((line) => line.includes('='))
          .map((line) => line.split('=', 2) as [string, string]),
      );
      resolve({
        rocky: path.join(dir, 'rocky-like.img'),
        fedora: path.join(dir, 'fedora-like.img'),
        kernelVersion: env.KERNEL_VERSION!,
        rockyImageId: env.ROCKY_IMAGE_ID!,
        fedoraImageId: env.FEDORA_IMAGE_ID!,
      });
    });
  });
}
