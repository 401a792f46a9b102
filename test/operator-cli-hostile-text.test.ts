import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { serveFile, startImageServer, type ImageServer } from '../testkit/image-fixtures.js';
import { makeExt4, makeGptDisk, makeVfat, writeTree } from './helpers/images.js';
import { runText, startProcess } from '../testkit/process.js';
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
    const boot = await waitFor(
      'the inspection',
      async () => {
        const shown = (await api(daemon, 'GET', '/exports/hostile')).json.boot;
        return shown.reason === 'inspecting' ? undefined : shown;
      },
      30_000,
    );

    expect(boot.reason).toContain(`/boot has vmlinuz-\\u001b]0;owned by an image\\u0007, /lib/modules has ${version}`);
    // os-release names were already cut of C0 and C1; the bidi override is written out now.
    expect(boot.os).toBe('\\u202eFake ]0;owned by an imageLinux');
    expect(boot.reason).not.toMatch(controlCharacter);
    expect(boot.os).not.toMatch(controlCharacter);

    const shown = await nbdmux(['show', 'hostile']);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).not.toMatch(controlCharacter);
    expect(shown.stdout).toMatch(
      /\nboot +ready: \\u202eFake .*\(boots the ramboot kit's kernel .*\/boot has vmlinuz-\\u001b\]0;owned by an image\\u0007, /,
    );
  });

  it("stores and shows an import's failure, which quotes the image, with its control characters written out", async () => {
    expect((await api(daemon, 'POST', '/exports', { name: 'backed', url: server.url('/backed.qcow2') })).status).toBe(202);
    const [failed] = await waitFor(
      'the import to fail',
      async () => {
        const versions = (await api(daemon, 'GET', '/exports/backed/versions')).json;
        return versions[0]?.state === 'failed' ? versions : undefined;
      },
      30_000,
    );
    expect(failed.error).toMatch(/^the qcow2 image has a backing file \(\/srv\/\\u001b\]0;owned by an image\\u0007\.img\): /);
    const events = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 50 });
    expect(events.find((e) => e.type === 'import.failed')?.details).toMatchObject({ error: failed.error });

    for (const args of [
      ['show', 'backed'],
      ['versions', 'backed'],
    ]) {
      const shown = await nbdmux(args);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).not.toMatch(controlCharacter);
      expect(shown.stdout).toContain('backing file (/srv/\\u001b]0;owned by an image\\u0007.img)');
    }
  });

  it('prints the rows an older nbdmux stored raw with their control characters written out: show, versions, watch', async () => {
    // Only a row written before the daemon cleaned its input holds raw text: written here by hand, daemon stopped.
    await daemon.stop();
    const Database = (await import('better-sqlite3')).default;
    const db = new Database(path.join(daemon.dataDir, 'state.db'));
    const raw = `old\x9b2J ${retitle}\u202eeman`;
    db.prepare(`UPDATE export_versions SET error = ? WHERE state = 'failed'`).run(raw);
    db.prepare(`UPDATE events SET details = json_set(details, '$.error', ?) WHERE type = 'import.failed'`).run(raw);
    db.close();
    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--ramboot-kit', kit.dir] });
    dataDirs.push(daemon.dataDir);
    expect((await api(daemon, 'GET', '/exports/backed/versions')).json[0].error).toBe(raw);

    const written = 'old\\u009b2J \\u001b]0;owned by an image\\u0007\\u202eeman';
    for (const args of [
      ['show', 'backed'],
      ['versions', 'backed'],
    ]) {
      const shown = await nbdmux(args);
      expect(shown.stdout).not.toMatch(controlCharacter);
      expect(shown.stdout).toContain(written);
    }
    // --json prints the same document, with JSON's own escapes for what a terminal would act on.
    const json = await nbdmux(['--json', 'versions', 'backed']);
    expect(json.stdout).not.toMatch(controlCharacter);
    expect(JSON.parse(json.stdout)[0].error).toBe(raw);

    const { NBDMUX_ADMIN_PASSWORD: _password, ...env } = process.env;
    const lines = startProcess(process.execPath, [cli, 'watch'], { env: { ...env, NBDMUX_URL: daemon.url } });
    // script(1) gives watch a terminal: the screen it redraws writes its own sequences, and only those.
    const screen = startProcess('script', ['-qfec', `stty cols 400 rows 40; exec ${process.execPath} ${cli} watch`, '/dev/null'], {
      env: { ...env, NBDMUX_URL: daemon.url },
      stdin: 'pipe',
    });
    try {
      await waitFor('the event line', () => (lines.stdout().includes('import.failed') ? true : undefined));
      expect(lines.stdout()).not.toMatch(controlCharacter);
      expect(lines.stdout()).toContain(`): ${written}`);
      await waitFor('the event on the screen', () => (screen.stdout().includes('import.failed') ? true : undefined));
      expect(screen.stdout()).toContain(`): ${written}`);
      // Its own: CSI sequences (ESC [), CR LF between lines. None from the row: no OSC (ESC ]), no BEL, no C1, no bidi.
      expect(
        screen
          .stdout()
          .replace(/\x1b\[[?0-9;]*[A-Za-z]/g, '')
          .replaceAll('\r\n', '\n'),
      ).not.toMatch(controlCharacter);
    } finally {
      lines.child.kill('SIGINT');
      screen.child.stdin!.write('\x03');
      await Promise.all([lines.exited, screen.exited]);
    }
  });
});
