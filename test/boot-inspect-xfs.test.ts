import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../src/log.js';
import { ImageReadError, type FsEntry } from '../src/inspect/file-tree.js';
import { readerOf } from '../src/inspect/inspect-image.js';
import { XfsFilesystem } from '../src/inspect/xfs.js';
import { tempDir } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { makeGptDisk, makeVfat, makeXfs, writeTree, type TreeEntry } from './helpers/images.js';

// The built modules: the inspection and the build spawn dist/src/.../worker.js, as the daemon does.
type InspectModule = typeof import('../src/inspect/index.js');
type InitrdModule = typeof import('../src/initrd/index.js');
const { inspectBootImage } = (await import(pathToFileURL(path.resolve('dist/src/inspect/index.js')).href)) as InspectModule;
const { BootFilesCache, readKit } = (await import(pathToFileURL(path.resolve('dist/src/initrd/index.js')).href)) as InitrdModule;

const MiB = 1024 * 1024;
const dir = tempDir('nbdmux-inspect-xfs-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let counter = 0;
const scratch = (name: string) => path.join(dir, `${++counter}-${name}`);

/** Runs `body` with the xfs reader over `file` from `offset`. */
function withXfs<T>(file: string, body: (xfs: XfsFilesystem) => T, offset = 0): T {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    return body(new XfsFilesystem(readerOf(fd, size), offset, size - offset, 'the xfs filesystem'));
  } finally {
    fs.closeSync(fd);
  }
}

/** xfs_db in expert mode on a standalone filesystem image: how a test damages one on purpose. */
function xfsDb(file: string, ...commands: string[]): string {
  return execFileSync('xfs_db', ['-x', ...commands.flatMap((c) => ['-c', c]), file]).toString();
}

describe('reading xfs without mounting', () => {
  const big = crypto.randomBytes(3 * MiB + 123);
  const longTarget = `${'./'.repeat(300)}big.bin`;
  let image: string;
  let tree: string;
  beforeAll(() => {
    const entries: Record<string, TreeEntry> = {
      'big.bin': big,
      'small/a.txt': 'a',
      'small/b.txt': 'bb',
      'link-inline': { symlink: 'small/a.txt' },
      'link-remote': { symlink: longTarget },
      'link-absolute': { symlink: '/small/../big.bin' },
      'loop-a': { symlink: 'loop-b' },
      'loop-b': { symlink: 'loop-a' },
    };
    for (let i = 0; i < 60; i++) entries[`block/entry-${i}`] = `${i}`;
    for (let i = 0; i < 3000; i++) entries[`node/a-rather-long-file-name-to-spill-over-blocks-${i}.ko`] = `${i}`;
    tree = writeTree(scratch('tree'), entries);
    image = makeXfs(scratch('fs.xfs'), tree);
  });

  it('lists short-form, block and leaf/node directories as the tree they were built from', () => {
    withXfs(image, (xfs) => {
      for (const name of ['/', '/small', '/block', '/node']) {
        const found = xfs.resolve(name)!;
        expect(found.entry.kind).toBe('directory');
        const listed = xfs.list(found.entry, found.path);
        expect(listed.map((e: FsEntry) => e.name).sort()).toEqual(fs.readdirSync(path.join(tree, name)).sort());
      }
      expect(xfs.resolve('/node/a-rather-long-file-name-to-spill-over-blocks-2999.ko')?.entry).toMatchObject({ kind: 'file', size: 4 });
    });
  });

  it('reads files whole and resolves inline and absolute symlinks inside the filesystem', async () => {
    withXfs(image, (xfs) => {
      expect(xfs.readFile('/big.bin', 4 * MiB)!.equals(big)).toBe(true);
      expect(xfs.readFile('/link-inline', 10)!.toString()).toBe('a');
      expect(xfs.resolve('/link-absolute')?.path).toBe('/big.bin');
      expect(xfs.resolve('/missing/file')).toBeNull();
      expect(() => xfs.resolve('/loop-a')).toThrow(/a symlink loop/);
      expect(() => xfs.readFile('/big.bin', MiB)).toThrow(`/big.bin is ${big.length} bytes, more than the ${MiB} nbdmux accepts`);
    });
    const chunks: Buffer[] = [];
    await withXfs(image, (xfs) => {
      const entry = xfs.resolve('/big.bin')!.entry;
      expect(xfs.allocatedBytes([entry])[0]).toBeGreaterThanOrEqual(big.length);
      return xfs.copyOut([{ entry, what: 'big.bin', sink: (chunk) => chunks.push(chunk) }]);
    });
    expect(Buffer.concat(chunks).equals(big)).toBe(true);
    expect(Math.max(...chunks.map((c) => c.length))).toBeLessThanOrEqual(MiB);
  });

  describe('a damaged or hostile xfs: a reason, never a read outside it', () => {
    function damagedCopy(...commands: string[]): string {
      const file = scratch('damaged.xfs');
      fs.copyFileSync(image, file);
      xfsDb(file, ...commands);
      return file;
    }
    const reasonOf = (file: string, body: (xfs: XfsFilesystem) => unknown) => {
      try {
        withXfs(file, body);
      } catch (err) {
        if (err instanceof ImageReadError) return err.message;
        throw err;
      }
      return 'no error';
    };

    it('a superblock with no allocation groups', () => {
      expect(reasonOf(damagedCopy('sb 0', 'write -d agcount 0'), () => {})).toBe(
        'the xfs filesystem is damaged: its superblock is inconsistent (block, inode or allocation group sizes)',
      );
    });

    it('a superblock claiming more blocks than the partition', () => {
      const file = scratch('short.xfs');
      fs.copyFileSync(image, file);
      fs.truncateSync(file, 200 * MiB);
      expect(reasonOf(file, () => {})).toMatch(
        /^the xfs filesystem is damaged: it claims 314572800 bytes, more than the 209715200 of its partition$/,
      );
    });

    it('a file of 8 EiB or of 1 GiB: refused by its size before a read', () => {
      const ino = /= (\d+)/.exec(xfsDb(image, 'path /big.bin', 'print v3.inumber'))![1];
      const huge = damagedCopy('path /big.bin', 'write -d core.size 9223372036854775807');
      expect(reasonOf(huge, (xfs) => xfs.readFile('/big.bin', 128 * MiB))).toBe(
        `the xfs filesystem is damaged: inode ${ino} claims a size of 9223372036854776000`,
      );
      const large = damagedCopy('path /big.bin', `write -d core.size ${1024 * MiB}`);
      expect(reasonOf(large, (xfs) => xfs.readFile('/big.bin', 128 * MiB))).toBe(
        `/big.bin is ${1024 * MiB} bytes, more than the ${128 * MiB} nbdmux accepts`,
      );
    });

    it('an extent pointing past the filesystem', () => {
      const file = damagedCopy('path /big.bin', 'write -d u3.bmx[0].startblock 4503599627370495');
      expect(reasonOf(file, (xfs) => xfs.readFile('/big.bin', 4 * MiB))).toBe(
        'the xfs filesystem is damaged: /big.bin points outside the filesystem',
      );
    });

    it('a directory inode whose magic is gone', () => {
      const ino = /= (\d+)/.exec(xfsDb(image, 'path /small', 'print v3.inumber'))![1];
      const file = damagedCopy('path /small', 'write -d core.magic 0');
      expect(reasonOf(file, (xfs) => xfs.resolve('/small/a.txt'))).toBe(`the xfs filesystem is damaged: inode ${ino} has no inode magic`);
    });

    it('a remote symlink block without its header (as mkfs.xfs 6.1 writes them from a protofile; the kernel refuses it too)', () => {
      expect(reasonOf(image, (xfs) => xfs.resolve('/link-remote'))).toBe(
        'the xfs filesystem is damaged: the symlink /link-remote has a bad block',
      );
    });
  });
});

describe('inspecting images whose root is xfs', () => {
  const version = '5.14.0-427.el9.x86_64';
  const kernel = crypto.randomBytes(200 * 1024);
  const bootUuid = '5ca1ab1e-0000-4000-8000-00000000b007';
  /** A RHEL-like root: merged /usr, modules only, its kernel on /boot. */
  function rhelRoot(fstab: string | null, withKernel = false): string {
    const modules = `usr/lib/modules/${version}`;
    return writeTree(scratch('rhel.tree'), {
      'usr/lib/os-release': 'NAME="Rocky Linux"\nVERSION_ID="9.4"\n',
      'etc/os-release': { symlink: '../usr/lib/os-release' },
      lib: { symlink: 'usr/lib' },
      ...(fstab === null ? {} : { 'etc/fstab': fstab }),
      ...(withKernel ? { [`boot/vmlinuz-${version}`]: kernel } : { 'boot/.keep': '' }),
      [`${modules}/modules.dep`]: 'kernel/drivers/block/nbd.ko.xz:\nkernel/fs/xfs/xfs.ko.xz:\n',
      [`${modules}/kernel/drivers/block/nbd.ko.xz`]: 'nbd',
      [`${modules}/kernel/fs/xfs/xfs.ko.xz`]: 'xfs',
    });
  }
  function disk(parts: { image: string; sizeMiB: number; type: string }[]) {
    return makeGptDisk(scratch('disk.img'), [{ image: makeVfat(scratch('esp.vfat'), 4), sizeMiB: 4, type: 'ef00' }, ...parts]);
  }
  const inspect = (file: string) => inspectBootImage({ image: { file }, requiredModules: ['nbd'] });

  it('an xfs root with its kernel in its own /boot', async () => {
    const image = disk([{ image: makeXfs(scratch('root.xfs'), rhelRoot(null, true)), sizeMiB: 300, type: '8300' }]);
    const started = Date.now();
    const found = await inspect(image.file);
    console.log(`inspected an xfs root in ${Date.now() - started} ms`);
    expect(found).toEqual({
      ready: true,
      os: 'Rocky Linux 9.4',
      kernel: version,
      partition: 2,
      fstype: 'xfs',
      layout: 'gpt/p2 xfs',
      lv: null,
      subvol: null,
      reason: null,
      partitionOffset: image.offsets[1],
      kernelOffset: image.offsets[1],
      kernelPath: `/boot/vmlinuz-${version}`,
      kernelSize: kernel.length,
      modulesDir: `/usr/lib/modules/${version}`,
      devicesMissing: [],
    });
  });

  it("Rocky's layout without LVM: ESP, an xfs /boot by UUID, an xfs root; the boot files come from both", async () => {
    const boot = makeXfs(scratch('boot.xfs'), writeTree(scratch('boot.tree'), { [`vmlinuz-${version}`]: kernel }), 300, [
      '-m',
      `uuid=${bootUuid}`,
    ]);
    const fstab = `UUID=0 / xfs defaults 0 0\nUUID=${bootUuid} /boot xfs defaults 0 0\n`;
    const image = disk([
      { image: boot, sizeMiB: 300, type: '8300' },
      { image: makeXfs(scratch('root.xfs'), rhelRoot(fstab), 400), sizeMiB: 400, type: '8300' },
    ]);
    const started = Date.now();
    const inspection = await inspect(image.file);
    console.log(`inspected an xfs root with an xfs /boot in ${Date.now() - started} ms`);
    expect(inspection).toMatchObject({
      ready: true,
      partition: 3,
      fstype: 'xfs',
      kernelOffset: image.offsets[1],
      kernelPath: `/vmlinuz-${version}`,
      reason: null,
    });
    const kit = await readKit(fakeKit(crypto.randomBytes(1024)));
    const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
    const cache = await BootFilesCache.open(scratch('boot-cache'), kit, quiet);
    // The module is no real xz stream: the build reaches the unpacking, past reading both filesystems.
    const files = await cache.filesFor({ exportId: 1, image: { file: image.file }, imageIdentity: 'v1', inspection });
    expect(files).toMatchObject({
      own: false,
      reason: expect.stringMatching(/^kernel\/drivers\/block\/nbd\.ko\.xz does not unpack with xz/),
    });
  });
});
