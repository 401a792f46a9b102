import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import {
  bootGuest,
  debianImage,
  guestNbdAddress,
  rambootKit,
  type DebianImage,
  type Guest,
  type RambootKit,
  type SerialLine,
  textAfter,
} from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * A real Debian 12 image (mmdebstrap: its own kernel, systemd, udev, ifupdown with DHCP on ens2,
 * as an installed machine has it) boots from nbdmux under qemu (TCG) with the ramboot kit's
 * kernel and initramfs. The image's nbdmux-boot-check.service states on the serial console what
 * the booted system sees, then powers off (or reboots) from inside. One guest at a time: a full
 * systemd boot under emulation takes minutes of CPU on a shared machine.
 */
const bootTimeoutSeconds = 480;

describe.skipIf(skipWithout('qemu-system-x86_64'))('debian-boot: a real Debian 12 image boots from nbdmux and keeps its network', () => {
  let kit: RambootKit;
  let image: DebianImage;
  let daemon: RunningDaemon;
  let guest: Guest | undefined;
  const logs = path.resolve('test-artifacts', 'debian-boot');

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    image = await debianImage(1_200_000);
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon();
    // A sparse copy, so that a bug writing an image could never corrupt the cached one.
    const copy = path.join(tempDir('nbdmux-debian-boot-'), 'debian-12.img');
    execFileSync('cp', ['--sparse=always', image.file, copy]);
    const reply = await api(daemon, 'POST', '/exports', { name: 'debian', file: copy });
    if (reply.status !== 201) throw new Error(`registering the image failed (${reply.status}): ${reply.text}`);
  }, 1_500_000);

  afterAll(() => {
    guest?.kill();
    killEverything([daemon.dataDir]);
  });

  /** What nbdmux-boot-check said about key (the text after "nbdmux-boot-check: KEY "; a login prompt may precede it). */
  const said = (lines: SerialLine[], key: string) => textAfter(lines, `nbdmux-boot-check: ${key}`);

  /** Boots the image once; its boot check ends with `action` from inside, and qemu (-no-reboot) exits either way. */
  async function bootAndCheck(action: 'poweroff' | 'reboot'): Promise<void> {
    guest = bootGuest({
      kit,
      kernel: 'vmlinux',
      nbdPort: daemon.nbdPort,
      append: `nbdroot=${guestNbdAddress}/debian${action === 'reboot' ? ' nbdmux-boot-check.then=reboot' : ''}`,
      // PCI slot 2: the slot the image's /etc/network/interfaces (ens2) was written for.
      nicOptions: 'addr=2',
      memoryMiB: 1024,
      serialLog: path.join(logs, `debian-${action}.log`),
      timeoutSeconds: bootTimeoutSeconds,
    });
    const { code, atMs: exitedMs } = await guest.exited;
    const lines = guest.lines();
    const text = lines.map((line) => line.text).join('\n');

    expect(code, `qemu did not exit by itself (137: killed after ${bootTimeoutSeconds} s)\n${text.slice(-3000)}`).toBe(0);
    expect(text).not.toContain('ramboot: FAILED');
    // Renamed in the initramfs, before it was brought up.
    expect(lines.some((line) => /^ramboot: \[[\d.]+\] interface eth0 renamed ens2 \(the slot name udev gives it\)$/.test(line.text))).toBe(
      true,
    );
    expect(said(lines, 'links')).toBe(`lo ${image.nic}`);
    // The name systemd 252's own net_id prefers (onboard, then slot, then path) is the one it got.
    const udevNames = Object.fromEntries((said(lines, 'udev-names') ?? '').split(' ').map((pair) => pair.split('=', 2)));
    expect(udevNames.ID_NET_NAME_ONBOARD ?? udevNames.ID_NET_NAME_SLOT ?? udevNames.ID_NET_NAME_PATH).toBe(image.nic);
    expect(said(lines, 'addresses')).toBe(`lo=127.0.0.1/8 ${image.nic}=10.0.2.15/24`);
    // ifupdown found it configured, brought nothing up or down, and waited for nothing.
    expect(said(lines, 'ifstate')?.split(' ')).toContain(`${image.nic}=${image.nic}`);
    expect(said(lines, 'networking')).toBe('active ifup@ens2 active');
    expect(text).not.toContain('Timed out waiting for device');
    expect(text).not.toContain('Dependency failed');
    expect(said(lines, 'device-timeouts')).toBe('0');
    expect(said(lines, 'system')).toBe('running');
    expect(said(lines, 'hostname')).toBe('nbdmux-debian-test');
    // It went through networking's stop and every unmount with the root on NBD, to the end.
    expect(lines.some((line) => line.text.endsWith(`nbdmux-boot-check: ${action}`))).toBe(true);
    expect(lines.some((line) => (action === 'poweroff' ? /reboot: Power down/ : /reboot: Restarting system/).test(line.text))).toBe(true);
    expect(lines.filter((line) => /I\/O error|block nbd0:/.test(line.text)).map((line) => line.text)).toEqual([]);

    const at = (pattern: RegExp) => lines.find((line) => pattern.test(line.text))?.atMs;
    const seconds = (ms: number | undefined) => (ms === undefined ? '?' : (ms / 1000).toFixed(1));
    console.log(
      [
        `debian-boot, ${action} (kit kernel ${said(lines, 'uname')}, image kernel ${image.kernelVersion}; host clock from qemu start):`,
        `  initramfs: root mounted at ${seconds(at(/^ramboot: \[[\d.]+\] root mounted/))} s`,
        `  systemd:   running at ${seconds(at(/nbdmux-boot-check: system /))} s (${said(lines, 'analyze')})`,
        `  ${action}: asked at ${seconds(at(new RegExp(`nbdmux-boot-check: ${action}$`)))} s, qemu exited at ${seconds(exitedMs)} s`,
        `  modprobe vfat: ${said(lines, 'modprobe-vfat')}; /lib/modules/$(uname -r) in the image: ${said(lines, 'modules-dir')}`,
      ].join('\n'),
    );
  }

  it(
    'names the NIC as udev does (ens2), nothing waits for a device, systemd reaches running, and a poweroff from inside completes',
    () => bootAndCheck('poweroff'),
    (bootTimeoutSeconds + 30) * 1000,
  );

  it('and a reboot from inside completes as well', () => bootAndCheck('reboot'), (bootTimeoutSeconds + 30) * 1000);
});
