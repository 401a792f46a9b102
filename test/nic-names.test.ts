import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { bootFailureReport, bootGuest, guestNbdAddress, rambootKit, type Guest, type RambootKit } from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * The ramboot initramfs renames the boot NIC to the name systemd's udev (net_id, Debian 12's
 * NamePolicy "keep kernel database onboard slot path") gives it in the booted system. qemu
 * places a virtio NIC where each naming rule applies: an ACPI index (onboard), a hotplug slot
 * of a multi-function device (slot, with the function), no hotplug slots at all (path). The
 * busybox test image powers off by itself once booted.
 */
const bootTimeoutSeconds = 240;

describe.skipIf(skipWithout('qemu-system-x86_64'))('nic-names: the boot NIC gets its predictable name in the initramfs', () => {
  let kit: RambootKit;
  let daemon: RunningDaemon;
  const guests: Guest[] = [];
  const logs = path.resolve('test-artifacts', 'nic-names');

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon();
    // A copy, so that a bug writing an image could never corrupt the cached one.
    const image = path.join(tempDir('nbdmux-nic-names-'), 'test-disk.img');
    fs.copyFileSync(kit.images.disk, image);
    const reply = await api(daemon, 'POST', '/exports', { name: 'root', file: image });
    if (reply.status !== 201) throw new Error(`registering the image failed (${reply.status}): ${reply.text}`);
  }, 600_000);

  afterAll(() => {
    for (const guest of guests) guest.kill();
    killEverything([daemon.dataDir]);
  });

  const cases = [
    { rule: 'onboard', nicOptions: 'addr=4,acpi-index=7', expected: 'eno7' },
    { rule: 'slot', nicOptions: 'addr=5,multifunction=on', expected: 'ens5f0' },
    { rule: 'path', nicOptions: 'addr=6', qemuArgs: ['-global', 'PIIX4_PM.acpi-root-pci-hotplug=off'], expected: 'enp0s6' },
    { rule: 'kept', nicOptions: 'addr=2', append: 'net.ifnames=0', expected: 'eth0' },
  ];
  for (const { rule, nicOptions, qemuArgs, append, expected } of cases) {
    it.concurrent(
      `${rule}: ${nicOptions}${append ? ` ${append}` : ''} boots as ${expected}`,
      async ({ expect }) => {
        const guest = bootGuest({
          kit,
          kernel: 'vmlinux',
          nbdPort: daemon.nbdPort,
          append: `nbdroot=${guestNbdAddress}/root ${append ?? ''}`,
          nicOptions,
          qemuArgs,
          serialLog: path.join(logs, `${rule}.log`),
          timeoutSeconds: bootTimeoutSeconds,
        });
        guests.push(guest);
        const { code } = await guest.exited;
        const text = guest.lines().map((line) => line.text);
        expect(code, `qemu did not power off by itself (null: killed at the time limit)\n${bootFailureReport(guest.lines())}`).toBe(0);
        expect(text.filter((line) => line.startsWith('ramboot: FAILED'))).toEqual([]);
        const renamed = text
          .filter((line) => /^ramboot: \[[\d.]+\] interface .* renamed /.test(line))
          .map((line) => line.replace(/^ramboot: \[[\d.]+\] /, ''));
        expect(renamed).toEqual(rule === 'kept' ? [] : [`interface eth0 renamed ${expected} (the ${rule} name udev gives it)`]);
        expect(text.some((line) => new RegExp(`^ramboot: \\[[\\d.]+\\] network up: ${expected} 10\\.0\\.2\\.15/24$`).test(line))).toBe(
          true,
        );
        // The booted system's /run says so too: ramtest prints /run/ramboot/info.
        expect(text.find((line) => line.startsWith('ramtest: info '))).toContain(`interface=${expected}`);
      },
      (bootTimeoutSeconds + 30) * 1000,
    );
  }
});
