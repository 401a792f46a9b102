import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { makeExt4, makeXfs, writeTree, type TreeEntry } from './helpers/images.js';

/**
 * `ready` says whether a machine can boot the export, root filesystem included: the image's own
 * kernel with its module for the root's filesystem, or the kit's kernel when the kit carries that
 * module; else not ready, with what is missing and what to do. The kits here are sent, never
 * booted (fakeKit): what matters is the load order nbdmux reads from them.
 */
describe('ready means the root filesystem can be mounted', () => {
  const dir = tempDir('nbdmux-boot-ready-');
  const dataDirs: string[] = [];
  const version = '6.1.0-77-amd64';
  afterAll(() => {
    killEverything(dataDirs);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A root tree, with a kernel of its own whose modules are `modules` when given. */
  function root(name: string, modules: string[] | null): string {
    const entries: Record<string, TreeEntry> = { 'etc/os-release': `PRETTY_NAME="${name}"\n` };
    if (modules) {
      const dirOf = `lib/modules/${version}`;
      entries[`boot/vmlinuz-${version}`] = crypto.randomBytes(4096);
      entries[`${dirOf}/modules.dep`] = modules.map((m) => `kernel/${m}.ko:\n`).join('');
      for (const m of modules) entries[`${dirOf}/kernel/${m}.ko`] = m;
    }
    return writeTree(path.join(dir, `${name}.tree`), entries);
  }
  const images: Record<string, string> = {};
  beforeAll(() => {
    images.xfsNoKernel = makeXfs(path.join(dir, 'xfs-no-kernel.img'), root('xfs-no-kernel', null));
    images.xfsOwn = makeXfs(path.join(dir, 'xfs-own.img'), root('xfs-own', ['nbd', 'ext4', 'xfs']));
    images.xfsKernelWithoutXfs = makeXfs(path.join(dir, 'xfs-kernel-without-xfs.img'), root('xfs-kernel-without-xfs', ['nbd', 'ext4']));
    images.ext4NoKernel = makeExt4(path.join(dir, 'ext4-no-kernel.img'), root('ext4-no-kernel', null), 8);
  });

  async function bootOfEach(kitModules: string): Promise<Record<string, { ready: boolean; kernel: string | null; reason: string | null }>> {
    const daemon: RunningDaemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(crypto.randomBytes(1024), kitModules)] });
    dataDirs.push(daemon.dataDir);
    for (const [name, file] of Object.entries(images)) expect((await api(daemon, 'POST', '/exports', { name, file })).status).toBe(201);
    type Boot = { ready: boolean; kernel: string | null; reason: string | null };
    return inspectedBoots<Boot>(daemon);
  }

  it('a kit without xfs: an xfs root boots only with its own kernel carrying xfs, and says what is missing otherwise', async () => {
    const boot = await bootOfEach('nbd max_part=16\next4\n');
    expect(boot.xfsOwn).toMatchObject({ ready: true, kernel: version, reason: null });
    expect(boot.ext4NoKernel).toMatchObject({ ready: true, kernel: '6.1.0-99-amd64' });
    expect(boot.xfsNoKernel).toEqual({
      ready: false,
      os: 'xfs-no-kernel',
      kernel: null,
      partition: null,
      fstype: 'xfs',
      layout: 'disk xfs',
      lv: null,
      subvol: null,
      reason:
        'cannot boot: the image\'s own kernel cannot (the image has no /lib/modules directory, so no kernel of its own to boot), and the ramboot kit\'s kernel 6.1.0-99-amd64 has no xfs module to mount its xfs root. Rebuild the kit with RAMBOOT_EXTRA_MODULES="xfs" (ramboot/build-kit) and restart nbdmux-server with it, or give the image a kernel whose modules include xfs',
    });
    expect(boot.xfsKernelWithoutXfs).toMatchObject({
      ready: false,
      kernel: null,
      reason: expect.stringMatching(
        /^cannot boot: the image's own kernel cannot \(the image's kernel has no module xfs, which ramboot needs\), and the ramboot kit's kernel 6\.1\.0-99-amd64 has no xfs module/,
      ),
    });
  });

  it('a kit built with RAMBOOT_EXTRA_MODULES=xfs boots an xfs root whose own kernel cannot', async () => {
    const boot = await bootOfEach('nbd max_part=16\next4\nxfs\n');
    expect(boot.xfsNoKernel).toMatchObject({
      ready: true,
      kernel: '6.1.0-99-amd64',
      reason: expect.stringMatching(/^boots the ramboot kit's kernel/),
    });
    expect(boot.xfsKernelWithoutXfs).toMatchObject({ ready: true, kernel: '6.1.0-99-amd64' });
  });
});
