import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BootFilesCache as BootFilesCacheType, Kit } from '../src/initrd/index.js';
import type { BootInspection } from '../src/inspect/index.js';
import type { Logger } from '../src/log.js';
import { tempDir } from '../testkit/daemon.js';
import { makeDebianDisk, makeExt4, writeTree, type TreeEntry } from './helpers/images.js';
import { debianImage } from './helpers/qemu.js';
import { sha256 } from '../testkit/nbd.js';

// The built modules: the build runs dist/src/initrd/worker.js in a child, as the daemon does.
type InitrdModule = typeof import('../src/initrd/index.js');
type InspectModule = typeof import('../src/inspect/index.js');
const { BootFilesCache, readKit } = (await import(pathToFileURL(path.resolve('dist/src/initrd/index.js')).href)) as InitrdModule;
const { inspectBootImage } = (await import(pathToFileURL(path.resolve('dist/src/inspect/index.js')).href)) as InspectModule;

const dir = tempDir('nbdmux-initrd-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
const log: Logger = {
  debug: () => {},
  info: (msg, fields) => logged.push({ level: 'info', msg, fields }),
  warn: (msg, fields) => logged.push({ level: 'warn', msg, fields }),
  error: (msg, fields) => logged.push({ level: 'error', msg, fields }),
};
const builds = () => logged.filter((line) => line.msg === 'boot files built').length;

let kitDir: string;
let kit: Kit;
let debian: { file: string; tree: string; kernelVersion: string };
let inspection: BootInspection;
let cache: BootFilesCacheType;

beforeAll(async () => {
  kitDir = execFileSync('ramboot/cached-build', { stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 })
    .toString()
    .trim();
  kit = await readKit(kitDir);
  debian = makeDebianDisk(await debianImage(1_200_000), dir);
  inspection = await inspectBootImage({ image: { file: debian.file }, requiredModules: kit.rootModules });
  cache = await BootFilesCache.open(path.join(dir, 'boot'), kit, log);
}, 1_800_000);

/** The archive appended after the kit's initrd, unpacked with gzip and GNU cpio into a directory. */
function unpackAppended(initrd: string): { files: string[]; root: string } {
  const kitBytes = fs.statSync(kit.initrd).size;
  const appendedAt = kitBytes + ((4 - (kitBytes % 4)) % 4);
  const root = fs.mkdtempSync(path.join(dir, 'unpacked-'));
  execFileSync('sh', ['-c', `tail -c +${appendedAt + 1} "$1" | gzip -dc | cpio -idm --quiet`, 'sh', initrd], { cwd: root });
  const files = execFileSync('sh', ['-c', `tail -c +${appendedAt + 1} "$1" | gzip -dc | cpio -t --quiet`, 'sh', initrd])
    .toString()
    .trim()
    .split('\n');
  return { files, root };
}

describe('per-image boot files', () => {
  it("builds the image's own kernel and an initramfs: the kit's, then the image's modules for its kernel", async () => {
    expect(inspection).toMatchObject({ ready: true, kernel: debian.kernelVersion });
    const started = Date.now();
    const files = await cache.filesFor({ exportId: 7, image: { file: debian.file }, imageIdentity: 'v1', inspection });
    console.log(`built the boot files in ${Date.now() - started} ms`);
    expect(files).toEqual({
      kernel: expect.stringMatching(/\/boot\/7-[0-9a-f]{16}-any\.vmlinuz$/),
      initrd: expect.stringMatching(/\/boot\/7-[0-9a-f]{16}-any\.initrd\.img$/),
      own: true,
      reason: null,
      forNic: false,
    });
    expect(sha256(files.kernel)).toBe(sha256(path.join(debian.tree, `boot/vmlinuz-${debian.kernelVersion}`)));

    const initrd = fs.readFileSync(files.initrd);
    const kitInitrd = fs.readFileSync(kit.initrd);
    expect(initrd.subarray(0, kitInitrd.length).equals(kitInitrd)).toBe(true);
    // The kernel unpacks the kit's archive first: its init and tools are all there.
    const kitListing = execFileSync('sh', ['-c', 'gzip -dc "$1" | cpio -t --quiet', 'sh', kit.initrd]).toString();
    expect(kitListing).toMatch(/^init$/m);
    expect(kitListing).toMatch(/^bin\/nbd-attach$/m);

    const ordered = [
      'virtio_ring',
      'virtio',
      'virtio_pci_legacy_dev',
      'virtio_pci_modern_dev',
      'virtio_pci',
      'failover',
      'net_failover',
      'virtio_net',
      'e1000',
      'e1000e',
      'dca',
      'i2c-algo-bit',
      'igb',
      'nbd',
      'overlay',
      'crc32c_generic',
      'crc16',
      'mbcache',
      'jbd2',
      'ext4',
      'libcrc32c',
      'xfs',
      'zstd_compress',
      'raid6_pq',
      'xor',
      'btrfs',
      'dm-mod',
    ];
    const appended = unpackAppended(files.initrd);
    expect(appended.files.sort()).toEqual(
      ['lib', 'lib/modules', 'lib/modules/load-order', ...ordered.map((name) => `lib/modules/${name}.ko`)].sort(),
    );
    const loadOrder = fs.readFileSync(path.join(appended.root, 'lib/modules/load-order'), 'utf8').split('\n').filter(Boolean);
    expect(new Set(loadOrder.map((line) => line.split(' ')[0]))).toEqual(new Set(ordered));
    expect(loadOrder).toContain('nbd max_part=16');
    // Each module after what it needs, as the image's own modinfo says.
    for (const [i, line] of loadOrder.entries()) {
      const module = path.join(appended.root, `lib/modules/${line.split(' ')[0]}.ko`);
      expect(execFileSync('modinfo', ['-F', 'vermagic', module]).toString()).toMatch(
        new RegExp(`^${debian.kernelVersion.replaceAll('.', '\\.')} `),
      );
      const needs = execFileSync('modinfo', ['-F', 'depends', module]).toString().trim().split(',').filter(Boolean);
      for (const need of needs) expect(loadOrder.slice(0, i).map((l) => l.split(' ')[0])).toContain(need);
    }
  });

  it('answers a second request from the cache, and runs one build for concurrent requests', async () => {
    const before = builds();
    const started = process.hrtime.bigint();
    const again = await cache.filesFor({ exportId: 7, image: { file: debian.file }, imageIdentity: 'v1', inspection });
    console.log(`cache hit in ${Number(process.hrtime.bigint() - started) / 1e6} ms`);
    expect(again.own).toBe(true);
    expect(builds()).toBe(before);

    const together = await Promise.all(
      [1, 2, 3].map(() => cache.filesFor({ exportId: 8, image: { file: debian.file }, imageIdentity: 'v1', inspection })),
    );
    expect(builds()).toBe(before + 1);
    expect(new Set(together.map((files) => files.initrd)).size).toBe(1);
  });

  it("builds anew when the image changes, and removes the export's older build", async () => {
    const old = await cache.filesFor({ exportId: 7, image: { file: debian.file }, imageIdentity: 'v1', inspection });
    const renewed = await cache.filesFor({ exportId: 7, image: { file: debian.file }, imageIdentity: 'v2', inspection });
    expect(renewed.initrd).not.toBe(old.initrd);
    expect(fs.existsSync(old.initrd) || fs.existsSync(old.kernel)).toBe(false);
    expect(
      fs
        .readdirSync(path.join(dir, 'boot'))
        .filter((name) => name.startsWith('7-'))
        .sort(),
    ).toEqual([path.basename(renewed.initrd), path.basename(renewed.kernel)].sort());
    await cache.forget(7);
    expect(fs.readdirSync(path.join(dir, 'boot')).filter((name) => name.startsWith('7-'))).toEqual([]);
  });

  it('unpacks compressed modules (.ko.xz, .ko.gz, .ko.zst: busybox insmod reads none) while packing', async () => {
    // Fake modules, one per module the kit loads, no dependencies: what matters is their bytes.
    const version = '6.12.0-1-amd64';
    const moduleText = (name: string) => `module ${name} for ${version}\n`;
    const tree = path.join(dir, 'compressed.tree');
    const entries: Record<string, TreeEntry> = { lib: { symlink: 'usr/lib' }, [`boot/vmlinuz-${version}`]: 'kernel' };
    const dep: string[] = [];
    const packers: [string, (text: string) => Buffer][] = [
      ['.ko.xz', (text) => execFileSync('xz', ['-c'], { input: text })],
      ['.ko.gz', (text) => gzipSync(text)],
      ['.ko.zst', (text) => execFileSync('zstd', ['-c'], { input: text })],
      ['.ko', (text) => Buffer.from(text)],
    ];
    kit.rootModules.forEach((name, i) => {
      const [suffix, pack] = packers[i % packers.length]!;
      dep.push(`kernel/${name}${suffix}:`);
      entries[`usr/lib/modules/${version}/kernel/${name}${suffix}`] = pack(moduleText(name));
    });
    entries[`usr/lib/modules/${version}/modules.dep`] = `${dep.join('\n')}\n`;
    const image = makeExt4(path.join(dir, 'compressed.ext4'), writeTree(tree, entries), 16);
    const compressed = await inspectBootImage({ image: { file: image }, requiredModules: kit.rootModules });
    expect(compressed).toMatchObject({ ready: true, kernel: version });
    const files = await cache.filesFor({ exportId: 11, image: { file: image }, imageIdentity: 'v1', inspection: compressed });
    const appended = unpackAppended(files.initrd);
    for (const name of kit.rootModules)
      expect(fs.readFileSync(path.join(appended.root, `lib/modules/${name}.ko`), 'utf8')).toBe(moduleText(name));
  });

  it("builds a kernel with only virtio drivers (Debian's cloud kernel) for a virtio NIC, and gives an e1000 machine the kit's, saying why", async () => {
    // The kit's NIC drivers are exactly the modules with a PCI or virtio alias.
    expect(kit.deviceModules).toEqual(['virtio_pci', 'virtio_net', 'e1000', 'e1000e', 'igb']);
    const version = '6.1.0-57-cloud-amd64';
    const moduleText = (name: string) => `module ${name} for ${version}\n`;
    const absent = new Set(['e1000', 'e1000e', 'igb']);
    const present = kit.rootModules.filter((name) => !absent.has(name));
    const entries: Record<string, TreeEntry> = { [`boot/vmlinuz-${version}`]: 'cloud kernel' };
    for (const name of present) entries[`lib/modules/${version}/kernel/${name}.ko`] = moduleText(name);
    entries[`lib/modules/${version}/modules.dep`] = present.map((name) => `kernel/${name}.ko:\n`).join('');
    entries[`lib/modules/${version}/modules.alias`] = [
      '# Aliases extracted from modules themselves.',
      'alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci',
      'alias virtio:d00000001v* virtio_net',
      'alias fs-overlay overlay',
      '',
    ].join('\n');
    const image = makeExt4(path.join(dir, 'cloud.ext4'), writeTree(path.join(dir, 'cloud.tree'), entries), 16);
    const devices = new Set(kit.deviceModules);
    const cloud = await inspectBootImage({
      image: { file: image },
      requiredModules: kit.rootModules.filter((name) => !devices.has(name)),
      deviceModules: kit.deviceModules,
    });
    expect(cloud).toMatchObject({ ready: true, kernel: version, devicesMissing: ['e1000', 'e1000e', 'igb'] });
    const request = { exportId: 12, image: { file: image }, imageIdentity: 'v1', inspection: cloud };

    const virtio = await cache.filesFor({ ...request, nic: { vendor: 0x1af4, device: 0x1000 } });
    expect(virtio).toMatchObject({ own: true, reason: null });
    const appended = unpackAppended(virtio.initrd);
    const loadOrder = fs.readFileSync(path.join(appended.root, 'lib/modules/load-order'), 'utf8');
    expect(loadOrder.split('\n').map((line) => line.split(' ')[0])).toEqual([
      ...present.filter((name) => name !== 'virtio_pci' && name !== 'virtio_net'),
      'virtio_pci',
      'virtio_net',
      '',
    ]);
    // Asked again (the initrd after the kernel), the same build.
    expect(await cache.filesFor({ ...request, nic: { vendor: 0x1af4, device: 0x1000 } })).toEqual(virtio);

    const e1000Reason =
      "the image's kernel cannot drive the machine's NIC PCI 8086:100e: no module of its kernel has a modules.alias for PCI 8086:100e";
    const e1000 = {
      kernel: path.join(kitDir, 'vmlinuz'),
      initrd: path.join(kitDir, 'initrd.img'),
      own: false,
      reason: e1000Reason,
      forNic: true,
    };
    expect(await cache.filesFor({ ...request, nic: { vendor: 0x8086, device: 0x100e } })).toEqual(e1000);
    expect(await cache.filesFor({ ...request, nic: { vendor: 0x8086, device: 0x100e } })).toEqual(e1000);
    // No NIC named: every kit NIC driver is wanted, as before.
    expect(await cache.filesFor(request)).toMatchObject({
      own: false,
      forNic: true,
      reason: expect.stringMatching(
        /^the image's kernel has no module e1000, e1000e, igb \(NIC drivers of the kit\), and the machine's boot named no NIC/,
      ),
    });
  });

  it("falls back to the kit's kernel and initrd, with the reason, for an image not ready or whose build fails", async () => {
    const busybox = await inspectBootImage({ image: { file: path.join(kitDir, 'test-gpt.img') }, requiredModules: kit.rootModules });
    expect(
      await cache.filesFor({ exportId: 9, image: { file: path.join(kitDir, 'test-gpt.img') }, imageIdentity: 'v1', inspection: busybox }),
    ).toEqual({
      kernel: path.join(kitDir, 'vmlinuz'),
      initrd: path.join(kitDir, 'initrd.img'),
      own: false,
      reason: 'the image has no /lib/modules directory, so no kernel of its own to boot',
      forNic: false,
    });
    const stale = { ...inspection, kernelPath: '/boot/vmlinuz-gone' };
    const before = logged.length;
    expect(await cache.filesFor({ exportId: 10, image: { file: debian.file }, imageIdentity: 'v1', inspection: stale })).toMatchObject({
      own: false,
      reason: '/boot/vmlinuz-gone is gone from the image',
    });
    expect(logged.slice(before)).toEqual([
      {
        level: 'warn',
        msg: 'cannot build the boot files of an image: its machines boot the kit kernel',
        fields: { exportId: 10, reason: '/boot/vmlinuz-gone is gone from the image' },
      },
    ]);
    expect(fs.readdirSync(path.join(dir, 'boot'))).not.toContainEqual(expect.stringMatching(/^(10-|\.build-)/));
  });
});
