import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from './helpers/daemon.js';
import { serveFile, startImageServer, type ImageServer } from './helpers/image-fixtures.js';
import { makeExt4, makeGptDisk, makeVfat, writeTree } from './helpers/images.js';
import { runText } from './helpers/process.js';
import { rambootKit, type RambootKit } from './helpers/qemu.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));

/** What a terminal or a bidi-aware view acts on: C0 (newline apart, checked on its own), DEL, C1, bidi controls. */
const controlCharacter = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
/** ESC ] 0 ; ... BEL: sets the terminal's title. */
const retitle = '\x1b]0;owned by an image\x07';

/**
 * Strings an image, a server or an old row holds reach the operator's terminal only written out:
 * the daemon cleans them where they enter, the CLI escapes whatever it prints all the same.
 * Real kit, real inspection, real qemu-img, real CLI against a real daemon.
 */
describe('text from images and servers, in the API and the operator CLI', () => {
  const dir = tempDir('nbdmux-hostile-text-');
  let kit: RambootKit;
  let daemon: RunningDaemon;
  let server: ImageServer;
  const dataDirs: string[] = [];
  const nbdmux = (args: string[]) => {
    const { NBDMUX_ADMIN_PASSWORD: _password, ...env } = process.env;
    return runText(process.execPath, [cli, ...args], { env: { ...env, NBDMUX_URL: daemon.url }, timeoutMs: 20_000 });
  };

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    // A qcow2 whose header names a backing file: its name is the image's to choose.
    const qcow2 = path.join(dir, 'backed.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', `/srv/${retitle}.img`, '-F', 'raw', qcow2, '1M']);
    server = await startImageServer({ '/backed.qcow2': serveFile(qcow2) });
    daemon = await startDaemon({ args: ['--ramboot-kit', kit.dir] });
    dataDirs.push(daemon.dataDir);
  }, 600_000);
  afterAll(async () => {
    killEverything(dataDirs);
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("stores and shows an image's kernel file name and os-release name with their control characters written out", async () => {
    const version = '6.1.0-9-amd64';
    // Its only kernel's name carries a title change, so the reason quotes it; its os-release name a bidi override too.
    const tree = writeTree(path.join(dir, 'tree'), {
      'etc/os-release': `PRETTY_NAME="\u202eFake ${retitle}Linux"\n`,
      [`boot/vmlinuz-${retitle}`]: crypto.randomBytes(4096),
      [`lib/modules/${version}/modules.dep`]: '',
    });
    const disk = makeGptDisk(path.join(dir, 'hostile.img'), [
      { image: makeVfat(path.join(dir, 'esp.vfat'), 8), sizeMiB: 8, type: 'ef00' },
      { image: makeExt4(path.join(dir, 'root.ext4'), tree, 16), sizeMiB: 16, type: '8300' },
    ]).file;
    expect((await api(daemon, 'POST', '/exports', { name: 'hostile', file: disk })).status).toBe(201);
    const boot = await waitFor('the inspection', async () => {
      const shown = (await api(daemon, 'GET', '/exports/hostile')).json.boot;
      return shown.reason === 'inspecting' ? undefined : shown;
    }, 30_000);

    expect(boot.reason).toContain(`/boot has vmlinuz-\\u001b]0;owned by an image\\u0007, /lib/modules has ${version}`);
    // os-release names were already cut of C0 and C1; the bidi override is written out now.
    expect(boot.os).toBe('\\u202eFake ]0;owned by an imageLinux');
    expect(boot.reason).not.toMatch(controlCharacter);
    expect(boot.os).not.toMatch(controlCharacter);

    const shown = await nbdmux(['show', 'hostile']);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).not.toMatch(controlCharacter);
    expect(shown.stdout).toMatch(/\nboot +ready: \\u202eFake .*\(boots the ramboot kit's kernel .*\/boot has vmlinuz-\\u001b\]0;owned by an image\\u0007, /);
  });

  it("stores and shows an import's failure, which quotes the image, with its control characters written out", async () => {
    expect((await api(daemon, 'POST', '/exports', { name: 'backed', url: server.url('/backed.qcow2') })).status).toBe(202);
    const [failed] = await waitFor('the import to fail', async () => {
      const versions = (await api(daemon, 'GET', '/exports/backed/versions')).json;
      return versions[0]?.state === 'failed' ? versions : undefined;
    }, 30_000);
    expect(failed.error).toMatch(/^the qcow2 image has a backing file \(\/srv\/\\u001b\]0;owned by an image\\u0007\.img\): /);
    const events = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 50 });
    expect(events.find((e) => e.type === 'import.failed')?.details).toMatchObject({ error: failed.error });

    for (const args of [['show', 'backed'], ['versions', 'backed']]) {
      const shown = await nbdmux(args);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).not.toMatch(controlCharacter);
      expect(shown.stdout).toContain('backing file (/srv/\\u001b]0;owned by an image\\u0007.img)');
    }
  });
});
