import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { layoutImages, type LayoutImages } from './helpers/layout-boot-images.js';
import {
  bootFailureReport,
  bootGuest,
  guestHttpHost,
  guestNbdAddress,
  rambootKit,
  type Guest,
  type RambootKit,
  type SerialLine,
  textAfter,
  registerImageCopy,
} from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * Issue 23, items 2 and 4: the layouts enterprise installers write boot from qemu's PXE ROM
 * through nbdmux on the default kit. Rocky-like (root in LVM on xfs, /boot xfs) under BIOS;
 * Fedora-like (btrfs subvolume root, /boot ext4) under UEFI (OVMF and the virtio NIC's EFI iPXE
 * ROM), which is also the UEFI proof. Each image's own /etc/fstab /boot is mounted read-only, and
 * the image is not written: its sha256 is the same after the boot.
 *
 * The root's place comes from nbdmux's inspection alone (`boot.layout`, and `nbdroot.lv=` or
 * `nbdroot.subvol=` on the script's kernel line): the exports name nothing but the console. The
 * images carry the very kernel package the kit boots, so `uname -r` equal to the image's shows the
 * kernel booted; the image's own modules are what `modprobe vfat` loads.
 */
const timeoutSeconds = 480;
const ovmf = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const efiRom = '/usr/lib/ipxe/qemu/efi-virtio.rom';

/** Of an image of gigabytes: sha256sum streams it. */
const sha256 = (file: string) => execFileSync('sha256sum', [file]).toString().split(' ')[0]!;

describe.skipIf(skipWithout('qemu-system-x86_64', 'mmdebstrap', 'losetup', 'lvm', 'mkfs.xfs', 'mkfs.btrfs'))(
  'layout-boot: LVM + xfs and btrfs subvolumes, each with a separate /boot, boot from a PXE ROM through nbdmux',
  () => {
    const dir = tempDir('nbdmux-layout-boot-');
    const logs = path.resolve('test-artifacts', 'layout-boot');
    let kit: RambootKit;
    let images: LayoutImages;
    let daemon: RunningDaemon;
    let guest: Guest | undefined;
    const copies: Record<string, string> = {};

    beforeAll(async () => {
      kit = await rambootKit(540_000);
      const started = Date.now();
      images = await layoutImages(1_500_000);
      console.log(`layout-boot: ramboot/cached-layout-images in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      fs.mkdirSync(logs, { recursive: true });
      daemon = await startDaemon({ args: ['--ramboot-kit', kit.dir, '--nbd-public-port', '10809', '--allowed-host', guestHttpHost] });
      for (const [name, image] of [
        ['rocky', images.rocky],
        ['fedora', images.fedora],
      ] as const) {
        fs.writeFileSync(path.join(dir, `chain-${name}.ipxe`), `#!ipxe\nchain http://${guestHttpHost}/boot/${name}.ipxe\n`);
        copies[name] = await registerImageCopy(daemon, dir, name, image);
      }
      await inspectedBoots(daemon, 30_000);
    }, 2_100_000);

    afterAll(() => {
      guest?.kill();
      killEverything([daemon.dataDir]);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    async function pxeBoot(name: string, uefi: boolean) {
      const qemuArgs: string[] = [];
      if (uefi) {
        const vars = path.join(dir, `${name}-OVMF_VARS_4M.fd`);
        fs.copyFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd', vars);
        qemuArgs.push(
          '-drive',
          `if=pflash,format=raw,unit=0,readonly=on,file=${ovmf}`,
          '-drive',
          `if=pflash,format=raw,unit=1,file=${vars}`,
        );
      }
      guest = bootGuest({
        kit,
        kernel: 'vmlinuz',
        nbdPort: daemon.nbdPort,
        append: '',
        pxe: { tftpDir: dir, bootfile: `chain-${name}.ipxe`, httpPort: daemon.httpPort },
        // PCI slot 2: the slot the image's /etc/network/interfaces (ens2) was written for.
        nicOptions: uefi ? `addr=2,romfile=${efiRom}` : 'addr=2',
        memoryMiB: 1024,
        qemuArgs,
        serialLog: path.join(logs, `${name}.log`),
        timeoutSeconds,
      });
      const { code, atMs: exitedMs } = await guest.exited;
      const lines = guest.lines();
      return { code, exitedMs, lines, text: lines.map((line) => line.text).join('\n') };
    }

    /** What `check` (nbdmux-boot-check or nbdmux-layout-check) said about key. */
    const said = (lines: SerialLine[], check: string, key: string) => textAfter(lines, `${check}: ${key}`);

    /** What every layout must show: its own kernel and modules, systemd running, the image's /boot, a clean power-off. */
    function expectCleanBoot(name: string, boot: Awaited<ReturnType<typeof pxeBoot>>, imageId: string) {
      const { code, lines, text } = boot;
      expect(code, `qemu did not power off by itself (137: killed after ${timeoutSeconds} s)\n${bootFailureReport(lines)}`).toBe(0);
      expect(lines.filter((line) => line.text.includes('ramboot: FAILED')).map((line) => line.text)).toEqual([]);
      expect(said(lines, 'nbdmux-layout-check', 'image-id')).toBe(imageId);
      expect(said(lines, 'nbdmux-boot-check', 'uname')).toBe(images.kernelVersion);
      expect(said(lines, 'nbdmux-boot-check', 'modprobe-vfat')).toBe('ok');
      expect(said(lines, 'nbdmux-boot-check', 'system')).toBe('running');
      expect(said(lines, 'nbdmux-layout-check', 'boot-kernels')?.split(' ')).toContain(`vmlinuz-${images.kernelVersion}`);
      expect(text).not.toContain('Dependency failed');
      expect(text).not.toContain('Timed out waiting for device');
      expect(lines.filter((line) => /I\/O error|block nbd0:/.test(line.text)).map((line) => line.text)).toEqual([]);
      expect(lines.some((line) => line.text.endsWith('nbdmux-boot-check: poweroff'))).toBe(true);
      expect(lines.some((line) => /reboot: Power down/.test(line.text))).toBe(true);
      // Activation, mounts and a whole systemd boot wrote nothing to the export.
      expect(sha256(copies[name]!)).toBe(before[name]);
    }

    const before: Record<string, string> = {};
    const seconds = (ms: number | undefined) => (ms === undefined ? '?' : (ms / 1000).toFixed(1));
    function report(what: string, { lines, exitedMs }: { lines: SerialLine[]; exitedMs: number }) {
      const at = (pattern: RegExp) => lines.find((line) => pattern.test(line.text))?.atMs;
      console.log(
        [
          `layout-boot ${what}, seconds from qemu start:`,
          `  initramfs started ${seconds(at(/^ramboot: \[[\d.]+\] starting/))}, root mounted ${seconds(at(/^ramboot: \[[\d.]+\] root mounted/))}`,
          `  systemd running ${seconds(at(/nbdmux-boot-check: system /))} (${said(lines, 'nbdmux-boot-check', 'analyze')})`,
          `  powered off, qemu exited ${seconds(exitedMs)}`,
        ].join('\n'),
      );
    }

    it(
      'Rocky-like under BIOS: the root LV activates read-only, /boot (xfs) is the image partition, systemd running, power-off',
      async () => {
        const found = (await api(daemon, 'GET', '/exports/rocky')).json.boot;
        console.log('layout-boot rocky: nbdmux says', JSON.stringify(found));
        expect(found).toMatchObject({
          ready: true,
          kernel: images.kernelVersion,
          lv: 'rl/root',
          layout: expect.stringMatching(/lvm:rl\/root xfs, \/boot partition \d xfs$/),
        });
        before.rocky = sha256(copies.rocky!);
        const boot = await pxeBoot('rocky', false);
        const { lines } = boot;
        expectCleanBoot('rocky', boot, images.rockyImageId);
        expect(lines.some((line) => /^ramboot: \[[\d.]+\] root mounted: \/dev\/rl\/root \(xfs\) read-only/.test(line.text))).toBe(true);
        expect(lines.some((line) => /^ramboot: \[[\d.]+\] \/boot: mounted \/boot \/dev\/nbd0p2 xfs$/.test(line.text))).toBe(true);
        expect(said(lines, 'nbdmux-layout-check', 'root')).toBe('/dev/rl/root xfs');
        expect(said(lines, 'nbdmux-layout-check', 'mount /boot')).toMatch(/^\/dev\/nbd0p2 +xfs +ro,/);
        expect(said(lines, 'nbdmux-layout-check', 'unit boot.mount')).toBe('active success');
        report('rocky-like (BIOS)', boot);
      },
      (timeoutSeconds + 60) * 1000,
    );

    it(
      'Fedora-like under UEFI: the btrfs subvolume root that the inspection found (nbdroot.subvol=), /boot (ext4) is the image partition and is not checked, power-off',
      async () => {
        const found = (await api(daemon, 'GET', '/exports/fedora')).json.boot;
        console.log('layout-boot fedora: nbdmux says', JSON.stringify(found));
        expect(found).toMatchObject({
          ready: true,
          kernel: images.kernelVersion,
          subvol: 'root',
          layout: expect.stringMatching(/btrfs subvol=root, \/boot partition \d ext4$/),
        });
        before.fedora = sha256(copies.fedora!);
        const boot = await pxeBoot('fedora', true);
        const { lines, text } = boot;
        // The kernel came up from OVMF through the NIC's EFI iPXE ROM.
        expect(text).toMatch(/efi: EFI v[\d.]+ by EDK II/);
        expectCleanBoot('fedora', boot, images.fedoraImageId);
        expect(
          lines.some((line) => /^ramboot: \[[\d.]+\] root mounted: \/dev\/nbd0p3 \(btrfs subvolume root\) read-only/.test(line.text)),
        ).toBe(true);
        expect(lines.some((line) => /^ramboot: \[[\d.]+\] \/boot: mounted \/boot \/dev\/nbd0p2 ext4$/.test(line.text))).toBe(true);
        expect(said(lines, 'nbdmux-layout-check', 'mount /boot')).toMatch(/^\/dev\/nbd0p2 +ext4 +ro,/);
        expect(said(lines, 'nbdmux-layout-check', 'unit boot.mount')).toBe('active success');
        report('fedora-like (UEFI)', boot);
      },
      (timeoutSeconds + 60) * 1000,
    );

    it('says what it cannot find, in one FAILED line: a logical volume the group lacks, a btrfs root without its subvolume', async () => {
      for (const [name, append, failed] of [
        [
          'rocky',
          'nbdroot.lv=rl/nope',
          'cannot activate the root logical volume rl/nope: volume group rl has no logical volume nope (it has: root)',
        ],
        [
          'fedora',
          '',
          "fedora has no init at /sbin/init in the default subvolume of its btrfs: name the root's subvolume with nbdroot.subvol=PATH",
        ],
      ] as const) {
        // The kit's kernel loaded directly: what is checked happens in the initramfs, before any PXE matters.
        guest = bootGuest({
          kit,
          kernel: 'vmlinux',
          nbdPort: daemon.nbdPort,
          append: `nbdroot=${guestNbdAddress}/${name} ${append}`,
          serialLog: path.join(logs, `${name}-failed.log`),
          timeoutSeconds: 240,
        });
        const { code } = await guest.exited;
        const lines = guest.lines();
        expect(code, bootFailureReport(lines)).toBe(0);
        expect(lines.filter((line) => line.text.startsWith('ramboot: FAILED')).map((line) => line.text)).toEqual([
          `ramboot: FAILED: ${failed}`,
        ]);
      }
    }, 600_000);
  },
);
