import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { gunzipSync, gzipSync } from 'node:zlib';
import { ExtFilesystem, ImageReadError } from '../inspect/ext-fs.js';
import { maxKernelBytes, planModules } from '../inspect/inspect-image.js';
import { moduleKey } from '../inspect/modules-dep.js';
import { packCpio, type CpioEntry } from './cpio.js';

/** What the build child is asked; the image is its descriptor 3. */
export const buildRequestSchema = z.object({
  partitionOffset: z.number().int().nonnegative(),
  kernelPath: z.string(),
  modulesDir: z.string(),
  kitInitrd: z.string(),
  kitLoadOrder: z.array(z.object({ name: z.string(), params: z.string() })),
  rootModules: z.array(z.string()),
  /** An empty directory the build writes `vmlinuz` and `initrd.img` into. */
  outDir: z.string(),
});
export type BuildRequest = z.infer<typeof buildRequestSchema>;

/** All modules copied out of one image, bytes, uncompressed: ramboot's set is ~3 MB. */
const maxModulesBytes = 256 * 1024 * 1024;
const maxModuleBytesUnpacked = 64 * 1024 * 1024;

/**
 * Copies the image's kernel out and builds its initramfs: the kit's initrd.img unchanged,
 * then a second (gzip) cpio archive the kernel unpacks over it, holding the image's own modules
 * that ramboot's init loads (`/lib/modules/NAME.ko`, uncompressed: busybox insmod reads no
 * .xz) and a `/lib/modules/load-order` for them with the kit's parameters. Synchronous: runs
 * in a child (see worker.ts). Returns the module names, in load order.
 */
export function buildBootFiles(imageFd: number, request: BuildRequest): string[] {
  const ext = new ExtFilesystem(imageFd, request.partitionOffset);
  const kernel = ext.resolve(request.kernelPath);
  if (!kernel) throw new ImageReadError(`${request.kernelPath} is gone from the image`);
  const planned = planModules(ext, request.modulesDir, request.rootModules);
  const total = planned.reduce((sum, { file }) => sum + file.size, 0);
  if (total > maxModulesBytes) throw new ImageReadError(`the modules ramboot needs add up to ${total} bytes, more than the ${maxModulesBytes} nbdmux accepts`);

  const dumpDir = path.join(request.outDir, 'modules');
  mkdirSync(dumpDir);
  const kernelOut = path.join(request.outDir, 'vmlinuz');
  const copies = [{ entry: ext.requireFile(kernel, maxKernelBytes), out: kernelOut }, ...planned.map(({ file }, i) => ({ entry: file, out: path.join(dumpDir, String(i)) }))];
  ext.dump(copies, path.join(request.outDir, 'debugfs-commands'));
  for (const { entry, out } of copies) {
    if (sizeOf(out) !== entry.size) throw new ImageReadError(`debugfs could not copy ${entry.name} (inode ${entry.ino}) out of the image: the filesystem looks damaged`);
  }

  const params = new Map(request.kitLoadOrder.map(({ name, params }) => [moduleKey(name), params]));
  const entries: CpioEntry[] = [
    { name: 'lib', mode: 0o040755 },
    { name: 'lib/modules', mode: 0o040755 },
    ...planned.map(({ module }, i) => ({ name: `lib/modules/${module.name}.ko`, mode: 0o100644, data: unpackModule(path.join(dumpDir, String(i)), module.path) })),
    { name: 'lib/modules/load-order', mode: 0o100644, data: Buffer.from(planned.map(({ module }) => `${module.name} ${params.get(moduleKey(module.name)) ?? ''}\n`).join('')) },
  ];
  rmSync(dumpDir, { recursive: true });
  rmSync(path.join(request.outDir, 'debugfs-commands'));
  const kitInitrd = readFileSync(request.kitInitrd);
  // Zeros between archives are skipped by the kernel; an uncompressed one would need 4-byte alignment.
  const padding = Buffer.alloc((4 - (kitInitrd.length % 4)) % 4);
  writeFileSync(path.join(request.outDir, 'initrd.img'), Buffer.concat([kitInitrd, padding, gzipSync(packCpio(entries), { level: 6 })]));
  return planned.map(({ module }) => module.name);
}

function unpackModule(file: string, modulePath: string): Buffer {
  if (modulePath.endsWith('.ko.gz')) return gunzipSync(readFileSync(file), { maxOutputLength: maxModuleBytesUnpacked });
  if (modulePath.endsWith('.ko.xz')) {
    const xz = spawnSync('xz', ['-dc', file], { maxBuffer: maxModuleBytesUnpacked, timeout: 10_000 });
    if (xz.status !== 0) throw new ImageReadError(`${modulePath} does not unpack with xz: ${xz.error?.message ?? xz.stderr.toString().trim()}`);
    return xz.stdout;
  }
  return readFileSync(file);
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return -1;
  }
}
