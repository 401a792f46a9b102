import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../testkit/daemon.js';
import { makeDebianDisk, makeExt4, makeGptDisk, makeVfat, writeTree, type TreeEntry } from './helpers/images.js';
import { debianImage } from './helpers/qemu.js';

// The built module: the inspection spawns dist/src/inspect/worker.js, as the daemon does.
type InspectModule = typeof import('../src/inspect/index.js');
const built = pathToFileURL(path.resolve('dist/src/inspect/index.js')).href;
const { inspectBootImage, defaultInspectLimits } = (await import(built)) as InspectModule;

const MiB = 1024 * 1024;
const dir = tempDir('nbdmux-inspect-images-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const version = '6.1.0-9-amd64';
const required = ['nbd', 'ext4'];
/** A small root tree shaped like Debian's (merged /usr), with a fake kernel and fake modules. */
function fakeRoot(extra: Record<string, TreeEntry> = {}): Record<string, TreeEntry> {
  const modules = `usr/lib/modules/${version}`;
  return {
    'usr/lib/os-release': 'PRETTY_NAME="Fake Linux 1"\n',
    'etc/os-release': { symlink: '../usr/lib/os-release' },
    lib: { symlink: 'usr/lib' },
    [`boot/vmlinuz-${version}`]: crypto.randomBytes(64 * 1024),
    [`${modules}/modules.dep`]: 'kernel/drivers/block/nbd.ko:\nkernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\n',
    [`${modules}/kernel/drivers/block/nbd.ko`]: 'nbd',
    [`${modules}/kernel/fs/ext4/ext4.ko`]: 'ext4',
    [`${modules}/kernel/fs/jbd2/jbd2.ko`]: 'jbd2',
    ...extra,
  };
}

let counter = 0;
/** A GPT disk, EFI system partition first, root ext4 built from `entries`. */
function gptImage(entries: Record<string, TreeEntry>, tweak?: (tree: string) => void): string {
  const name = `image-${++counter}`;
  const tree = writeTree(path.join(dir, `${name}.tree`), entries);
  tweak?.(tree);
  const root = makeExt4(path.join(dir, `${name}.ext4`), tree, 16);
  return makeGptDisk(path.join(dir, `${name}.img`), [
    { image: esp, sizeMiB: 8, type: 'ef00' },
    { image: root, sizeMiB: 16, type: '8300' },
  ]).file;
}

function inspect(file: string, kernelVersion?: string) {
  return inspectBootImage({ image: { file }, requiredModules: required, kernelVersion });
}

let esp: string;
beforeAll(() => {
  esp = makeVfat(path.join(dir, 'esp.vfat'), 8);
});

describe('inspecting an image', () => {
  it('finds the OS, the kernel with its modules and the root partition of a GPT disk, and never writes to it', async () => {
    const file = gptImage(fakeRoot());
    const before = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    fs.chmodSync(file, 0o444);
    expect(await inspect(file)).toEqual({
      ready: true,
      os: 'Fake Linux 1',
      kernel: version,
      partition: 2,
      fstype: 'ext4',
      reason: null,
      partitionOffset: 9 * MiB,
      kernelOffset: 9 * MiB,
      kernelPath: `/boot/vmlinuz-${version}`,
      kernelSize: 64 * 1024,
      modulesDir: `/usr/lib/modules/${version}`,
      layout: 'gpt/p2 ext4',
      lv: null,
      subvol: null,
      devicesMissing: [],
    });
    expect(crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')).toBe(before);
  });

  it('takes the newest kernel by version order unless one is asked for', async () => {
    const older = `usr/lib/modules/6.1.0-10-amd64`;
    const file = gptImage(
      fakeRoot({
        'boot/vmlinuz-6.1.0-10-amd64': 'k10',
        [`${older}/modules.dep`]: 'kernel/nbd.ko:\nkernel/ext4.ko:\n',
        [`${older}/kernel/nbd.ko`]: 'n',
        [`${older}/kernel/ext4.ko`]: 'e',
      }),
    );
    expect((await inspect(file)).kernel).toBe('6.1.0-10-amd64');
    expect(await inspect(file, version)).toMatchObject({ ready: true, kernel: version, kernelSize: 64 * 1024 });
    expect(await inspect(file, '5.10.0-1-amd64')).toMatchObject({
      ready: false,
      reason: 'the export asks for kernel 5.10.0-1-amd64, but /lib/modules has 6.1.0-10-amd64, 6.1.0-9-amd64',
    });
  });

  it('says why when no kernel has its modules directory', async () => {
    const entries = fakeRoot({ 'boot/vmlinuz-6.1.0-99-amd64': 'k' });
    delete entries[`boot/vmlinuz-${version}`];
    expect(await inspect(gptImage(entries))).toMatchObject({
      ready: false,
      os: 'Fake Linux 1',
      kernel: null,
      reason: `no kernel with a matching /lib/modules/VERSION: /boot has vmlinuz-6.1.0-99-amd64, /lib/modules has ${version}`,
    });
  });

  it('reads a whole-disk filesystem and an MBR-less image of the ramboot kind', async () => {
    const tree = writeTree(path.join(dir, 'whole.tree'), fakeRoot());
    const file = makeExt4(path.join(dir, 'whole.ext4'), tree, 16);
    expect(await inspect(file)).toMatchObject({ ready: true, partition: null, partitionOffset: 0, fstype: 'ext4' });
  });
});

describe('hostile and damaged images: a clear reason, nothing read outside the image filesystem, no hang', () => {
  it.each([
    ['an image of zeros', () => Buffer.alloc(8 * MiB), 'no partition table and no filesystem nbdmux recognises'],
    ['garbage', () => crypto.randomBytes(4 * MiB), 'no partition table and no filesystem nbdmux recognises'],
    [
      'garbage partition entries behind 0x55AA',
      () => {
        const disk = crypto.randomBytes(4 * MiB);
        disk.fill(0x33, 446, 510);
        disk.writeUInt16LE(0xaa55, 510);
        return disk;
      },
      'no partition table and no filesystem nbdmux recognises (sector 0 ends in 0x55AA but its partition entries are not valid MBR entries)',
    ],
  ])('%s', async (_what, bytes, reason) => {
    const file = path.join(dir, `raw-${++counter}.img`);
    fs.writeFileSync(file, bytes());
    expect(await inspect(file)).toMatchObject({ ready: false, partition: null, fstype: null, reason });
  });

  it('a vfat disk: not a Linux root', async () => {
    expect(await inspect(makeVfat(path.join(dir, 'whole.vfat'), 8))).toMatchObject({
      ready: false,
      fstype: 'vfat',
      reason: 'the disk holds vfat, not a Linux root filesystem',
    });
  });

  it('a corrupt ext4 superblock whose magic is intact', async () => {
    const file = gptImage(fakeRoot());
    const fd = fs.openSync(file, 'r+');
    // Blocks, clusters and inodes per group zeroed; the 0xEF53 magic and the size left.
    fs.writeSync(fd, Buffer.alloc(12), 0, 12, 9 * MiB + 1024 + 0x20);
    fs.closeSync(fd);
    expect(await inspect(file)).toMatchObject({
      ready: false,
      partition: 2,
      fstype: 'ext4',
      reason: 'the ext filesystem cannot be opened: The ext2 superblock is corrupt',
    });
  });

  it('an ext4 filesystem claiming more blocks than its partition holds: debugfs would read the next one', async () => {
    const file = gptImage(fakeRoot());
    const fd = fs.openSync(file, 'r+');
    const blocksCount = Buffer.alloc(4);
    blocksCount.writeUInt32LE(16 * 1024 + 1);
    fs.writeSync(fd, blocksCount, 0, 4, 9 * MiB + 1024 + 4);
    fs.closeSync(fd);
    expect(await inspect(file)).toMatchObject({
      ready: false,
      reason: `the ext filesystem claims ${16 * MiB + 1024} bytes, more than the ${16 * MiB} of its partition: it is damaged`,
    });
  });

  it('a 4 GiB sparse "kernel" is refused by its size, never copied', async () => {
    const inspection = await inspect(gptImage(fakeRoot({ [`boot/vmlinuz-${version}`]: { sparseBytes: 4 * 1024 * MiB } })));
    expect(inspection).toMatchObject({
      ready: false,
      kernel: version,
      kernelSize: 4 * 1024 * MiB,
      reason: `/boot/vmlinuz-${version} is 4294967296 bytes, more than the 134217728 nbdmux accepts`,
    });
  });

  it('a symlink loop', async () => {
    const inspection = await inspect(gptImage(fakeRoot({ lib: { symlink: 'lib2' }, lib2: { symlink: '/lib' } })));
    expect(inspection).toMatchObject({ ready: false, reason: 'resolving /lib/modules went through more than 40 symlinks: a symlink loop' });
  });

  it('a directory loop (a directory hard-linked into itself)', async () => {
    const file = gptImage(fakeRoot({ 'boot/vmlinuz-6.1.0-99-amd64': 'k' }));
    // mkfs.ext4 -d cannot make one: debugfs -w links /boot into /boot/boot/... on the test's own image.
    const offset = 9 * MiB;
    execFileSync('debugfs', ['-w', '-R', 'link /boot /boot/again', `${file}?offset=${offset}`], { stdio: 'pipe' });
    execFileSync('debugfs', ['-w', '-R', `link /usr/lib/modules /usr/lib/modules/${version}/kernel/up`, `${file}?offset=${offset}`], {
      stdio: 'pipe',
    });
    expect(
      execFileSync('debugfs', ['-R', 'ls -p /boot/again/again/again', `${file}?offset=${offset}`], { stdio: 'pipe' }).toString(),
    ).toContain('vmlinuz');
    expect(await inspect(file)).toMatchObject({ ready: true, kernel: version });
  });

  it.each([
    ['the image root', '/', `/vmlinuz-${version}`],
    ['../../.. (which stops at the image root, as in the kernel)', '../../..', `/vmlinuz-${version}`],
  ])('/boot symlinked to %s resolves inside the image', async (_what, target, kernelPath) => {
    const entries = fakeRoot({ boot: { symlink: target }, [`vmlinuz-${version}`]: 'kernel at the image root' });
    delete entries[`boot/vmlinuz-${version}`];
    expect(await inspect(gptImage(entries))).toMatchObject({ ready: true, kernelPath, kernelSize: 'kernel at the image root'.length });
  });

  it('modules.dep naming ../../etc/shadow', async () => {
    const inspection = await inspect(
      gptImage(
        fakeRoot({
          [`usr/lib/modules/${version}/modules.dep`]: 'kernel/drivers/block/nbd.ko:\nkernel/fs/ext4/ext4.ko: ../../etc/shadow\n',
        }),
      ),
    );
    expect(inspection).toMatchObject({
      ready: false,
      kernel: version,
      reason: `the image's kernel has no module ext4, which ramboot needs; modules.dep lines refused: "kernel/fs/ext4/ext4.ko: ../../etc/shadow": "../../etc/shadow" is a path climbing out with ".."`,
    });
  });

  it('a module file symlinked out of its modules directory', async () => {
    const inspection = await inspect(
      gptImage(
        fakeRoot({ 'etc/shadow': 'root:secret', [`usr/lib/modules/${version}/kernel/fs/jbd2/jbd2.ko`]: { symlink: '/etc/shadow' } }),
      ),
    );
    expect(inspection).toMatchObject({
      ready: false,
      reason: `/usr/lib/modules/${version}/kernel/fs/jbd2/jbd2.ko leads to /etc/shadow, outside /usr/lib/modules/${version}`,
    });
  });

  it('an inspection that runs out of time or output is stopped, with the reason', async () => {
    const file = gptImage(fakeRoot());
    const slow = await inspectBootImage({ image: { file }, requiredModules: required }, { ...defaultInspectLimits, timeoutMs: 1 });
    expect(slow).toMatchObject({ ready: false, reason: 'the inspection took longer than 0.001 s and was stopped' });
    const chatty = await inspectBootImage({ image: { file }, requiredModules: required }, { ...defaultInspectLimits, maxOutputBytes: 10 });
    expect(chatty).toMatchObject({ ready: false, reason: 'the inspection answered more than 10 bytes and was stopped' });
  });
});

describe('real images', () => {
  it("the kit's busybox test image has no kernel of its own", async () => {
    const kit = execFileSync('ramboot/cached-build', { stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 })
      .toString()
      .trim();
    expect(await inspect(path.join(kit, 'test-gpt.img'))).toMatchObject({
      ready: false,
      partition: 3,
      fstype: 'ext4',
      reason: 'the image has no /lib/modules directory, so no kernel of its own to boot',
    });
  });

  it('a Debian 12 image (mmdebstrap, merged /usr): its own kernel and modules', async () => {
    const disk = makeDebianDisk(await debianImage(1_200_000), dir);
    const { tree, kernelVersion } = disk;
    const started = Date.now();
    const inspection = await inspectBootImage({
      image: { file: disk.file },
      requiredModules: ['virtio_pci', 'virtio_net', 'e1000', 'e1000e', 'igb', 'nbd', 'overlay', 'crc32c_generic', 'ext4'],
    });
    console.log(`inspected the Debian image in ${Date.now() - started} ms`);
    expect(inspection).toEqual({
      ready: true,
      os: 'Debian GNU/Linux 12 (bookworm)',
      kernel: kernelVersion,
      partition: 2,
      fstype: 'ext4',
      reason: null,
      partitionOffset: 9 * MiB,
      kernelOffset: 9 * MiB,
      kernelPath: `/boot/vmlinuz-${kernelVersion}`,
      kernelSize: fs.statSync(path.join(tree, `boot/vmlinuz-${kernelVersion}`)).size,
      modulesDir: `/usr/lib/modules/${kernelVersion}`,
      layout: 'gpt/p2 ext4',
      lv: null,
      subvol: null,
      devicesMissing: [],
    });
    // A cold ramboot/cached-debian-image builds the image first (minutes).
  }, 1_300_000);
});
