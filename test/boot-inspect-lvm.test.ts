import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../src/log.js';
import { parseLvmText } from '../src/inspect/lvm-text.js';
import { api, killEverything, startDaemon, tempDir, inspectedBoots } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { makeExt4, makeVfat, makeXfs, writeTree } from './helpers/images.js';
import { loopDevicesUsable, makeBtrfsWithSubvolumes, makeLvmDisk, type LvmDisk } from './helpers/layout-images.js';

// The built modules: the inspection and the build spawn dist/src/.../worker.js, as the daemon does.
type InspectModule = typeof import('../src/inspect/index.js');
type InitrdModule = typeof import('../src/initrd/index.js');
const { inspectBootImage } = (await import(pathToFileURL(path.resolve('dist/src/inspect/index.js')).href)) as InspectModule;
const { BootFilesCache, readKit } = (await import(pathToFileURL(path.resolve('dist/src/initrd/index.js')).href)) as InitrdModule;

const MiB = 1024 * 1024;
const dir = tempDir('nbdmux-inspect-lvm-');
const dataDirs: string[] = [];
afterAll(() => {
  killEverything(dataDirs);
  fs.rmSync(dir, { recursive: true, force: true });
});
let counter = 0;
const scratch = (name: string) => path.join(dir, `${++counter}-${name}`);
const version = '5.14.0-427.el9.x86_64';
const kernel = crypto.randomBytes(200 * 1024);
const bootUuid = '5ca1ab1e-0000-4000-8000-00000000b007';
// Unique per run: a VG of the same name on another test's loop device must not meet this one.
const vg = `rl${process.pid}`;

/** A Rocky-like root: merged /usr, systemd, its modules (dm-mod among them unless left out), /boot from its own partition. */
function rockyRoot(options: { withDmMod?: boolean; fstab?: string } = {}): string {
  const modules = `usr/lib/modules/${version}`;
  const withDmMod = options.withDmMod ?? true;
  return writeTree(scratch('rocky.tree'), {
    'usr/lib/os-release': 'NAME="Rocky Linux"\nVERSION_ID="9.4"\n',
    'etc/os-release': { symlink: '../usr/lib/os-release' },
    'usr/lib/systemd/systemd': { executable: '#!/bin/sh\n' },
    'etc/fstab': options.fstab ?? `/dev/mapper/${vg}-root / xfs defaults 0 0\nUUID=${bootUuid} /boot ext4 defaults 1 2\n`,
    lib: { symlink: 'usr/lib' },
    'boot/.keep': '',
    [`${modules}/modules.dep`]: [
      'kernel/drivers/block/nbd.ko:',
      'kernel/fs/xfs/xfs.ko:',
      ...(withDmMod ? ['kernel/drivers/md/dm-mod.ko:'] : []),
      '',
    ].join('\n'),
    [`${modules}/kernel/drivers/block/nbd.ko`]: 'nbd',
    [`${modules}/kernel/fs/xfs/xfs.ko`]: 'xfs',
    ...(withDmMod ? { [`${modules}/kernel/drivers/md/dm-mod.ko`]: 'dm-mod' } : {}),
  });
}

/** ESP, an ext4 /boot (partition 2) with the kernel, and an LVM PV (partition 3): swap, home, then root (xfs) at the PV's end. */
function rockyDisk(rootTree: string): LvmDisk {
  const boot = makeExt4(scratch('boot.ext4'), writeTree(scratch('boot.tree'), { [`vmlinuz-${version}`]: kernel }), 16, ['-U', bootUuid]);
  return makeLvmDisk(
    scratch('rocky.img'),
    [
      { image: makeVfat(scratch('esp.vfat'), 4), sizeMiB: 4, type: 'ef00' },
      { image: boot, sizeMiB: 16, type: '8300' },
    ],
    {
      sizeMiB: 420,
      vg,
      volumes: [
        { name: 'swap', sizeMiB: 8 },
        { name: 'home', sizeMiB: 100, image: makeXfs(scratch('home.xfs'), writeTree(scratch('home.tree'), { 'user/.profile': 'x' })) },
        { name: 'root', sizeMiB: 300, image: makeXfs(scratch('root.xfs'), rootTree) },
      ],
    },
  );
}

const inspect = (file: string) => inspectBootImage({ image: { file }, requiredModules: ['nbd'] });

describe('LVM2 text metadata, strictly parsed', () => {
  it('reads sections, lists, strings with escapes, numbers and comments', () => {
    const parsed = parseLvmText(
      'vg0 {\n id = "a\\"b" # comment\n seqno = 3\n status = ["READ", "WRITE"]\n pv { stripes = [\n"pv0", 0\n] }\n}\n',
    );
    const vg0 = parsed.get('vg0') as Map<string, unknown>;
    expect(vg0.get('id')).toBe('a"b');
    expect(vg0.get('seqno')).toBe(3);
    expect(vg0.get('status')).toEqual(['READ', 'WRITE']);
    expect((vg0.get('pv') as Map<string, unknown>).get('stripes')).toEqual(['pv0', 0]);
  });

  it.each([
    ['vg0 { id = "never ends }', /line 1: a string never ends/],
    ['vg0 { a = }', /expected a value/],
    ['vg0 { a b }', /expected "=" or "\{" after a/],
    ['}', /a "\}" closes nothing/],
    [`${'a {'.repeat(40)}`, /sections nested too deep/],
    [`a = ${'['.repeat(40)}`, /lists nested too deep/],
  ])('refuses %j', (text, why) => {
    expect(() => parseLvmText(text)).toThrow(why);
  });
});

describe.skipIf(!loopDevicesUsable)(
  'inspecting images whose root is an LVM logical volume (LVM tools write the PV on a loop device: needs root)',
  () => {
    let disk: LvmDisk;
    beforeAll(() => {
      disk = rockyDisk(rockyRoot());
    });

    it("Rocky's layout: ESP, an ext4 /boot, a VG whose LV root (xfs) holds the OS; the boot files come from both", async () => {
      const started = Date.now();
      const inspection = await inspect(disk.file);
      console.log(`inspected an LVM root (xfs LV, separate /boot) in ${Date.now() - started} ms`);
      expect(inspection).toEqual({
        ready: true,
        os: 'Rocky Linux 9.4',
        kernel: version,
        partition: 3,
        fstype: 'xfs',
        layout: `gpt/lvm:${vg}/root xfs, /boot partition 2 ext4`,
        lv: `${vg}/root`,
        subvol: null,
        reason: null,
        partitionOffset: disk.lvOffsets.root,
        kernelOffset: disk.offsets[1],
        kernelPath: `/vmlinuz-${version}`,
        kernelSize: kernel.length,
        modulesDir: `/usr/lib/modules/${version}`,
        devicesMissing: [],
      });
      const kit = await readKit(fakeKit(crypto.randomBytes(1024)));
      const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
      const cache = await BootFilesCache.open(scratch('boot-cache'), kit, quiet);
      expect(await cache.filesFor({ exportId: 1, image: { file: disk.file }, imageIdentity: 'v1', inspection })).toMatchObject({
        own: true,
        reason: null,
      });
    });

    it('an image kernel without dm-mod is not ready: ramboot could not activate the VG', async () => {
      const without = rockyDisk(rockyRoot({ withDmMod: false }));
      expect(await inspect(without.file)).toMatchObject({
        ready: false,
        lv: `${vg}/root`,
        reason: "the image's kernel has no module dm_mod, which ramboot needs",
      });
    });

    describe('damaged or hostile metadata: a reason, never a throw or a read outside the image', () => {
      /** A copy of the disk with the PV's newest metadata text (found through its area's header) changed by `edit`. */
      function withMetadata(edit: (text: Buffer, header: Buffer) => void): string {
        const file = scratch('damaged.img');
        fs.copyFileSync(disk.file, file);
        const fd = fs.openSync(file, 'r+');
        try {
          // LVM puts the first metadata area 4 KiB into the PV.
          const areaAt = disk.offsets[2]! + 4096;
          const header = Buffer.alloc(512);
          fs.readSync(fd, header, 0, 512, areaAt);
          const textAt = areaAt + Number(header.readBigUInt64LE(40));
          const text = Buffer.alloc(Number(header.readBigUInt64LE(48)));
          fs.readSync(fd, text, 0, text.length, textAt);
          edit(text, header);
          fs.writeSync(fd, text, 0, text.length, textAt);
          fs.writeSync(fd, header, 0, 512, areaAt);
        } finally {
          fs.closeSync(fd);
        }
        return file;
      }
      const timed = async (file: string) => {
        const started = Date.now();
        const found = await inspect(file);
        expect(Date.now() - started).toBeLessThan(5000);
        return found;
      };

      it('metadata text claiming more than 1 MiB', async () => {
        const file = withMetadata((_, header) => header.writeBigUInt64LE(BigInt(64 * MiB), 48));
        expect((await timed(file)).reason).toBe(
          'the image has LVM physical volumes (partition 3) but no logical volume with an OS nbdmux can read: the LVM physical volume on partition 3: its metadata text claims 67108864 bytes, more than the 1048576 nbdmux reads',
        );
      });

      it('garbled metadata text', async () => {
        const file = withMetadata((text) => text.write('= = {', text.indexOf('logical_volumes'), 'latin1'));
        expect((await timed(file)).reason).toMatch(
          /^the image has LVM physical volumes \(partition 3\) but no logical volume with an OS nbdmux can read: the LVM physical volume on partition 3: its metadata text is garbled \(line \d+: expected a name, found "= = \{/,
        );
      });

      it('an LV whose segment reaches past the image', async () => {
        // The root LV's extent count (it ends the PV), same number of digits, made all nines: more extents than the PV has.
        const file = withMetadata((text) => {
          const source = text.toString('latin1');
          const root = source.indexOf('root {');
          const match = /extent_count = (\d+)/.exec(source.slice(root))!;
          text.write(`extent_count = ${'9'.repeat(match[1]!.length)}`, root + match.index, 'latin1');
        });
        expect((await timed(file)).reason).toMatch(
          new RegExp(
            `^the image has LVM physical volumes \\(partition 3\\) but no logical volume with an OS nbdmux can read: ${vg}/root: segment 1 ends past its physical volume's partition 3`,
          ),
        );
      });
    });

    it('GET /exports shows the layout, and the boot script names the root LV and the btrfs subvolume for ramboot', async () => {
      const fsUuid = 'f0f0f0f0-1111-4222-8333-444455556666';
      const fedoraVersion = '6.8.5-301.fc40.x86_64';
      const fedoraRoot = writeTree(scratch('fedora.tree'), {
        'etc/os-release': 'PRETTY_NAME="Fedora Linux 40"\n',
        'usr/lib/systemd/systemd': { executable: '#!/bin/sh\n' },
        'etc/fstab': `UUID=${fsUuid} / btrfs subvol=root 0 0\n`,
        [`boot/vmlinuz-${fedoraVersion}`]: kernel,
        [`lib/modules/${fedoraVersion}/modules.dep`]: 'kernel/nbd.ko:\nkernel/btrfs.ko:\n',
        [`lib/modules/${fedoraVersion}/kernel/nbd.ko`]: 'nbd',
        [`lib/modules/${fedoraVersion}/kernel/btrfs.ko`]: 'btrfs',
      });
      const btrfs = makeBtrfsWithSubvolumes(scratch('fedora.btrfs'), [{ path: 'root', tree: fedoraRoot }], { uuid: fsUuid });
      const daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(crypto.randomBytes(1024))] });
      dataDirs.push(daemon.dataDir);
      for (const [name, file] of [
        ['rocky', disk.file],
        ['fedora', btrfs],
      ])
        expect((await api(daemon, 'POST', '/exports', { name, file })).status).toBe(201);
      type Boot = { ready: boolean; layout: string | null; lv: string | null; subvol: string | null; reason: string | null };
      const boots = await inspectedBoots<Boot>(daemon);
      expect(boots.rocky).toMatchObject({
        ready: true,
        layout: `gpt/lvm:${vg}/root xfs, /boot partition 2 ext4`,
        lv: `${vg}/root`,
        subvol: null,
      });
      expect(boots.fedora).toMatchObject({ ready: true, layout: 'disk btrfs subvol=root', lv: null, subvol: 'root' });
      const script = async (name: string) => (await fetch(`http://127.0.0.1:${daemon.httpPort}/boot/${name}.ipxe`)).text();
      expect(await script('rocky')).toMatch(
        new RegExp(`^kernel \\S+ initrd=initrd.img nbdroot=\\S+/rocky nbdroot.part=3 nbdroot.lv=${vg}/root `, 'm'),
      );
      expect(await script('fedora')).toMatch(/^kernel \S+ initrd=initrd.img nbdroot=\S+\/fedora nbdroot.subvol=root /m);
    });
  },
);
