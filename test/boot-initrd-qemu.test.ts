import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import type { Logger } from '../src/log.js';
import { api, killEverything, startDaemon, tempDir } from '../testkit/daemon.js';
import { makeDebianDisk } from './helpers/images.js';
import { bootGuest, debianImage, guestNbdAddress, rambootKit } from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

type InitrdModule = typeof import('../src/initrd/index.js');
type InspectModule = typeof import('../src/inspect/index.js');
const { BootFilesCache, readKit } = (await import(pathToFileURL(path.resolve('dist/src/initrd/index.js')).href)) as InitrdModule;
const { inspectBootImage } = (await import(pathToFileURL(path.resolve('dist/src/inspect/index.js')).href)) as InspectModule;

const dir = tempDir('nbdmux-initrd-qemu-');
const dataDirs: string[] = [];
afterAll(() => {
  killEverything(dataDirs);
  fs.rmSync(dir, { recursive: true, force: true });
});
const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

// The image's root has no systemd (a small cut of Debian: kernel, modules, os-release): its
// init is the host's static busybox, reporting what runs and powering off.
const init = `#!/nbdmux-test/busybox sh
export PATH=/nbdmux-test
busybox --install -s /nbdmux-test
echo "ramtest-own: uname=$(uname -r) modules=$(cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' ')"
poweroff -f
`;

it.skipIf(skipWithout('qemu-system-x86_64'))(
  "boots the image's own kernel with the initramfs built for it: its modules load, its root mounts",
  async () => {
    const kitFiles = await rambootKit(540_000);
    const kit = await readKit(kitFiles.dir);
    const disk = makeDebianDisk(await debianImage(1_200_000), dir, {
      'nbdmux-test/busybox': { executable: fs.readFileSync('/bin/busybox') },
      'nbdmux-test/init': { executable: init },
    });
    const inspection = await inspectBootImage({ image: { file: disk.file }, requiredModules: kit.rootModules });
    const cache = await BootFilesCache.open(path.join(dir, 'boot'), kit, quiet);
    const files = await cache.filesFor({ exportId: 1, image: { file: disk.file }, imageIdentity: 'v1', inspection });
    expect(files.own).toBe(true);

    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    expect((await api(daemon, 'POST', '/exports', { name: 'debian', file: disk.file })).status).toBe(201);
    const guest = bootGuest({
      kit: { ...kitFiles, vmlinuz: files.kernel, initrd: files.initrd },
      kernel: 'vmlinuz',
      nbdPort: daemon.nbdPort,
      append: `nbdroot=${guestNbdAddress}/debian init=/nbdmux-test/init`,
      serialLog: path.join(dir, 'serial.log'),
      timeoutSeconds: 120,
    });
    const report = await guest.waitForLine(/^ramtest-own: /, 110_000);
    console.log(`the image's own kernel reached its init ${(report.atMs / 1000).toFixed(1)} s after qemu start`);
    const lines = guest.lines().map((line) => line.text);
    expect(lines).toContainEqual(expect.stringMatching(/^ramboot: .* root mounted: \/dev\/nbd0p2 \(ext4\) read-only/));
    expect(lines.filter((line) => /ramboot: FAILED/.test(line))).toEqual([]);
    const [, uname, modules] = /^ramtest-own: uname=(\S+) modules=(.*)$/.exec(report.text)!;
    expect(uname).toBe(disk.kernelVersion);
    expect(modules!.trim().split(' ')).toEqual(expect.arrayContaining(['ext4', 'jbd2', 'nbd', 'overlay', 'virtio_net', 'virtio_pci']));
    await guest.exited;
  },
  300_000,
);
