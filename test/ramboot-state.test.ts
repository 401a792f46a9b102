import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from './helpers/daemon.js';
import { sha256 } from './helpers/nbd.js';
import { freePort } from './helpers/ports.js';
import { startProcess, type StartedProcess } from './helpers/process.js';
import { bootGuest, rambootKit, type RambootKit, type SerialLine } from './helpers/qemu.js';

/**
 * ramboot's persistent state (issue 12), on its own: the root comes from nbdmux, the state export
 * (nbdroot.state=) from nbdkit serving a fresh `mkfs.ext4` file, since nbdmux's per-machine state
 * exports are tested through the daemon elsewhere. A machine boots twice: the second boot reads
 * what the first wrote to its overlay, which lives on the state export and not in the image.
 */
const guestStateAddress = '10.0.2.101:10809';
const bootTimeoutSeconds = 120;

describe('ramboot: the overlay upper layer on a state export survives a reboot', () => {
  const dir = tempDir('nbdmux-ramboot-state-');
  const logs = path.resolve('test-artifacts', 'ramboot-state');
  let kit: RambootKit;
  let daemon: RunningDaemon;
  let image: string;
  let stateServer: StartedProcess;
  let statePort: number;

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    fs.mkdirSync(logs, { recursive: true });
    image = path.join(dir, 'root.img');
    fs.copyFileSync(kit.images.gpt, image);
    daemon = await startDaemon();
    const reply = await api(daemon, 'POST', '/exports', { name: 'root', file: image });
    if (reply.status !== 201) throw new Error(`registering the root export failed (${reply.status}): ${reply.text}`);
    // What nbdmux makes for a persistent machine: a sparse ext4 file, made without root.
    const states = path.join(dir, 'states');
    fs.mkdirSync(states);
    execFileSync('mkfs.ext4', ['-q', '-F', path.join(states, 'node7-state'), '64M']);
    statePort = await freePort();
    // dir=: each file is an export of its name, and any other name is refused.
    stateServer = startProcess('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(statePort), 'file', `dir=${states}`]);
  }, 600_000);

  afterAll(() => {
    stateServer?.child.kill('SIGKILL');
    killEverything([daemon.dataDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function boot(name: string, stateExport: string): Promise<{ code: number | null; lines: SerialLine[] }> {
    const guest = bootGuest({
      kit,
      kernel: 'vmlinux',
      nbdPort: daemon.nbdPort,
      append: `nbdroot=10.0.2.100:10809/root nbdroot.state=${guestStateAddress}/${stateExport}`,
      forwards: [{ guestAddress: guestStateAddress, hostPort: statePort }],
      serialLog: path.join(logs, `${name}.log`),
      timeoutSeconds: bootTimeoutSeconds,
    });
    const { code } = await guest.exited;
    return { code, lines: guest.lines() };
  }

  const said = (lines: SerialLine[], key: string) => lines.find((line) => line.text.startsWith(`ramtest: ${key} `))?.text.slice(`ramtest: ${key} `.length);

  it(
    'boots twice: the second boot reads what the first wrote, from the state export; the image is unchanged',
    async () => {
      const before = sha256(image);
      const first = await boot('first', 'node7-state');
      expect(first.code).toBe(0); // powered off by itself
      expect(first.lines.filter((line) => /ramboot: FAILED|I\/O error|block nbd/.test(line.text)).map((line) => line.text)).toEqual([]);
      expect(first.lines.some((line) => /^ramboot: \[[\d.]+\] attached state node7-state: 64 MiB$/.test(line.text))).toBe(true);
      expect(said(first.lines, 'mount rw')).toMatch(/^\/dev\/nbd1 ext4 rw,/);
      expect(said(first.lines, 'mount /')).toMatch(/^overlay overlay rw,.*lowerdir=\/run\/ramboot\/ro,upperdir=\/run\/ramboot\/rw\/upper,workdir=\/run\/ramboot\/rw\/work/);
      expect(said(first.lines, 'info')).toContain('state=node7-state');
      expect(said(first.lines, 'persisted')).toBe('none');
      const firstBoot = said(first.lines, 'wrote-persisted');
      expect(firstBoot).toMatch(/^[0-9a-f-]{36}$/);

      const second = await boot('second', 'node7-state');
      expect(second.code).toBe(0);
      expect(said(second.lines, 'persisted')).toBe(`boot ${firstBoot}`);
      expect(said(second.lines, 'wrote-persisted')).not.toBe(firstBoot);
      expect(sha256(image)).toBe(before);
    },
    2 * (bootTimeoutSeconds + 10) * 1000,
  );

  it(
    'fails with one line when the state export is unknown, and powers off',
    async () => {
      const { code, lines } = await boot('unknown-state', 'no-such-state');
      expect(code).toBe(0);
      expect(lines.filter((line) => line.text.startsWith('ramboot: FAILED: ')).map((line) => line.text)).toEqual([
        // nbdkit's refusal of a name it does not serve, as nbd-client words it.
        `ramboot: FAILED: cannot attach export no-such-state from ${guestStateAddress}: Error: Unknown error returned by server.`,
      ]);
      expect(lines.some((line) => line.text.startsWith('ramtest:'))).toBe(false);
    },
    (bootTimeoutSeconds + 10) * 1000,
  );
});
