import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unpackCpio } from '../src/initrd/cpio.js';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { linuxPartitionOffset } from './helpers/images.js';
import {
  bootFailureReport,
  bootGuest,
  debianImage,
  guestHttpHost,
  rambootKit,
  type DebianImage,
  type Guest,
  type RambootKit,
  type SerialLine,
  textAfter,
  registerImageCopy,
} from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * The proof of issue 11: machines boot from qemu's own PXE ROM (Debian ipxe-qemu) with nbdmux as
 * their whole boot server. qemu's DHCP and TFTP hand the ROM a script that chains
 * http://10.0.2.100/boot/NAME.ipxe; script, kernel, initramfs and the root over NBD then all come
 * from the daemon, through guestfwd to 127.0.0.1 (restrict=on). The real Debian 12 image boots
 * its own kernel; the busybox test image, which has none, boots the kit's. One guest at a time.
 */
/** Ceilings, not expectations: idle, the busybox guest powers off after 8 s, yet a loaded CI host once had it still booting at 116 s. */
const debianTimeoutSeconds = 360;
const busyboxTimeoutSeconds = 300;

/** When the machine's first HTTP request came and nbdmux's last answer byte went, through a loopback forwarder in front of the HTTP port. */
interface HttpTimes {
  firstRequestAt?: number;
  lastAnswerAt?: number;
}

function timedForward(targetPort: number): Promise<{ port: number; times: HttpTimes; close(): void }> {
  const times: HttpTimes = {};
  const server = net.createServer((guest) => {
    const daemon = net.connect({ host: '127.0.0.1', port: targetPort });
    guest.on('data', () => (times.firstRequestAt ??= Date.now()));
    daemon.on('data', () => (times.lastAnswerAt = Date.now()));
    guest.pipe(daemon).pipe(guest);
    guest.on('error', () => daemon.destroy());
    daemon.on('close', () => guest.destroy()).on('error', () => guest.destroy());
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ port: (server.address() as net.AddressInfo).port, times, close: () => server.close() })),
  );
}

describe.skipIf(skipWithout('qemu-system-x86_64'))('pxe-boot: from a PXE ROM to a running system, everything from nbdmux', () => {
  const dir = tempDir('nbdmux-pxe-boot-');
  const logs = path.resolve('test-artifacts', 'pxe-boot');
  let kit: RambootKit;
  let debian: DebianImage;
  let daemon: RunningDaemon;
  let guest: Guest | undefined;
  let imageBuildMs = 0;

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    const started = Date.now();
    debian = await debianImage(1_200_000);
    imageBuildMs = Date.now() - started;
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon({ args: ['--ramboot-kit', kit.dir, '--nbd-public-port', '10809', '--allowed-host', guestHttpHost] });
    for (const [name, image] of [
      ['debian', debian.file],
      ['busybox', kit.images.gpt],
    ] as const) {
      fs.writeFileSync(path.join(dir, `chain-${name}.ipxe`), `#!ipxe\nchain http://${guestHttpHost}/boot/${name}.ipxe\n`);
      await registerImageCopy(daemon, dir, name, image);
    }
    await inspectedBoots(daemon, 30_000);
  }, 1_800_000);

  afterAll(() => {
    guest?.kill();
    killEverything([daemon.dataDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Boots `name` from the PXE ROM; resolves with its console and its HTTP times, in ms from qemu's start. */
  async function pxeBoot(name: string, timeoutSeconds: number, extra: { nicOptions?: string; memoryMiB?: number } = {}) {
    const http = await timedForward(daemon.httpPort);
    const started = Date.now();
    guest = bootGuest({
      kit,
      kernel: 'vmlinuz',
      nbdPort: daemon.nbdPort,
      append: '',
      pxe: { tftpDir: dir, bootfile: `chain-${name}.ipxe`, httpPort: http.port },
      serialLog: path.join(logs, `${name}.log`),
      timeoutSeconds,
      ...extra,
    });
    const { code, atMs: exitedMs } = await guest.exited;
    http.close();
    const sinceStart = (at: number | undefined) => (at === undefined ? undefined : at - started);
    return {
      code,
      exitedMs,
      lines: guest.lines(),
      http: { scriptMs: sinceStart(http.times.firstRequestAt), downloadedMs: sinceStart(http.times.lastAnswerAt) },
    };
  }

  const bytes = async (route: string) => Buffer.from(await (await fetch(`${daemon.url}${route}`)).arrayBuffer());
  const seconds = (ms: number | undefined) => (ms === undefined ? '?' : (ms / 1000).toFixed(1));

  it(
    'boots Debian 12 with its own kernel: a module not in the initramfs loads, nothing waits for a device, systemd is running, poweroff completes',
    async () => {
      expect((await api(daemon, 'GET', '/exports/debian')).json.boot).toEqual({
        ready: true,
        os: 'Debian GNU/Linux 12 (bookworm)',
        kernel: debian.kernelVersion,
        partition: 2,
        fstype: 'ext4',
        reason: null,
      });
      // PCI slot 2: the slot the image's /etc/network/interfaces (ens2) was written for.
      const { code, exitedMs, lines, http } = await pxeBoot('debian', debianTimeoutSeconds, { nicOptions: 'addr=2', memoryMiB: 1024 });
      const text = lines.map((line) => line.text).join('\n');
      const said = (key: string) => textAfter(lines, `nbdmux-boot-check: ${key}`);
      expect(code, `qemu did not power off by itself (137: killed after ${debianTimeoutSeconds} s)\n${text.slice(-3000)}`).toBe(0);
      expect(text).not.toContain('ramboot: FAILED');

      // What the machine fetched, before this test fetches the same files to compare them.
      const events = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 50 });
      const bootEvents = events.filter(
        (event) =>
          event.exportName === 'debian' && (event.type === 'boot.script' || event.type === 'boot.kernel' || event.type === 'boot.initrd'),
      );
      expect(bootEvents.map((event) => [event.type, 'status' in event.details ? event.details.status : null]).reverse()).toEqual([
        ['boot.script', 200],
        ['boot.kernel', 200],
        ['boot.initrd', 200],
      ]);
      // The kernel running is the image's own: its version, and the very bytes of its /boot/vmlinuz-VERSION.
      expect(said('uname')).toBe(debian.kernelVersion);
      const imageKernel = path.join(dir, 'image-vmlinuz');
      execFileSync(
        'debugfs',
        ['-R', `dump /boot/vmlinuz-${debian.kernelVersion} ${imageKernel}`, `${debian.file}?offset=${linuxPartitionOffset(debian.file)}`],
        { stdio: 'pipe' },
      );
      expect((await bytes('/boot/debian/vmlinuz')).equals(fs.readFileSync(imageKernel))).toBe(true);
      // vfat is in neither archive of the initramfs nbdmux served: it loaded from the image's own modules.
      const initrd = await bytes('/boot/debian/initrd.img');
      const kitBytes = fs.statSync(kit.initrd).size;
      const served = [initrd.subarray(0, kitBytes), initrd.subarray(kitBytes + ((4 - (kitBytes % 4)) % 4))].flatMap((part) =>
        unpackCpio(gunzipSync(part)).map((entry) => entry.name),
      );
      expect(served.filter((name) => name.endsWith('/ext4.ko')).length).toBeGreaterThan(0);
      expect(served.filter((name) => /\/vfat\.ko/.test(name))).toEqual([]);
      expect(said('modprobe-vfat')).toBe('ok');

      expect(text).not.toContain('Timed out waiting for device');
      expect(text).not.toContain('Dependency failed');
      expect(said('device-timeouts')).toBe('0');
      expect(said('system')).toBe('running');
      expect(lines.some((line) => line.text.endsWith('nbdmux-boot-check: poweroff'))).toBe(true);
      expect(lines.some((line) => /reboot: Power down/.test(line.text))).toBe(true);

      report('debian (its own kernel)', lines, http, exitedMs);
      console.log(`pxe-boot: the Debian image from ramboot/cached-debian-image in ${seconds(imageBuildMs)} s (warm cache)`);
    },
    (debianTimeoutSeconds + 60) * 1000,
  );

  it(
    "boots the busybox test image, which has no kernel, with the kit's kernel through the same path",
    async () => {
      expect((await api(daemon, 'GET', '/exports/busybox')).json.boot.reason).toMatch(
        /^boots the ramboot kit's kernel \S+: the image has no \/lib\/modules directory/,
      );
      const { code, exitedMs, lines, http } = await pxeBoot('busybox', busyboxTimeoutSeconds);
      const text = lines.map((line) => line.text);
      expect(code, `qemu did not power off by itself (null: killed at the time limit)\n${bootFailureReport(lines)}`).toBe(0);
      expect(text.filter((line) => line.startsWith('ramboot: FAILED'))).toEqual([]);
      expect(text.find((line) => line.startsWith('ramtest: init '))).toMatch(new RegExp(`^ramtest: init pid 1 image ${kit.imageId} `));
      expect((await bytes('/boot/busybox/vmlinuz')).equals(fs.readFileSync(kit.vmlinuz))).toBe(true);
      report("busybox (the kit's kernel)", lines, http, exitedMs);
    },
    (busyboxTimeoutSeconds + 60) * 1000,
  );

  /** The boot's split, host clock from qemu's start: PXE ROM to the script request, downloads, kernel, attach, userspace. */
  function report(what: string, lines: SerialLine[], http: { scriptMs?: number; downloadedMs?: number }, exitedMs: number): void {
    const line = (pattern: RegExp) => lines.find((candidate) => pattern.test(candidate.text));
    const attach = /attached .* in ([\d.]+)s$/.exec(line(/^ramboot: \[[\d.]+\] attached /)?.text ?? '')?.[1];
    console.log(
      [
        `pxe-boot ${what}, seconds from qemu start:`,
        `  PXE ROM (BIOS, DHCP, TFTP chain.ipxe) until the script request: ${seconds(http.scriptMs)}`,
        `  script, kernel and initrd downloaded over HTTP by:             ${seconds(http.downloadedMs)}`,
        `  the kernel ran the initramfs by:                               ${seconds(line(/^ramboot: \[[\d.]+\] starting/)?.atMs)}`,
        `  export attached over NBD (nbd-attach, in ${attach ?? '?'} s) and root mounted by: ${seconds(line(/^ramboot: \[[\d.]+\] root mounted/)?.atMs)}`,
        `  userspace ready (systemd running, or the test init) by:        ${seconds(line(/nbdmux-boot-check: system |^ramtest: init /)?.atMs)}`,
        `  powered off from inside, qemu exited:                          ${seconds(exitedMs)}`,
      ].join('\n'),
    );
  }
});
