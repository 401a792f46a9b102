import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { z } from 'zod';
import { startStreamingTool } from '../bounded-child.js';
import { ImageReadError, requireFile, type FileTree } from '../inspect/file-tree.js';
import { nicModules } from '../inspect/module-files.js';
import { nicText } from '../inspect/nic-drivers.js';
import { detectFilesystem } from '../inspect/filesystems.js';
import { imageSizeOf, maxKernelBytes, modulesToBoot, planModules, readerOf } from '../inspect/inspect-image.js';
import { moduleKey } from '../inspect/modules-dep.js';
import { openFileTree } from '../inspect/open-tree.js';
import { cpioChunks, type CpioEntry } from './cpio.js';
import { BuildSpace, SparseFile } from './out-file.js';

/** What the build child is asked; the image is its descriptor 3. */
export const buildRequestSchema = z.object({
  /** The image's size when it is a block device (its stat says 0). */
  size: z.number().int().positive().optional(),
  partitionOffset: z.number().int().nonnegative(),
  /** Of the filesystem holding the kernel: the root's, or a separate /boot's. */
  kernelOffset: z.number().int().nonnegative(),
  kernelPath: z.string(),
  modulesDir: z.string(),
  kitInitrd: z.string(),
  kitLoadOrder: z.array(z.object({ name: z.string(), params: z.string() })),
  rootModules: z.array(z.string()),
  /** Of rootModules, the kit's NIC drivers: with `nic` given, only that NIC's driver is wanted in their stead. */
  deviceModules: z.array(z.string()),
  /** Their aliases (Kit.deviceAliases). */
  deviceAliases: z.array(z.object({ pattern: z.string(), module: z.string() })),
  /** The NIC the machine booted from (iPXE's busid); null: not known, so every one of deviceModules is wanted. */
  nic: z.object({ vendor: z.number().int().min(0).max(0xffff), device: z.number().int().min(0).max(0xffff) }).nullable(),
  /** An empty directory the build writes `vmlinuz` and `initrd.img` into. */
  outDir: z.string(),
});
export type BuildRequest = z.infer<typeof buildRequestSchema>;

/** All modules copied out of one image, bytes as stored: ramboot's set is ~3 MB. */
const maxModulesBytes = 256 * 1024 * 1024;
/**
 * All modules unpacked, counted as they unpack: ramboot's set is ~5 MB, and a module of zeros
 * packs a thousandfold, so what the image stores says nothing about what it unpacks to.
 */
const maxUnpackedBytes = 128 * 1024 * 1024;
/** Address space of one unpacker: a crafted stream (a huge xz dictionary) cannot make it eat the machine. */
const unpackerAddressSpace = 256 * 1024 * 1024;
const unpackTimeoutMs = 20_000;
/** busybox insmod reads none of these: each is unpacked while packing. */
const unpackers: Record<string, string[]> = { '.ko.xz': ['xz', '-dc'], '.ko.gz': ['gzip', '-dc'], '.ko.zst': ['zstd', '-dcq'] };

/**
 * Copies the image's kernel out and builds its initramfs: the kit's initrd.img unchanged,
 * then a second (gzip) cpio archive the kernel unpacks over it, holding the image's own modules
 * that ramboot's init loads (`/lib/modules/NAME.ko`, uncompressed) and a `/lib/modules/load-order`
 * for them with the kit's parameters. Every file goes through the data dir as a stream, sparse,
 * within its free space; the modules unpacked are bounded in all. Runs in a child (see
 * worker.ts). Returns the module names, in load order.
 */
export async function buildBootFiles(imageFd: number, request: BuildRequest): Promise<string[]> {
  const size = imageSizeOf(imageFd, request.size);
  const read = readerOf(imageFd, size);
  // The inspection checked each filesystem against its partition; the build opens them as the image holds them now.
  const open = (offset: number, owner: string | null) => {
    const fstype = detectFilesystem(read, offset);
    if (!fstype) throw new ImageReadError(`the image holds no filesystem at byte ${offset} any more: inspect it again`);
    return { tree: openFileTree(imageFd, read, { offset, size: size - offset }, fstype, owner), fstype };
  };
  const { tree: root, fstype: rootFstype } = open(request.partitionOffset, null);
  const kernelFs = request.kernelOffset === request.partitionOffset ? root : open(request.kernelOffset, 'the /boot partition').tree;
  const kernel = kernelFs.resolve(request.kernelPath);
  if (!kernel) throw new ImageReadError(`${request.kernelPath} is gone from the image`);
  const kernelEntry = requireFile(kernel, maxKernelBytes);
  const planned = planModules(root, request.modulesDir, modulesToBoot(modulesWanted(root, request), rootFstype));
  const total = planned.reduce((sum, { file }) => sum + file.size, 0);
  if (total > maxModulesBytes)
    throw new ImageReadError(`the modules ramboot needs add up to ${total} bytes, more than the ${maxModulesBytes} nbdmux accepts`);

  // Named by the boot directory, which outlives this build's own.
  const space = new BuildSpace(path.dirname(request.outDir));
  const allocated = [...kernelFs.allocatedBytes([kernelEntry]), ...root.allocatedBytes(planned.map(({ file }) => file))].reduce(
    (sum, bytes) => sum + bytes,
    0,
  );
  space.require(allocated + fs.statSync(request.kitInitrd).size, "copying the image's kernel and modules and the kit's initrd");
  const copies = [
    { entry: kernelEntry, what: request.kernelPath, out: new SparseFile(path.join(request.outDir, 'vmlinuz'), space) },
    ...planned.map(({ module, file }, i) => ({
      entry: file,
      what: module.path,
      out: new SparseFile(path.join(request.outDir, `module-${i}`), space),
    })),
  ];
  try {
    const asked = copies.map(({ entry, what, out }) => ({ entry, what, sink: out.write }));
    // One debugfs run when the kernel lies in the root filesystem, one per filesystem otherwise.
    if (kernelFs === root) await root.copyOut(asked);
    else {
      await kernelFs.copyOut(asked.slice(0, 1));
      await root.copyOut(asked.slice(1));
    }
  } finally {
    for (const { out } of copies) out.close();
  }

  let unpacked = 0;
  const modules: CpioEntry[] = [];
  for (const [i, { module }] of planned.entries()) {
    const copied = copies[i + 1]!.out.path;
    const unpacker = Object.entries(unpackers).find(([suffix]) => module.path.endsWith(suffix))?.[1];
    const plain = unpacker ? await unpack(unpacker, copied, module.path, maxUnpackedBytes - unpacked, space) : copied;
    unpacked += fs.statSync(plain).size;
    if (unpacked > maxUnpackedBytes) throw tooMuchUnpacked(module.path);
    modules.push({ name: `lib/modules/${module.name}.ko`, mode: 0o100644, file: plain });
  }

  const params = new Map(request.kitLoadOrder.map(({ name, params }) => [moduleKey(name), params]));
  const entries: CpioEntry[] = [
    { name: 'lib', mode: 0o040755 },
    { name: 'lib/modules', mode: 0o040755 },
    ...modules,
    {
      name: 'lib/modules/load-order',
      mode: 0o100644,
      data: Buffer.from(planned.map(({ module }) => `${module.name} ${params.get(moduleKey(module.name)) ?? ''}\n`).join('')),
    },
  ];
  const initrd = path.join(request.outDir, 'initrd.img');
  // gzip of what does not compress adds under 0.1 %, headers a few KiB.
  space.require(fs.statSync(request.kitInitrd).size + unpacked * 1.001 + 64 * 1024, 'packing the initramfs');
  try {
    fs.copyFileSync(request.kitInitrd, initrd);
    // Zeros between archives are skipped by the kernel; an uncompressed one would need 4-byte alignment.
    fs.appendFileSync(initrd, Buffer.alloc((4 - (fs.statSync(initrd).size % 4)) % 4));
    await pipeline(Readable.from(cpioChunks(entries)), createGzip({ level: 6 }), fs.createWriteStream(initrd, { flags: 'a' }));
  } catch (err) {
    space.refusedWrite(err);
  }
  return planned.map(({ module }) => module.name);
}

/**
 * Unpacks a module copied out as `packed` into a sparse file beside it, streamed, refused once
 * it passes `allowed` bytes; the packed copy is removed. Returns the unpacked file.
 */
async function unpack(unpacker: string[], packed: string, modulePath: string, allowed: number, space: BuildSpace): Promise<string> {
  const [tool, ...args] = unpacker as [string, ...string[]];
  const out = new SparseFile(`${packed}.ko`, space);
  const unpacking = startStreamingTool('prlimit', [`--as=${unpackerAddressSpace}`, '--', tool, ...args, packed], {
    timeoutMs: unpackTimeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    for await (const chunk of unpacking.child.stdout as AsyncIterable<Buffer>) {
      if (out.size + chunk.length > allowed) throw tooMuchUnpacked(modulePath);
      out.write(chunk);
    }
    const [status, signal] = await unpacking.closed.catch((err: Error) => {
      throw new ImageReadError(`cannot run ${tool} to unpack ${modulePath} (install it): ${err.message}`);
    });
    if (unpacking.timedOut()) throw new ImageReadError(`unpacking ${modulePath} took longer than ${unpackTimeoutMs / 1000} s`);
    if (status !== 0)
      throw new ImageReadError(
        `${modulePath} does not unpack with ${tool} (${signal ?? `exit ${status}`}): ${unpacking.stderr().trim().split('\n').at(-1)?.slice(0, 300) ?? ''}`,
      );
  } finally {
    unpacking.stop();
    out.close();
  }
  fs.rmSync(packed);
  return out.path;
}

/** The machine's NIC cannot be driven by the image's kernel: it boots the kit's, which can. */
export class NoNicDriverError extends ImageReadError {}

/** What ramboot's init loads: the kit's root modules, with its NIC drivers narrowed to the machine's own NIC's when known. */
function modulesWanted(root: FileTree, request: BuildRequest): string[] {
  if (request.nic === null) return request.rootModules;
  const drivers = nicModules(root, request.modulesDir, request.nic, request.deviceAliases);
  if (!drivers.ok)
    throw new NoNicDriverError(`the image's kernel cannot drive the machine's NIC ${nicText(request.nic)}: ${drivers.reason}`);
  const devices = new Set(request.deviceModules.map(moduleKey));
  return [...request.rootModules.filter((name) => !devices.has(moduleKey(name))), ...drivers.modules];
}

function tooMuchUnpacked(modulePath: string): ImageReadError {
  return new ImageReadError(
    `the modules ramboot needs unpack to more than ${maxUnpackedBytes / 1024 / 1024} MiB in all (${modulePath} went past it), more than nbdmux unpacks into an initramfs: look at what the image's modules.dep makes them need`,
  );
}
