import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import {
  bootGuest,
  debianImage,
  guestHttpHost,
  rambootKit,
  type DebianImage,
  type Guest,
  type RambootKit,
  textAfter,
  registerImageCopy,
} from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * Issue 23: an image's own kernel boots a machine when it can drive that machine's NIC, whatever
 * other NIC drivers the kit carries. Machines boot from qemu's PXE ROM through nbdmux alone (as
 * pxe-boot), each a known machine whose script names its NIC (iPXE's busid). Images from
 * ramboot/cached-debian-image: `cloud` (Debian's linux-image-cloud-amd64: virtio drivers only)
 * and `zst` (bookworm-backports' kernel, another than the kit's, its modules recompressed to
 * .ko.zst). One guest at a time.
 */
const bootTimeoutSeconds = 600;
const machines = {
  cloudVirtio: { mac: '52:54:00:23:00:01', name: 'cloud-virtio', export: 'cloud' },
  cloudE1000: { mac: '52:54:00:23:00:02', name: 'cloud-e1000', export: 'cloud' },
  zstVirtio: { mac: '52:54:00:23:00:03', name: 'zst-virtio', export: 'zst' },
};

describe.skipIf(skipWithout('qemu-system-x86_64'))("nic-kernel: the image's own kernel boots a machine whose NIC it drives", () => {
  const dir = tempDir('nbdmux-nic-kernel-');
  const logs = path.resolve('test-artifacts', 'nic-kernel');
  let kit: RambootKit;
  let kitKernel: string;
  let cloud: DebianImage;
  let zst: DebianImage;
  let daemon: RunningDaemon;
  let guest: Guest | undefined;

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    kitKernel = /^KERNEL_VERSION=(.+)$/m.exec(fs.readFileSync(path.join(kit.dir, 'kit.env'), 'utf8'))![1]!;
    cloud = await debianImage(1_500_000, 'cloud');
    zst = await debianImage(1_500_000, 'zst');
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon({ args: ['--ramboot-kit', kit.dir, '--nbd-public-port', '10809', '--allowed-host', guestHttpHost] });
    for (const [name, image] of [
      ['cloud', cloud.file],
      ['zst', zst.file],
    ] as const) {
      await registerImageCopy(daemon, dir, name, image);
    }
    for (const machine of Object.values(machines)) {
      const reply = await api(daemon, 'POST', '/machines', machine);
      if (reply.status !== 201) throw new Error(`adding machine ${machine.name} failed (${reply.status}): ${reply.text}`);
    }
    // What the ROM runs: the machine's own script, by its MAC.
    fs.writeFileSync(path.join(dir, 'chain.ipxe'), `#!ipxe\nchain http://${guestHttpHost}/boot.ipxe?mac=\${net0/mac}\n`);
    await inspectedBoots(daemon, 60_000);
  }, 3_600_000);

  afterAll(() => {
    guest?.kill();
    killEverything([daemon.dataDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Boots machine `mac` from the PXE ROM with its NIC in PCI slot 2 (ens2, as the image's interfaces file wants). */
  async function pxeBoot(mac: string, nicModel: string, log: string, stopAt?: RegExp) {
    const started = Date.now();
    guest = bootGuest({
      kit,
      kernel: 'vmlinuz',
      nbdPort: daemon.nbdPort,
      append: '',
      pxe: { tftpDir: dir, bootfile: 'chain.ipxe', httpPort: daemon.httpPort },
      nicModel,
      nicOptions: `addr=2,mac=${mac}`,
      memoryMiB: 1024,
      serialLog: path.join(logs, log),
      timeoutSeconds: bootTimeoutSeconds,
    });
    if (stopAt) {
      await guest.waitForLine(stopAt, bootTimeoutSeconds * 1000);
      guest.kill();
    }
    const { code } = await guest.exited;
    const lines = guest.lines();
    const said = (key: string) => textAfter(lines, `nbdmux-boot-check: ${key}`);
    return { code, lines, text: lines.map((line) => line.text).join('\n'), said, seconds: ((Date.now() - started) / 1000).toFixed(0) };
  }

  /** The detail nbdmux gave the machine's kernel stage: which kernel it boots, and why. */
  async function kernelDetail(mac: string): Promise<string | undefined> {
    const events = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 200 });
    const stage = events.find((event) => event.type === 'machine.stage' && event.details.mac === mac && event.details.stage === 'kernel');
    return stage?.type === 'machine.stage' ? stage.details.detail : undefined;
  }

  it(
    "boots Debian's cloud kernel on a virtio NIC: its own kernel, modprobe vfat works, systemd running",
    async () => {
      const boot = (await api(daemon, 'GET', '/exports/cloud')).json.boot;
      expect(boot).toMatchObject({ ready: true, kernel: cloud.kernelVersion, fstype: 'ext4' });
      // The export's word for the machines whose NIC its kernel cannot drive.
      expect(boot.reason).toContain(`the ramboot kit's kernel ${kitKernel} boots the others`);
      expect(boot.reason).toMatch(/has no module e1000, e1000e, igb$/);
      const { code, text, said, seconds } = await pxeBoot(machines.cloudVirtio.mac, 'virtio-net-pci', 'cloud-virtio.log');
      expect(code, `qemu did not power off by itself (137: killed after ${bootTimeoutSeconds} s)\n${text.slice(-3000)}`).toBe(0);
      expect(text).not.toContain('ramboot: FAILED');
      expect(said('uname')).toBe(cloud.kernelVersion);
      expect(said('modprobe-vfat')).toBe('ok');
      expect(said('system')).toBe('running');
      expect(await kernelDetail(machines.cloudVirtio.mac)).toBe("boots the image's own kernel (NIC PCI 1af4:1000)");
      console.log(`nic-kernel: cloud kernel ${said('uname')} on virtio-net, powered off after ${seconds} s wall (${said('analyze')})`);
    },
    (bootTimeoutSeconds + 60) * 1000,
  );

  it(
    "boots the kit's kernel for an e1000 NIC, which the cloud kernel cannot drive, and says so",
    async () => {
      // Stopped once the boot check names the running kernel: the fallback's boot is today's, proven elsewhere.
      const { text, said, seconds } = await pxeBoot(
        machines.cloudE1000.mac,
        'e1000',
        'cloud-e1000.log',
        /nbdmux-boot-check: uname |ramboot: FAILED/,
      );
      expect(text).not.toContain('ramboot: FAILED');
      expect(said('uname')).toBe(kitKernel);
      expect(await kernelDetail(machines.cloudE1000.mac)).toBe(
        `boots the ramboot kit's kernel ${kitKernel} (NIC PCI 8086:100e): the image's kernel cannot drive the machine's NIC PCI 8086:100e: no module of its kernel has a modules.alias for PCI 8086:100e`,
      );
      console.log(`nic-kernel: cloud image on e1000 ran the kit's kernel ${said('uname')}, seen after ${seconds} s wall`);
    },
    (bootTimeoutSeconds + 60) * 1000,
  );

  it(
    'boots an image whose modules are .ko.zst with its own (backports) kernel: modprobe vfat works, systemd running',
    async () => {
      expect((await api(daemon, 'GET', '/exports/zst')).json.boot).toEqual({
        ready: true,
        os: 'Debian GNU/Linux 12 (bookworm)',
        kernel: zst.kernelVersion,
        partition: 2,
        fstype: 'ext4',
        reason: null,
      });
      expect(zst.kernelVersion).not.toBe(kitKernel);
      const { code, text, said, seconds } = await pxeBoot(machines.zstVirtio.mac, 'virtio-net-pci', 'zst-virtio.log');
      expect(code, `qemu did not power off by itself (137: killed after ${bootTimeoutSeconds} s)\n${text.slice(-3000)}`).toBe(0);
      expect(text).not.toContain('ramboot: FAILED');
      expect(said('uname')).toBe(zst.kernelVersion);
      expect(said('modprobe-vfat')).toBe('ok');
      expect(said('system')).toBe('running');
      console.log(`nic-kernel: zst image, kernel ${said('uname')}, powered off after ${seconds} s wall (${said('analyze')})`);
    },
    (bootTimeoutSeconds + 60) * 1000,
  );
});
