import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../src/log.js';
import { BtrfsVolume } from '../src/inspect/btrfs.js';
import { ImageReadError, type FsEntry } from '../src/inspect/file-tree.js';
import { readerOf } from '../src/inspect/inspect-image.js';
import { tempDir } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { makeExt4, makeGptDisk, makeVfat, writeTree, type TreeEntry } from './helpers/images.js';
import { loopDevicesUsable, makeBtrfs, makeBtrfsWithSubvolumes } from './helpers/layout-images.js';

// The built modules: the inspection and the build spawn dist/src/.../worker.js, as the daemon does.
type InspectModule = typeof import('../src/inspect/index.js');
type InitrdModule = typeof import('../src/initrd/index.js');
const { inspectBootImage } = (await import(pathToFileURL(path.resolve('dist/src/inspect/index.js')).href)) as InspectModule;
const { BootFilesCache, readKit } = (await import(pathToFileURL(path.resolve('dist/src/initrd/index.js')).href)) as InitrdModule;

const MiB = 1024 * 1024;
const dir = tempDir('nbdmux-inspect-btrfs-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let counter = 0;
const scratch = (name: string) => path.join(dir, `${++counter}-${name}`);
const version = '6.8.5-301.fc40.x86_64';
const kernel = crypto.randomBytes(300 * 1024);
const fsUuid = 'f0f0f0f0-1111-4222-8333-444455556666';
const bootUuid = 'b0b0b0b0-1111-4222-8333-444455556666';

function withVolume<T>(file: string, body: (volume: BtrfsVolume) => T): T {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    return body(new BtrfsVolume(readerOf(fd, size), 0, size, 'the btrfs filesystem'));
  } finally {
    fs.closeSync(fd);
  }
}

/** A Fedora-like root: merged /usr, systemd as init, its modules (plain .ko: the build copies them as they are). */
function fedoraRoot(options: { fstab?: string; withKernel?: boolean; name?: string } = {}): string {
  const modules = `usr/lib/modules/${version}`;
  return writeTree(scratch('fedora.tree'), {
    'usr/lib/os-release': `PRETTY_NAME="${options.name ?? 'Fedora Linux 40 (Server Edition)'}"\n`,
    'etc/os-release': { symlink: '../usr/lib/os-release' },
    'usr/lib/systemd/systemd': { executable: '#!/bin/sh\n' },
    'usr/sbin/init': { symlink: '../lib/systemd/systemd' },
    sbin: { symlink: 'usr/sbin' },
    lib: { symlink: 'usr/lib' },
    ...(options.fstab === undefined ? {} : { 'etc/fstab': options.fstab }),
    ...(options.withKernel ? { [`boot/vmlinuz-${version}`]: kernel } : { 'boot/.keep': '' }),
    [`${modules}/modules.dep`]: 'kernel/drivers/block/nbd.ko:\nkernel/fs/btrfs/btrfs.ko:\n',
    [`${modules}/kernel/drivers/block/nbd.ko`]: 'nbd module bytes',
    [`${modules}/kernel/fs/btrfs/btrfs.ko`]: 'btrfs module bytes',
  });
}

const inspect = (file: string) => inspectBootImage({ image: { file }, requiredModules: ['nbd'] });

/** Builds the export's boot files from an inspection with a kit that is sent, never booted: what the build reads is the point. */
async function build(file: string, inspection: Awaited<ReturnType<typeof inspect>>) {
  const kit = await readKit(fakeKit(crypto.randomBytes(1024)));
  const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
  const cache = await BootFilesCache.open(scratch('boot-cache'), kit, quiet);
  return cache.filesFor({ exportId: 1, image: { file }, imageIdentity: 'v1', inspection });
}

describe('reading btrfs without mounting', () => {
  const big = crypto.randomBytes(3 * MiB + 123);
  let tree: string;
  let image: string;
  beforeAll(() => {
    const entries: Record<string, TreeEntry> = {
      'big.bin': big,
      'small/a.txt': 'a',
      'link-relative': { symlink: 'small/a.txt' },
      'link-absolute': { symlink: '/small/../big.bin' },
      'loop-a': { symlink: 'loop-b' },
      'loop-b': { symlink: 'loop-a' },
      'sparse.bin': { sparseBytes: 2 * MiB },
    };
    // Enough entries to need several leaves and a node above them.
    for (let i = 0; i < 3000; i++) entries[`many/a-rather-long-module-name-${i}.ko`] = `${i}`;
    tree = writeTree(scratch('tree'), entries);
    image = makeBtrfs(scratch('fs.btrfs'), tree);
  });

  it('lists directories, reads files whole and streams them, and resolves symlinks inside it', async () => {
    await withVolume(image, async (volume) => {
      expect(volume.defaultSubvolume()).toBe(5);
      const fsTree = volume.open(5, 'the btrfs filesystem');
      for (const name of ['/', '/small', '/many']) {
        const found = fsTree.resolve(name)!;
        expect(
          fsTree
            .list(found.entry, found.path)
            .map((e: FsEntry) => e.name)
            .sort(),
        ).toEqual(fs.readdirSync(path.join(tree, name)).sort());
      }
      expect(fsTree.readFile('/big.bin', 4 * MiB)!.equals(big)).toBe(true);
      expect(fsTree.readFile('/link-relative', 10)!.toString()).toBe('a');
      expect(fsTree.readFile('/sparse.bin', 4 * MiB)!.equals(Buffer.alloc(2 * MiB))).toBe(true);
      expect(fsTree.resolve('/link-absolute')?.path).toBe('/big.bin');
      expect(fsTree.resolve('/many/a-rather-long-module-name-2999.ko')?.entry).toMatchObject({ kind: 'file', size: 4 });
      expect(() => fsTree.resolve('/loop-a')).toThrow(/a symlink loop/);
      const chunks: Buffer[] = [];
      const entry = fsTree.resolve('/big.bin')!.entry;
      await fsTree.copyOut([{ entry, what: 'big.bin', sink: (chunk) => chunks.push(chunk) }]);
      expect(Buffer.concat(chunks).equals(big)).toBe(true);
      expect(Math.max(...chunks.map((c) => c.length))).toBeLessThanOrEqual(MiB);
    });
  });

  describe.skipIf(!loopDevicesUsable)('compressed extents (written through a mount: needs root and loop devices)', () => {
    const text = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i} of a compressible file\n`).join(''));
    it.each([
      ['zstd', 3],
      ['zlib', 1],
      ['lzo', 2],
    ] as const)('reads %s-compressed regular and inline extents', (algorithm, type) => {
      const content = writeTree(scratch('compressed.tree'), { 'big.txt': text, 'inline.txt': 'x'.repeat(1500) });
      const file = makeBtrfsWithSubvolumes(scratch('compressed.btrfs'), [{ path: 'data', tree: content, compress: algorithm }]);
      // The fixture holds what it claims: extents of that compression type (btrfs's own dump of subvolume 256).
      const dump = execFileSync('btrfs', ['inspect-internal', 'dump-tree', '-t', '256', file]).toString();
      expect(dump).toContain(`compression ${type}`);
      withVolume(file, (volume) => {
        const data = volume.open(volume.subvolumes().find((s) => s.path === 'data')!.id, 'data');
        expect(data.readFile('/big.txt', MiB)!.equals(text)).toBe(true);
        expect(data.readFile('/inline.txt', MiB)!.toString()).toBe('x'.repeat(1500));
      });
    });
  });

  describe('a damaged or hostile btrfs: a reason, never a hang or a read outside it', () => {
    it('a superblock cut short by the image', async () => {
      const file = scratch('short.img');
      fs.writeFileSync(file, fs.readFileSync(image).subarray(0, 0x10100));
      const started = Date.now();
      expect(await inspect(file)).toMatchObject({
        ready: false,
        fstype: 'btrfs',
        reason: 'the btrfs filesystem is damaged: its superblock is cut short (the partition ends inside it)',
      });
      expect(Date.now() - started).toBeLessThan(5000);
    });

    it('a chunk tree whose root points back at itself', async () => {
      const file = scratch('loop.btrfs');
      fs.copyFileSync(image, file);
      // Where the chunk tree's root lies, as btrfs-progs reads the superblock (first stripe of its system chunk).
      const superblock = execFileSync('btrfs', ['inspect-internal', 'dump-super', '-f', file]).toString();
      const chunkRoot = Number(/^chunk_root\s+(\d+)/m.exec(superblock)![1]);
      const chunkStart = Number(/CHUNK_ITEM (\d+)\)/.exec(superblock)![1]);
      const stripe = Number(/stripe 0 devid 1 offset (\d+)/.exec(superblock)![1]);
      const at = stripe + (chunkRoot - chunkStart);
      const fd = fs.openSync(file, 'r+');
      try {
        // The root becomes a node of level 1 with one pointer: to itself. The superblock says level 1 too.
        const node = Buffer.alloc(0x65 + 33 - 0x60);
        node.writeUInt32LE(1, 0);
        node[4] = 1;
        node.writeBigUInt64LE(BigInt(chunkRoot), 5 + 17);
        fs.writeSync(fd, node, 0, node.length, at + 0x60);
        fs.writeSync(fd, Buffer.from([1]), 0, 1, 0x10000 + 0xc7);
      } finally {
        fs.closeSync(fd);
      }
      const started = Date.now();
      expect((await inspect(file)).reason).toBe(
        `the btrfs filesystem is damaged: the chunk tree has a block at ${chunkRoot} on the wrong level (a loop or a stale pointer)`,
      );
      expect(Date.now() - started).toBeLessThan(5000);
    });

    it('a btrfs without subvolumes or an OS: its top is the root, and the kernel search says what is missing', async () => {
      expect(await inspect(image)).toMatchObject({
        ready: false,
        layout: 'disk btrfs',
        reason: 'the image has no /lib/modules directory, so no kernel of its own to boot',
      });
    });

    it('a btrfs over several devices', () => {
      const file = scratch('multi.btrfs');
      fs.copyFileSync(image, file);
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.from([2]), 0, 1, 0x10000 + 0x88);
      fs.closeSync(fd);
      expect(() => withVolume(file, () => {})).toThrow(
        new ImageReadError(
          'the btrfs filesystem spans 2 devices: nbdmux reads a btrfs on one device only (its other devices are not in this image)',
        ),
      );
    });
  });
});

describe('inspecting images whose root is btrfs', () => {
  it('the default subvolume holding the OS and its kernel: no subvolume to name', async () => {
    const root = makeBtrfs(scratch('root.btrfs'), fedoraRoot({ withKernel: true }), 160, ['-U', fsUuid]);
    const disk = makeGptDisk(scratch('disk.img'), [
      { image: makeVfat(scratch('esp.vfat'), 4), sizeMiB: 4, type: 'ef00' },
      { image: root, sizeMiB: 160, type: '8300' },
    ]);
    const started = Date.now();
    const inspection = await inspect(disk.file);
    console.log(`inspected a btrfs root (default subvolume) in ${Date.now() - started} ms`);
    expect(inspection).toEqual({
      ready: true,
      os: 'Fedora Linux 40 (Server Edition)',
      kernel: version,
      partition: 2,
      fstype: 'btrfs',
      layout: 'gpt/p2 btrfs',
      lv: null,
      subvol: null,
      reason: null,
      partitionOffset: disk.offsets[1],
      kernelOffset: disk.offsets[1],
      kernelPath: `/boot/vmlinuz-${version}`,
      kernelSize: kernel.length,
      modulesDir: `/usr/lib/modules/${version}`,
      devicesMissing: [],
    });
    expect(await build(disk.file, inspection)).toMatchObject({ own: true, reason: null });
  });

  describe.skipIf(!loopDevicesUsable)('named subvolumes (written through a mount: needs root and loop devices)', () => {
    it("Fedora's layout: ESP, an ext4 /boot, a btrfs whose top holds subvolumes root and home; the root's fstab names subvol=root", async () => {
      const fstab = [
        `UUID=${fsUuid} / btrfs subvol=root,compress=zstd:1 0 0`,
        `UUID=${bootUuid} /boot ext4 defaults 1 2`,
        `UUID=${fsUuid} /home btrfs subvol=home,compress=zstd:1 0 0`,
        '',
      ].join('\n');
      const btrfs = makeBtrfsWithSubvolumes(
        scratch('fedora.btrfs'),
        [
          { path: 'root', tree: fedoraRoot({ fstab }), compress: 'zstd' },
          { path: 'home', tree: writeTree(scratch('home.tree'), { 'user/.profile': 'x' }) },
        ],
        { uuid: fsUuid },
      );
      const boot = makeExt4(scratch('boot.ext4'), writeTree(scratch('boot.tree'), { [`vmlinuz-${version}`]: kernel }), 16, [
        '-U',
        bootUuid,
      ]);
      const disk = makeGptDisk(scratch('disk.img'), [
        { image: makeVfat(scratch('esp.vfat'), 4), sizeMiB: 4, type: 'ef00' },
        { image: boot, sizeMiB: 16, type: '8300' },
        { image: btrfs, sizeMiB: 200, type: '8300' },
      ]);
      const started = Date.now();
      const inspection = await inspect(disk.file);
      console.log(`inspected a btrfs root (subvolume root, separate /boot) in ${Date.now() - started} ms`);
      expect(inspection).toEqual({
        ready: true,
        os: 'Fedora Linux 40 (Server Edition)',
        kernel: version,
        partition: 3,
        fstype: 'btrfs',
        layout: 'gpt/p3 btrfs subvol=root, /boot partition 2 ext4',
        lv: null,
        subvol: 'root',
        reason: null,
        partitionOffset: disk.offsets[2],
        kernelOffset: disk.offsets[1],
        kernelPath: `/vmlinuz-${version}`,
        kernelSize: kernel.length,
        // From the default subvolume (the top), where the build opens the filesystem.
        modulesDir: `/root/usr/lib/modules/${version}`,
        devicesMissing: [],
      });
      expect(await build(disk.file, inspection)).toMatchObject({ own: true, reason: null });
    });

    it('/boot as a subvolume of the same btrfs (subvol=boot in the fstab), the kernel only there', async () => {
      const fstab = `UUID=${fsUuid} / btrfs subvol=root 0 0\nUUID=${fsUuid} /boot btrfs subvol=/boot 0 0\n`;
      const btrfs = makeBtrfsWithSubvolumes(
        scratch('bootsubvol.btrfs'),
        [
          { path: 'root', tree: fedoraRoot({ fstab }) },
          { path: 'boot', tree: writeTree(scratch('boot.tree'), { [`vmlinuz-${version}`]: kernel }) },
        ],
        { uuid: fsUuid },
      );
      const disk = makeGptDisk(scratch('disk.img'), [{ image: btrfs, sizeMiB: 200, type: '8300' }]);
      const inspection = await inspect(disk.file);
      expect(inspection).toMatchObject({
        ready: true,
        layout: 'gpt/p1 btrfs subvol=root, /boot subvol=boot',
        subvol: 'root',
        kernelOffset: disk.offsets[0],
        kernelPath: `/boot/vmlinuz-${version}`,
        modulesDir: `/root/usr/lib/modules/${version}`,
      });
      expect(await build(disk.file, inspection)).toMatchObject({ own: true, reason: null });
    });

    it('subvolumes none of which holds an OS: the reason lists them', async () => {
      const btrfs = makeBtrfsWithSubvolumes(scratch('empty.btrfs'), [
        { path: 'data', tree: writeTree(scratch('data.tree'), { a: 'a' }) },
        { path: 'srv', tree: writeTree(scratch('srv.tree'), { b: 'b' }) },
      ]);
      expect(await inspect(btrfs)).toMatchObject({
        ready: false,
        fstype: 'btrfs',
        layout: null,
        reason: "the btrfs's default subvolume holds no OS, and no subvolume does (subvolumes: data, srv)",
      });
    });
  });
});
