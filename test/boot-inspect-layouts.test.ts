import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { Logger } from '../src/log.js';
import { detectFilesystem } from '../src/inspect/filesystems.js';
import { filesystemIdentity } from '../src/inspect/fs-identity.js';
import { entryFor, parseDeviceSpec, parseFstab } from '../src/inspect/fstab.js';
import { readerOf } from '../src/inspect/inspect-image.js';
import { readPartitionTable } from '../src/inspect/partitions.js';
import { tempDir } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { makeExt4, makeGptDisk, makeMbrDisk, makeVfat, writeTree, type TreeEntry } from './helpers/images.js';

// The built modules: the inspection and the build spawn dist/src/.../worker.js, as the daemon does.
type InspectModule = typeof import('../src/inspect/index.js');
type InitrdModule = typeof import('../src/initrd/index.js');
const { inspectBootImage } = (await import(pathToFileURL(path.resolve('dist/src/inspect/index.js')).href)) as InspectModule;
const { BootFilesCache, readKit } = (await import(pathToFileURL(path.resolve('dist/src/initrd/index.js')).href)) as InitrdModule;

const MiB = 1024 * 1024;
const dir = tempDir('nbdmux-inspect-layouts-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const version = '6.12.9-amd64';
const bootUuid = '0b0b0b0b-1111-4222-8333-444455556666';
const kernelBytes = crypto.randomBytes(96 * 1024);

let counter = 0;
const scratch = (name: string) => path.join(dir, `${++counter}-${name}`);

/** A root without kernels of its own (its /boot an empty mount point), its modules, and an /etc/fstab. */
function rootTree(fstab: TreeEntry, extra: Record<string, TreeEntry> = {}): string {
  const modules = `usr/lib/modules/${version}`;
  return writeTree(scratch('root.tree'), {
    'usr/lib/os-release': 'PRETTY_NAME="Layout Linux 9"\n',
    'etc/os-release': { symlink: '../usr/lib/os-release' },
    lib: { symlink: 'usr/lib' },
    'boot/.keep': '',
    'etc/fstab': fstab,
    [`${modules}/modules.dep`]: 'kernel/drivers/block/nbd.ko:\nkernel/fs/ext4/ext4.ko:\n',
    [`${modules}/kernel/drivers/block/nbd.ko`]: 'nbd module bytes',
    [`${modules}/kernel/fs/ext4/ext4.ko`]: 'ext4 module bytes',
    ...extra,
  });
}

/** What an installer lays out: ESP, a /boot partition (ext4, the kernel at its top), the root (ext4, larger). */
function separateBootDisk(fstab: TreeEntry, options: { bootArgs?: string[]; bootTree?: Record<string, TreeEntry>; mbr?: boolean } = {}) {
  const boot = makeExt4(
    scratch('boot.ext4'),
    writeTree(scratch('boot.tree'), options.bootTree ?? { [`vmlinuz-${version}`]: kernelBytes, [`initrd.img-${version}`]: 'initrd' }),
    8,
    options.bootArgs ?? ['-U', bootUuid, '-L', 'BOOTLAB'],
  );
  const root = makeExt4(scratch('root.ext4'), rootTree(fstab), 24);
  const parts = [
    { image: makeVfat(scratch('esp.vfat'), 4), sizeMiB: 4, type: options.mbr ? 'ef' : 'ef00' },
    { image: boot, sizeMiB: 8, type: options.mbr ? '83' : '8300' },
    { image: root, sizeMiB: 24, type: options.mbr ? '83' : '8300' },
  ];
  return options.mbr ? makeMbrDisk(scratch('disk.img'), parts) : makeGptDisk(scratch('disk.img'), parts);
}

function fstabMountingBootFrom(spec: string): string {
  return `# /etc/fstab: static file system information.\n/dev/sda3 / ext4 errors=remount-ro 0 1\n${spec} /boot ext4 defaults 0 2\n/swapfile none swap sw 0 0\n`;
}

/** Writes a filesystem image into a disk at a byte offset, as the disk helpers do. */
function writeAt(disk: string, offset: number, image: string): void {
  execFileSync('dd', [`if=${image}`, `of=${disk}`, `seek=${offset}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);
}

const inspect = (file: string) => inspectBootImage({ image: { file }, requiredModules: ['nbd'] });

describe('fstab, strictly parsed', () => {
  it('reads fields, comments and octal escapes, and takes the last entry for a mount point', () => {
    const fstab = parseFstab('# c\n\nUUID=a / ext4 defaults 0 1\nLABEL=my\\040boot /boot ext4\n  /dev/vda2\t/boot/  xfs  ro,nofail\n');
    expect(fstab.refused).toEqual([]);
    expect(fstab.entries[1]).toEqual({ spec: 'LABEL=my boot', mountPoint: '/boot', fstype: 'ext4', options: ['defaults'] });
    expect(entryFor(fstab, '/boot')).toEqual({ spec: '/dev/vda2', mountPoint: '/boot/', fstype: 'xfs', options: ['ro', 'nofail'] });
    expect(entryFor(fstab, '/home')).toBeUndefined();
  });

  it('refuses lines with too few or too many fields, control characters or overlong fields, and reads a bounded count of lines', () => {
    const fstab = parseFstab(`onlyone\na b c d e f g\nUUID=\u0007x /boot ext4\n${'x'.repeat(2000)} /boot\n`);
    expect(fstab.entries).toEqual([]);
    expect(fstab.refused).toEqual([
      'line 1: 1 fields, where fstab has 2 to 6',
      'line 2: 7 fields, where fstab has 2 to 6',
      'line 3: control characters',
      'line 4: a field longer than 1024 characters',
    ]);
    const huge = parseFstab('/dev/sda9 /srv ext4\n'.repeat(1_000_000));
    expect(huge.entries).toHaveLength(4096);
    expect(huge.refused[0]).toBe('the fstab has more than 4096 lines: only the first 4096 are read');
  });

  it.each([
    ['UUID=0B0B0B0B-1111-4222-8333-444455556666', { by: 'uuid', value: '0B0B0B0B-1111-4222-8333-444455556666' }],
    ['UUID="abc"', { by: 'uuid', value: 'abc' }],
    ['LABEL=boot', { by: 'label', value: 'boot' }],
    ['PARTUUID=1234abcd-02', { by: 'partuuid', value: '1234abcd-02' }],
    ['PARTLABEL=xbootldr', { by: 'partlabel', value: 'xbootldr' }],
    ['/dev/disk/by-label/my\\x20boot', { by: 'label', value: 'my boot' }],
    ['/dev/disk/by-uuid/abc', { by: 'uuid', value: 'abc' }],
    ['/dev/sda2', { by: 'partition', number: 2 }],
    ['/dev/vda15', { by: 'partition', number: 15 }],
    ['/dev/xvdb1', { by: 'partition', number: 1 }],
    ['/dev/nvme0n1p2', { by: 'partition', number: 2 }],
    ['/dev/mmcblk0p1', { by: 'partition', number: 1 }],
  ])('reads the device spec %s', (spec, expected) => {
    expect(parseDeviceSpec(spec)).toEqual(expected);
  });

  it.each([
    ['/dev/mapper/rl-root', /device-mapper or LVM/],
    ['/dev/vg0/root', /device-mapper or LVM/],
    ['/dev/sda', /no device spec nbdmux understands/],
    ['tmpfs', /no device spec nbdmux understands/],
  ])('says why it cannot pair %s', (spec, why) => {
    const parsed = parseDeviceSpec(spec);
    expect(parsed.by).toBe('unknown');
    expect('why' in parsed && parsed.why).toMatch(why);
  });
});

describe('identities, read without mounting, as blkid reads them', () => {
  function blkid(file: string): Record<string, string> {
    const text = execFileSync('blkid', ['-p', '-o', 'export', file]).toString();
    return Object.fromEntries(
      text
        .trim()
        .split('\n')
        .map((line) => line.split(/=(.*)/s).slice(0, 2) as [string, string]),
    );
  }
  function sparse(name: string, bytes: number): string {
    const file = scratch(name);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, bytes);
    return file;
  }
  const cases: [string, () => string][] = [
    ['ext4', () => makeExt4(scratch('id.ext4'), writeTree(scratch('id.tree'), { a: 'a' }), 4, ['-L', 'rootfs'])],
    ['vfat', () => makeVfat(scratch('id.vfat'), 4)],
    [
      'xfs',
      () => {
        const file = sparse('id.xfs', 300 * MiB);
        execFileSync('mkfs.xfs', ['-q', '-L', 'xboot', file]);
        return file;
      },
    ],
    [
      'btrfs',
      () => {
        const file = sparse('id.btrfs', 128 * MiB);
        execFileSync('mkfs.btrfs', ['-q', '-L', 'fedora', file], { stdio: 'pipe' });
        return file;
      },
    ],
  ];
  it.each(cases)('%s: UUID and label', (fstype, make) => {
    const file = make();
    const fd = fs.openSync(file, 'r');
    try {
      const read = readerOf(fd, fs.fstatSync(fd).size);
      const found = detectFilesystem(read, 0);
      expect(found).toBe(fstype);
      const expected = blkid(file);
      expect(filesystemIdentity(read, 0, found!)).toEqual({ uuid: expected.UUID, label: expected.LABEL ?? null });
    } finally {
      fs.closeSync(fd);
    }
  });

  it('gives each partition the PARTUUID and PARTLABEL the kernel gives it, GPT and MBR', () => {
    const gpt = makeGptDisk(scratch('ids-gpt.img'), [
      { sizeMiB: 2, type: 'ef00' },
      { sizeMiB: 2, type: '8300' },
    ]).file;
    execFileSync('sgdisk', ['-c', '2:xbootldr', gpt], { stdio: 'pipe' });
    const mbr = scratch('ids-mbr.img');
    fs.writeFileSync(mbr, '');
    fs.truncateSync(mbr, 8 * MiB);
    execFileSync('sfdisk', ['-q', mbr], {
      input: 'label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=2048, type=83\nstart=4096, size=2048, type=83\n',
    });
    const sfdisk = JSON.parse(execFileSync('sfdisk', ['-J', gpt]).toString()) as { partitiontable: { partitions: { uuid: string }[] } };
    const tableOf = (file: string) => {
      const fd = fs.openSync(file, 'r');
      try {
        return readPartitionTable(readerOf(fd, fs.fstatSync(fd).size), fs.fstatSync(fd).size);
      } finally {
        fs.closeSync(fd);
      }
    };
    expect(tableOf(gpt).partitions.map(({ partuuid, partlabel }) => ({ partuuid, partlabel }))).toEqual([
      { partuuid: sfdisk.partitiontable.partitions[0]!.uuid.toLowerCase(), partlabel: null },
      { partuuid: sfdisk.partitiontable.partitions[1]!.uuid.toLowerCase(), partlabel: 'xbootldr' },
    ]);
    expect(tableOf(mbr).partitions.map(({ partuuid, partlabel }) => ({ partuuid, partlabel }))).toEqual([
      { partuuid: '1234abcd-01', partlabel: null },
      { partuuid: '1234abcd-02', partlabel: null },
    ]);
  });
});

describe('a separate /boot partition', () => {
  it.each([
    ['UUID=', () => `UUID=${bootUuid}`],
    ['LABEL=', () => 'LABEL=BOOTLAB'],
    ['a /dev/disk/by-uuid link, upper case', () => `/dev/disk/by-uuid/${bootUuid.toUpperCase()}`],
    ['a device name', () => '/dev/sda2'],
  ])("pairs /boot by %s and boots the kernel there with the root's modules", async (_, spec) => {
    const disk = separateBootDisk(fstabMountingBootFrom(spec()));
    expect(await inspect(disk.file)).toEqual({
      ready: true,
      os: 'Layout Linux 9',
      kernel: version,
      partition: 3,
      fstype: 'ext4',
      layout: 'gpt/p3 ext4, /boot partition 2 ext4',
      lv: null,
      subvol: null,
      reason: null,
      partitionOffset: disk.offsets[2],
      kernelOffset: disk.offsets[1],
      kernelPath: `/vmlinuz-${version}`,
      kernelSize: kernelBytes.length,
      modulesDir: `/usr/lib/modules/${version}`,
      devicesMissing: [],
    });
  });

  it('pairs /boot by PARTUUID= on GPT and on MBR', async () => {
    const gpt = separateBootDisk('');
    const sfdisk = JSON.parse(execFileSync('sfdisk', ['-J', gpt.file]).toString()) as {
      partitiontable: { partitions: { uuid: string }[] };
    };
    const gptDisk = separateBootDisk(fstabMountingBootFrom(`PARTUUID=${sfdisk.partitiontable.partitions[1]!.uuid}`));
    // A second disk of the same layout: sgdisk gave it other partition GUIDs, so the spec must not match.
    expect(await inspect(gptDisk.file)).toMatchObject({
      ready: false,
      reason: expect.stringMatching(/no partition of the image is PARTUUID=/),
    });
    const own = JSON.parse(execFileSync('sfdisk', ['-J', gptDisk.file]).toString()) as {
      partitiontable: { partitions: { uuid: string }[] };
    };
    const root = rootTree(fstabMountingBootFrom(`PARTUUID=${own.partitiontable.partitions[1]!.uuid}`));
    writeAt(gptDisk.file, gptDisk.offsets[2]!, makeExt4(scratch('root.ext4'), root, 24));
    expect(await inspect(gptDisk.file)).toMatchObject({ ready: true, kernelOffset: gptDisk.offsets[1] });

    const mbrDisk = separateBootDisk('', { mbr: true });
    const { id } = (JSON.parse(execFileSync('sfdisk', ['-J', mbrDisk.file]).toString()) as { partitiontable: { id: string } })
      .partitiontable;
    const mbrRoot = rootTree(fstabMountingBootFrom(`PARTUUID=${id.replace(/^0x/, '')}-02`));
    writeAt(mbrDisk.file, mbrDisk.offsets[2]!, makeExt4(scratch('root.ext4'), mbrRoot, 24));
    expect(await inspect(mbrDisk.file)).toMatchObject({ ready: true, partition: 3, kernelOffset: mbrDisk.offsets[1] });
  });

  it("copies the kernel out of the /boot partition and the modules out of the root into the export's boot files", async () => {
    const disk = separateBootDisk(fstabMountingBootFrom(`UUID=${bootUuid}`));
    const inspection = await inspect(disk.file);
    expect(inspection.ready).toBe(true);
    const kit = await readKit(fakeKit(crypto.randomBytes(1024)));
    const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
    const cache = await BootFilesCache.open(scratch('boot-cache'), kit, quiet);
    const files = await cache.filesFor({ exportId: 1, image: { file: disk.file }, imageIdentity: 'v1', inspection });
    expect(files).toMatchObject({ own: true, reason: null });
    expect(fs.readFileSync(files.kernel).equals(kernelBytes)).toBe(true);
    const kitBytes = fs.statSync(kit.initrd).size;
    const appendedAt = kitBytes + ((4 - (kitBytes % 4)) % 4);
    const listing = execFileSync('sh', [
      '-c',
      `tail -c +${appendedAt + 1} "$1" | gzip -dc | cpio -t --quiet`,
      'sh',
      files.initrd,
    ]).toString();
    expect(listing.split('\n')).toContain('lib/modules/nbd.ko');
  });

  describe('hostile or broken pairings: a clear reason, no hang', () => {
    it('an fstab naming a /boot no partition has, with no kernel in the root', async () => {
      const disk = separateBootDisk(fstabMountingBootFrom('UUID=99999999-0000-4000-8000-000000000000'));
      const found = await inspect(disk.file);
      expect(found).toMatchObject({ ready: false, kernel: null, partition: 3, fstype: 'ext4', os: 'Layout Linux 9' });
      expect(found.reason).toBe(
        `no kernel with a matching /lib/modules/VERSION: /boot has no vmlinuz-*, /lib/modules has ${version}; /etc/fstab mounts /boot from UUID=99999999-0000-4000-8000-000000000000: no partition of the image is UUID=99999999-0000-4000-8000-000000000000`,
      );
    });

    it('two partitions carrying the label the fstab names', async () => {
      const disk = separateBootDisk(fstabMountingBootFrom('LABEL=twin'), { bootArgs: ['-L', 'twin'] });
      // The root gets the same label: which one /boot is cannot be told.
      const root = makeExt4(scratch('root.ext4'), rootTree(fstabMountingBootFrom('LABEL=twin')), 24, ['-L', 'twin']);
      writeAt(disk.file, disk.offsets[2]!, root);
      expect((await inspect(disk.file)).reason).toMatch(/partitions 2, 3 are all LABEL=twin, so it is ambiguous$/);
    });

    it('an fstab of a million lines is refused by its size, unread', async () => {
      const disk = separateBootDisk('/dev/sda9 /srv ext4\n'.repeat(1_000_000));
      const found = await inspect(disk.file);
      expect(found.reason).toMatch(
        /the root's \/etc\/fstab cannot be read: \/etc\/fstab is 20000000 bytes, more than the 65536 nbdmux accepts$/,
      );
    });

    it('an fstab that is a symlink loop', async () => {
      const root = rootTree({ symlink: 'fstab2' }, { 'etc/fstab2': { symlink: 'fstab' } });
      const disk = separateBootDisk('');
      writeAt(disk.file, disk.offsets[2]!, makeExt4(scratch('root.ext4'), root, 24));
      expect((await inspect(disk.file)).reason).toMatch(
        /\/etc\/fstab cannot be read: resolving \/etc\/fstab went through more than 40 symlinks: a symlink loop$/,
      );
    });

    it('a /boot partition whose superblock is corrupt', async () => {
      const disk = separateBootDisk(fstabMountingBootFrom('/dev/sda2'));
      // Blocks, clusters and inodes per group zeroed; the magic, UUID and size left: it still pairs.
      const fd = fs.openSync(disk.file, 'r+');
      fs.writeSync(fd, Buffer.alloc(12), 0, 12, disk.offsets[1]! + 1024 + 0x20);
      fs.closeSync(fd);
      expect(await inspect(disk.file)).toMatchObject({
        ready: false,
        reason: "the /boot partition 2's ext filesystem cannot be opened: The ext2 superblock is corrupt",
      });
    });

    it('a /boot partition claiming more blocks than it holds', async () => {
      const disk = separateBootDisk(fstabMountingBootFrom('/dev/sda2'));
      const countAt = disk.offsets[1]! + 1024 + 4;
      const fd = fs.openSync(disk.file, 'r+');
      const blocks = Buffer.alloc(4);
      blocks.writeUInt32LE(1_000_000);
      fs.writeSync(fd, blocks, 0, 4, countAt);
      fs.closeSync(fd);
      expect((await inspect(disk.file)).reason).toMatch(
        /the \/boot partition 2's ext filesystem claims \d+ bytes, more than the 8388608 of its partition: it is damaged$/,
      );
    });
  });
});
