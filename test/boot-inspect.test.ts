import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { detectFilesystem, extFilesystemBytes, type ReadAt } from '../src/inspect/filesystems.js';
import { readerOf } from '../src/inspect/inspect-image.js';
import { compareKernelVersions, newestKernelVersion } from '../src/inspect/kernel-version.js';
import { loadOrder, parseModulesBuiltin, parseModulesDep, unsafeModulePath } from '../src/inspect/modules-dep.js';
import { osNameOf } from '../src/inspect/os-release.js';
import { chooseRoot, readPartitionTable } from '../src/inspect/partitions.js';
import { tempDir } from '../testkit/daemon.js';
import { makeExt4, makeGptDisk, makeMbrDisk, makeVfat, writeTree } from './helpers/images.js';

const MiB = 1024 * 1024;
const guid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const dir = tempDir('nbdmux-inspect-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function readerOfBuffer(buffer: Buffer): ReadAt {
  return (offset, length) => buffer.subarray(Math.max(0, offset), Math.max(0, Math.min(buffer.length, offset + length)));
}

function withFile<T>(file: string, body: (read: ReadAt, size: number) => T): T {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    return body(readerOf(fd, size), size);
  } finally {
    fs.closeSync(fd);
  }
}

/** A sector 0 with MBR entries [status, type, startSector, sectors] and the 0x55AA signature. */
function mbr(entries: [number, number, number, number][], disk = Buffer.alloc(64 * MiB)): Buffer {
  entries.forEach(([status, type, start, sectors], i) => {
    const at = 446 + 16 * i;
    disk[at] = status;
    disk[at + 4] = type;
    disk.writeUInt32LE(start, at + 8);
    disk.writeUInt32LE(sectors, at + 12);
  });
  disk.writeUInt16LE(0xaa55, 510);
  return disk;
}

const ext4 = makeExt4(path.join(dir, 'root.ext4'), writeTree(path.join(dir, 'tree'), { 'etc/hostname': 'x\n' }), 24);
const esp = makeVfat(path.join(dir, 'esp.vfat'), 34);

describe('partition tables', () => {
  it('reads a GPT disk made by sgdisk, numbering partitions as the kernel does', () => {
    const disk = makeGptDisk(path.join(dir, 'gpt.img'), [
      { image: esp, sizeMiB: 34, type: 'ef00' },
      { image: ext4, sizeMiB: 24, type: '8300' },
    ]);
    const table = withFile(disk.file, readPartitionTable);
    expect(table).toEqual({
      scheme: 'gpt',
      partitions: [
        { number: 1, offset: disk.offsets[0], size: 34 * MiB, partuuid: expect.stringMatching(guid), partlabel: null },
        { number: 2, offset: disk.offsets[1], size: 24 * MiB, partuuid: expect.stringMatching(guid), partlabel: null },
      ],
      problems: [],
    });
  });

  it('falls back to the backup GPT header when the primary is corrupt', () => {
    const file = path.join(dir, 'gpt-backup.img');
    fs.copyFileSync(path.join(dir, 'gpt.img'), file);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from('garbage!'), 0, 8, 512 + 24);
    fs.closeSync(fd);
    expect(withFile(file, readPartitionTable).partitions.map((p) => p.number)).toEqual([1, 2]);
  });

  it('reads an MBR disk made by sfdisk', () => {
    const disk = makeMbrDisk(path.join(dir, 'mbr.img'), [
      { image: esp, sizeMiB: 34, type: 'ef' },
      { image: ext4, sizeMiB: 24, type: '83' },
    ]);
    expect(withFile(disk.file, readPartitionTable).partitions).toEqual([
      { number: 1, offset: disk.offsets[0], size: 34 * MiB, partuuid: expect.stringMatching(/^[0-9a-f]{8}-01$/), partlabel: null },
      { number: 2, offset: disk.offsets[1], size: 24 * MiB, partuuid: expect.stringMatching(/^[0-9a-f]{8}-02$/), partlabel: null },
    ]);
  });

  it.each([
    ['zeros', Buffer.alloc(MiB), []],
    ['random bytes without a signature', Buffer.alloc(MiB, 0xab), []],
    [
      'garbage ending in 0x55AA',
      mbr([], Buffer.alloc(MiB, 0xab)),
      ['sector 0 ends in 0x55AA but its partition entries are not valid MBR entries'],
    ],
    [
      'a protective MBR with no GPT behind it',
      mbr([[0, 0xee, 1, 2047]]),
      ['a protective MBR announces a GPT, but neither GPT header is valid'],
    ],
  ])('finds no table in %s', (_what, disk, problems) => {
    expect(readPartitionTable(readerOfBuffer(disk), disk.length)).toEqual({ scheme: 'none', partitions: [], problems });
  });

  it('takes a FAT boot sector, which also ends in 0x55AA, for a filesystem and not a partition table', () => {
    const table = withFile(esp, readPartitionTable);
    expect(table.scheme).toBe('none');
    expect(withFile(esp, (read) => detectFilesystem(read, 0))).toBe('vfat');
  });

  it('leaves out entries past the disk end and entries overlapping an earlier one', () => {
    const disk = mbr([
      [0x80, 0x83, 2048, 2048],
      [0, 0x83, 3000, 2048],
      [0, 0x83, 8192, 1 << 30],
      [0, 0x83, 16384, 2048],
    ]);
    expect(readPartitionTable(readerOfBuffer(disk), disk.length)).toEqual({
      scheme: 'mbr',
      partitions: [
        { number: 1, offset: 2048 * 512, size: MiB, partuuid: '00000000-01', partlabel: null },
        { number: 4, offset: 16384 * 512, size: MiB, partuuid: '00000000-04', partlabel: null },
      ],
      problems: ['partition 2 overlaps another: ignored', "partition 3 ends past the disk's end: ignored"],
    });
  });

  it('follows logical partitions and stops an extended chain that loops', () => {
    const disk = mbr([[0, 0x05, 2048, 40960]]);
    const ebr = 2048 * 512;
    // The first EBR: a logical partition, and a "next" pointing back at itself.
    disk[ebr + 446 + 4] = 0x83;
    disk.writeUInt32LE(2048, ebr + 446 + 8);
    disk.writeUInt32LE(4096, ebr + 446 + 12);
    disk.writeUInt32LE(0, ebr + 462 + 8);
    disk.writeUInt16LE(0xaa55, ebr + 510);
    expect(readPartitionTable(readerOfBuffer(disk), disk.length).partitions).toEqual([
      { number: 5, offset: ebr + MiB, size: 2 * MiB, partuuid: '00000000-05', partlabel: null },
    ]);
    // Now "next" leads to a second EBR whose own "next" leads to itself.
    disk[ebr + 462 + 4] = 0x05;
    disk.writeUInt32LE(1, ebr + 462 + 8);
    const secondEbr = ebr + 512;
    disk.copy(disk, secondEbr, ebr, ebr + 512);
    disk.writeUInt32LE(0, secondEbr + 446 + 12);
    disk.writeUInt32LE(1, secondEbr + 462 + 8);
    expect(readPartitionTable(readerOfBuffer(disk), disk.length).problems).toEqual([
      `the extended partition's chain loops back to byte ${secondEbr}`,
    ]);
  });

  it('refuses a GPT announcing a huge entry array instead of reading it', () => {
    const disk = mbr([[0, 0xee, 1, 0xffffffff]]);
    const header = Buffer.alloc(92);
    header.write('EFI PART', 0, 'latin1');
    header.writeUInt32LE(92, 12);
    header.writeBigUInt64LE(34n, 40);
    header.writeBigUInt64LE(100000n, 48);
    header.writeBigUInt64LE(2n, 72);
    header.writeUInt32LE(0xffffffff, 80);
    header.writeUInt32LE(128, 84);
    header.writeUInt32LE(crc32(header), 16);
    header.copy(disk, 512);
    expect(readPartitionTable(readerOfBuffer(disk), disk.length)).toEqual({
      scheme: 'gpt',
      partitions: [],
      problems: ['the GPT announces 4294967295 entries of 128 bytes: not a table nbdmux reads'],
    });
  });
});

describe('filesystems and the root choice', () => {
  it.each(['ext2', 'ext3', 'ext4'])('tells %s by its superblock', (type) => {
    const file = path.join(dir, `fs.${type}`);
    execFileSync(`mkfs.${type}`, ['-q', '-F', file, '8M'], { stdio: 'pipe' });
    expect(withFile(file, (read) => detectFilesystem(read, 0))).toBe(type);
  });

  it.each([
    ['xfs', 0, 'XFSB'],
    ['btrfs', 0x10040, '_BHRfS_M'],
  ])('tells %s by its magic', (type, at, magic) => {
    const disk = Buffer.alloc(MiB);
    disk.write(magic, at, 'latin1');
    expect(detectFilesystem(readerOfBuffer(disk), 0)).toBe(type);
  });

  it('picks the largest partition holding a Linux filesystem, not the larger EFI system partition first', () => {
    const chosen = withFile(path.join(dir, 'gpt.img'), (read, size) => chooseRoot(read, readPartitionTable(read, size), size));
    expect(chosen).toEqual({ found: true, partition: 2, offset: 35 * MiB, size: 24 * MiB, fstype: 'ext4' });
    expect(withFile(path.join(dir, 'gpt.img'), (read) => extFilesystemBytes(read, 35 * MiB))).toBe(24 * MiB);
  });

  it('picks the whole disk when it holds the filesystem', () => {
    expect(withFile(ext4, (read, size) => chooseRoot(read, readPartitionTable(read, size), size))).toEqual({
      found: true,
      partition: null,
      offset: 0,
      size: 24 * MiB,
      fstype: 'ext4',
    });
  });

  it('says which partitions it saw when none holds a Linux filesystem', () => {
    const disk = makeGptDisk(path.join(dir, 'esp-only.img'), [
      { image: esp, sizeMiB: 34, type: 'ef00' },
      { sizeMiB: 4, type: '8300' },
    ]);
    expect(withFile(disk.file, (read, size) => chooseRoot(read, readPartitionTable(read, size), size))).toEqual({
      found: false,
      partition: null,
      fstype: null,
      reason: 'no partition holds a Linux filesystem (partitions 1: vfat, 2: unknown)',
    });
  });
});

describe('os-release', () => {
  it.each([
    ['PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n', 'Debian GNU/Linux 12 (bookworm)'],
    ["NAME='Alpine Linux'\nVERSION_ID=3.20.1\n", 'Alpine Linux 3.20.1'],
    ['ID=arch\n', 'arch'],
    ['PRETTY_NAME="say \\"hi\\""\n', 'say "hi"'],
    ['PRETTY_NAME="a\x1b[2Jb"\n', 'a[2Jb'],
    ['# only a comment\n', null],
  ])('names %j', (text, name) => {
    expect(osNameOf(text)).toBe(name);
  });
});

describe('kernel version order (dpkg)', () => {
  it.each([
    ['6.1.0-50-amd64', '6.1.0-57-amd64', -1],
    ['6.1.0-9-amd64', '6.1.0-10-amd64', -1],
    ['6.1.0~rc1-amd64', '6.1.0-amd64', -1],
    ['6.10.0-1-amd64', '6.9.0-1-amd64', 1],
    ['5.15.0-100-generic', '5.15.0-99-generic', 1],
    ['6.1.0-050-amd64', '6.1.0-50-amd64', 0],
    ['6.1.0-1-cloud-amd64', '6.1.0-1-amd64', 1],
  ])('%s vs %s', (a, b, sign) => {
    expect(Math.sign(compareKernelVersions(a, b))).toBe(sign);
    expect(Math.sign(compareKernelVersions(b, a))).toBe(sign === 0 ? 0 : -sign);
  });

  it('finds the newest', () => {
    expect(newestKernelVersion(['6.1.0-57-amd64', '6.1.0-9-amd64', '6.1.0-50-amd64'])).toBe('6.1.0-57-amd64');
    expect(newestKernelVersion([])).toBeUndefined();
  });
});

describe('modules.dep', () => {
  const depText = [
    'kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko',
    'kernel/lib/crc16.ko:',
    'kernel/fs/mbcache.ko:',
    'kernel/fs/jbd2/jbd2.ko:',
    'kernel/drivers/i2c/algos/i2c-algo-bit.ko.xz:',
    'kernel/drivers/net/virtio_net.ko.zst:',
    'kernel/evil.ko: ../../etc/shadow',
    '/etc/passwd.ko:',
    'kernel/./x.ko:',
    'kernel/noext:',
    'no colon here',
  ].join('\n');

  it('refuses paths leaving /lib/modules/VERSION, each with the reason', () => {
    const dep = parseModulesDep(depText);
    expect([...dep.byName.keys()]).toEqual(['ext4', 'crc16', 'mbcache', 'jbd2', 'i2c_algo_bit', 'virtio_net']);
    expect(dep.refused).toEqual([
      '"kernel/evil.ko: ../../etc/shadow": "../../etc/shadow" is a path climbing out with ".."',
      '"/etc/passwd.ko:": "/etc/passwd.ko" is an absolute path',
      '"kernel/./x.ko:": "kernel/./x.ko" is an empty or "." path component',
      '"kernel/noext:": "kernel/noext" is no module suffix (.ko, .ko.xz, .ko.gz, .ko.zst)',
      '"no colon here": no ":"',
    ]);
    expect(unsafeModulePath('kernel/a\nb.ko')).toBe('control characters or backslashes');
  });

  it('orders each module after what it needs, skips built-in ones, and says what is missing', () => {
    const dep = parseModulesDep(depText);
    const order = loadOrder(dep, parseModulesBuiltin('kernel/drivers/block/nbd.ko\n'), ['nbd', 'ext4', 'i2c_algo_bit']);
    expect(order.ok && order.modules.map((m) => m.name)).toEqual(['crc16', 'mbcache', 'jbd2', 'ext4', 'i2c-algo-bit']);
    const missing = loadOrder(dep, new Set(), ['overlay']);
    expect(missing.ok).toBe(false);
    expect(!missing.ok && missing.reason).toMatch(
      /^the image's kernel has no module overlay, which ramboot needs; modules.dep lines refused: "kernel\/evil.ko/,
    );
  });

  it('refuses a cycle and a need modules.dep does not list', () => {
    const cycle = parseModulesDep('kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n');
    expect(loadOrder(cycle, new Set(), ['a'])).toEqual({ ok: false, reason: 'modules.dep has a cycle through a' });
    const dangling = parseModulesDep('kernel/a.ko: kernel/gone.ko\n');
    expect(loadOrder(dangling, new Set(), ['a'])).toEqual({
      ok: false,
      reason: 'a (for a) needs kernel/gone.ko, which modules.dep does not list',
    });
  });
});
