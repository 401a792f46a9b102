import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeDebianDisk } from './helpers/images.js';
import { debianImage, rambootKit, type RambootKit } from './helpers/qemu.js';

/**
 * What the daemon makes of the images registered in it: each one inspected out of process, the
 * answer stored and shown as `boot`, and the boot routes serving the image's own kernel with an
 * initramfs for it, or the kit's with the reason. Real kit, real Debian kernel and modules.
 */
describe('boot wiring: each export boots what its image holds', () => {
  const dir = tempDir('nbdmux-boot-wiring-');
  const dataDirs: string[] = [];
  let kit: RambootKit;
  let debian: ReturnType<typeof makeDebianDisk>;
  let busybox: string;
  let daemon: RunningDaemon;

  const start = async (dataDir?: string) => {
    daemon = await startDaemon({ dataDir, args: ['--ramboot-kit', kit.dir] });
    dataDirs.push(daemon.dataDir);
  };
  const bootOf = async (name: string) => (await api(daemon, 'GET', `/exports/${name}`)).json.boot;
  const settled = (name: string) =>
    waitFor(`${name} inspected`, async () => ((await bootOf(name)).reason === 'inspecting' ? undefined : bootOf(name)), 30_000);
  const bytes = async (route: string) => Buffer.from(await (await fetch(`${daemon.url}${route}`)).arrayBuffer());
  const kitKernelVersion = () => /^KERNEL_VERSION=(.+)$/m.exec(fs.readFileSync(path.join(kit.dir, 'kit.env'), 'utf8'))![1]!;

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    debian = makeDebianDisk(await debianImage(1_200_000), dir);
    // A copy: the test rewrites it in place.
    busybox = path.join(dir, 'busybox.img');
    execFileSync('cp', ['--sparse=always', kit.images.gpt, busybox]);
    await start();
  }, 1_800_000);
  afterAll(() => {
    killEverything(dataDirs);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("boots a Debian image with its own kernel, and an initramfs of the kit's with the image's modules", async () => {
    const registered = Date.now();
    expect((await api(daemon, 'POST', '/exports', { name: 'debian', file: debian.file })).status).toBe(201);
    // An inspection is a child process of about a second: nothing waits for it, and until it answers nothing boots.
    expect(await bootOf('debian')).toEqual({
      ready: false,
      os: null,
      kernel: null,
      partition: null,
      fstype: null,
      layout: null,
      lv: null,
      subvol: null,
      reason: 'inspecting',
    });
    expect((await api(daemon, 'GET', '/boot/debian.ipxe')).status).toBe(503);
    expect(await settled('debian')).toEqual({
      ready: true,
      os: 'Debian GNU/Linux 12 (bookworm)',
      kernel: debian.kernelVersion,
      partition: 2,
      fstype: 'ext4',
      reason: null,
      layout: 'gpt/p2 ext4',
      lv: null,
      subvol: null,
    });
    const inspectedMs = Date.now() - registered;

    expect((await bytes('/boot/debian.ipxe')).toString()).toContain(`/debian nbdroot.part=2 console=tty0`);
    // The first request builds the image's boot files; the next one finds them built.
    const timed = async (route: string) => {
      const started = performance.now();
      const body = await bytes(route);
      return { body, ms: performance.now() - started };
    };
    const built = await timed('/boot/debian/vmlinuz');
    const cached = await timed('/boot/debian/vmlinuz');
    console.log(
      `boot-wiring: inspected within ${inspectedMs} ms of registration; first kernel request (initramfs built) ${built.ms.toFixed(0)} ms, next (cached) ${cached.ms.toFixed(1)} ms, ${built.body.length} bytes`,
    );
    expect(cached.body.equals(built.body)).toBe(true);
    expect(built.body.equals(fs.readFileSync(path.join(debian.tree, `boot/vmlinuz-${debian.kernelVersion}`)))).toBe(true);
    const initrd = await bytes('/boot/debian/initrd.img');
    const kitInitrd = fs.readFileSync(kit.initrd);
    // The kit's archive first, then the image's modules appended as a second one.
    expect(initrd.subarray(0, kitInitrd.length).equals(kitInitrd)).toBe(true);
    expect(initrd.length).toBeGreaterThan(kitInitrd.length);
  });

  it("boots an image with no kernel of its own with the kit's, and says so", async () => {
    expect((await api(daemon, 'POST', '/exports', { name: 'busybox', file: busybox })).status).toBe(201);
    expect(await settled('busybox')).toEqual({
      ready: true,
      os: null,
      kernel: kitKernelVersion(),
      partition: 3,
      fstype: 'ext4',
      reason: `boots the ramboot kit's kernel ${kitKernelVersion()}: the image has no /lib/modules directory, so no kernel of its own to boot`,
      layout: 'gpt/p3 ext4',
      lv: null,
      subvol: null,
    });
    expect((await bytes('/boot/busybox.ipxe')).toString()).toContain('/busybox nbdroot.part=3 ');
    expect((await bytes('/boot/busybox/vmlinuz')).equals(fs.readFileSync(kit.vmlinuz))).toBe(true);
    expect((await bytes('/boot/busybox/initrd.img')).equals(fs.readFileSync(kit.initrd))).toBe(true);
  });

  it('inspects an image again when it is rewritten in place, and serves the new kernel', async () => {
    const pinned = fs.statSync(busybox).ino;
    // cp onto an existing file truncates and writes it: the same inode (the pinned file), another size and mtime.
    execFileSync('cp', ['--sparse=always', debian.file, busybox]);
    expect(fs.statSync(busybox).ino).toBe(pinned);
    // Machines boot it as last inspected until it is inspected again, once it has stayed unchanged for 2 s.
    expect(await bootOf('busybox')).toMatchObject({ ready: true, os: null, kernel: kitKernelVersion(), partition: 3 });
    // The kit's kernel may be the image's version: the fallback's reason tells them apart.
    const reinspected = await waitFor(
      'busybox inspected again',
      async () => ((await bootOf('busybox')).reason === null ? bootOf('busybox') : undefined),
      30_000,
    );
    expect(reinspected).toEqual({
      ready: true,
      os: 'Debian GNU/Linux 12 (bookworm)',
      kernel: debian.kernelVersion,
      partition: 2,
      fstype: 'ext4',
      reason: null,
      layout: 'gpt/p2 ext4',
      lv: null,
      subvol: null,
    });
    expect(
      (await bytes('/boot/busybox/vmlinuz')).equals(fs.readFileSync(path.join(debian.tree, `boot/vmlinuz-${debian.kernelVersion}`))),
    ).toBe(true);
  });

  it("boots the export's current version: a PUT or a rollback switches what machines get, and an image inspected before is not inspected again", async () => {
    const debianKernel = fs.readFileSync(path.join(debian.tree, `boot/vmlinuz-${debian.kernelVersion}`));
    expect((await api(daemon, 'POST', '/exports', { name: 'lab', file: kit.images.gpt })).status).toBe(201);
    expect(await settled('lab')).toMatchObject({ ready: true, kernel: kitKernelVersion(), os: null });

    // The new version is inspected as it becomes current: until then it boots nothing, not the old image.
    expect((await api(daemon, 'PUT', '/exports/lab', { file: debian.file })).status).toBe(200);
    expect(await bootOf('lab')).toMatchObject({ ready: false, reason: 'inspecting' });
    expect(await settled('lab')).toEqual({
      ready: true,
      os: 'Debian GNU/Linux 12 (bookworm)',
      kernel: debian.kernelVersion,
      partition: 2,
      fstype: 'ext4',
      reason: null,
      layout: 'gpt/p2 ext4',
      lv: null,
      subvol: null,
    });
    expect((await bytes('/boot/lab/vmlinuz')).equals(debianKernel)).toBe(true);

    // Version 1's inspection is stored in its row: even after a restart, which reads only the current
    // versions', the rollback boots the kit's kernel again at once, with no new look.
    expect(await daemon.stop()).toBe(0);
    await start(daemon.dataDir);
    expect((await api(daemon, 'POST', '/exports/lab/rollback')).status).toBe(200);
    expect(await bootOf('lab')).toMatchObject({ ready: true, kernel: kitKernelVersion(), os: null, partition: 3 });
    expect((await bytes('/boot/lab/vmlinuz')).equals(fs.readFileSync(kit.vmlinuz))).toBe(true);
    expect((await bytes('/boot/lab.ipxe')).toString()).toContain('/lab nbdroot.part=3 ');
  });

  it('keeps each inspection across a restart, and drops the boot files of a removed export', async () => {
    const bootDir = path.join(daemon.dataDir, 'boot');
    expect(await daemon.stop()).toBe(0);
    await start(daemon.dataDir);
    // Stored with the image version it saw: the same version is not inspected again.
    expect(await bootOf('debian')).toMatchObject({ ready: true, kernel: debian.kernelVersion, reason: null });

    const { id } = (await api(daemon, 'GET', '/exports/debian')).json;
    await bytes('/boot/debian/initrd.img');
    const built = () => fs.readdirSync(bootDir).filter((name) => name.startsWith(`${id}-`));
    expect(built().sort()).toEqual([expect.stringMatching(/\.initrd\.img$/), expect.stringMatching(/\.vmlinuz$/)]);
    expect((await api(daemon, 'DELETE', '/exports/debian')).status).toBe(204);
    await waitFor('the removed export’s boot files gone', () => (built().length === 0 ? true : undefined));
  });
});
