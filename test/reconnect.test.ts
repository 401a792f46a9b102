import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { sha256 } from '../testkit/nbd.js';
import { killServingProcesses } from '../testkit/proc.js';
import {
  bootFailureReport,
  bootGuest,
  debianImage,
  guestHttpHost,
  guestNbdAddress,
  rambootKit,
  type DebianImage,
  type Guest,
  type RambootKit,
  type SerialLine,
  textAfter,
} from './helpers/qemu.js';
import { trpcClient } from './helpers/trpc.js';
import { skipWithout } from './helpers/tools.js';

/**
 * A machine's root survives what a lab meets: its serving nbd-server process killed, and nbdmux
 * stopped with every serving process killed and started again 20 s later (a host reboot, as far
 * as the machine can tell). The kit's nbd-attach re-dials while the kernel holds the I/O; the
 * test image's init re-reads a file of the disk, uncached, every half second throughout. qemu
 * (TCG) with the kit's kernel booted directly, `nbdroot.reconnect=` given on the command line.
 */
const outageSeconds = 20;
const lineTimeoutMs = 240_000;

describe.skipIf(skipWithout('qemu-system-x86_64'))('reconnect: a machine outlives the loss of its NBD connection', () => {
  const dirs: string[] = [];
  let kit: RambootKit;
  let image: string;
  let daemon: RunningDaemon;
  let guest: Guest | undefined;

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    const dir = tempDir('nbdmux-reconnect-');
    dirs.push(dir);
    image = path.join(dir, 'disk.img');
    fs.copyFileSync(kit.images.disk, image);
    fs.mkdirSync(path.resolve('test-artifacts'), { recursive: true });
    daemon = await startDaemon();
    dirs.push(daemon.dataDir);
    expect((await api(daemon, 'POST', '/exports', { name: 'kept', file: image })).status).toBe(201);
  }, 600_000);

  afterAll(() => {
    guest?.kill();
    killEverything([daemon.dataDir]);
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Waits for `count` uncached re-reads by the guest after `fromMs`, each of the right bytes. */
  async function readsAfter(fromMs: number, count: number): Promise<void> {
    const reads = await waitFor(
      `${count} reads by the guest after ${(fromMs / 1000).toFixed(1)} s`,
      () => {
        const found = guest!.lines().filter((line) => line.atMs > fromMs && line.text.startsWith('ramtest: read '));
        return found.length >= count ? found : undefined;
      },
      lineTimeoutMs,
    );
    for (const read of reads) expect(read.text).toMatch(new RegExp(`^ramtest: read \\d+ ${kit.payloadSha256}$`));
  }

  it('reads on with the same bytes after its serving process is killed, and after nbdmux and every serving process are gone for 20 s', async () => {
    guest = bootGuest({
      kit,
      kernel: 'vmlinux',
      nbdPort: daemon.nbdPort,
      append: `nbdroot=${guestNbdAddress}/kept nbdroot.reconnect=120 ramtest=hold`,
      serialLog: path.resolve('test-artifacts', 'reconnect.log'),
      timeoutSeconds: 600,
    });
    await guest.waitForLine(/^ramtest: read 1 /, lineTimeoutMs).catch((err: Error) => {
      throw new Error(`${err.message.split('\n')[0]}\n${bootFailureReport(guest!.lines())}`);
    });
    expect(guest.lines().find((line) => line.text.includes('] attached kept:'))?.text).toMatch(/reconnect=120s, in /);

    // 1. Its serving process dies (the OOM killer, a crash).
    const [served] = await trpcClient(daemon.url).connections.list.query({ live: true });
    expect(served).toMatchObject({ exportName: 'kept', live: true });
    const killedAt = guest.sinceStartMs();
    process.kill(served!.pid!, 'SIGKILL');
    const reconnected = await guest.waitForLine(/nbd-attach: nbd0: reconnected to kept/, lineTimeoutMs);
    console.log(`reconnect: after a SIGKILL of its nbd-server: ${reconnected.text.replace(/.*nbd-attach: /, '')}`);
    await readsAfter(reconnected.atMs, 3);

    // 2. nbdmux stopped and every serving process killed, for 20 s; then nbdmux on the same ports.
    const { dataDir, nbdPort } = daemon;
    expect(await daemon.stop('SIGTERM')).toBe(0);
    killServingProcesses([dataDir]);
    const goneAt = guest.sinceStartMs();
    await new Promise((resolve) => setTimeout(resolve, outageSeconds * 1000));
    daemon = await startDaemon({ dataDir, nbdPort });
    const back = await waitFor(
      'the second reconnect',
      () => guest!.lines().find((line) => line.atMs > goneAt && /nbd-attach: nbd0: reconnected to kept/.test(line.text)),
      lineTimeoutMs,
    );
    console.log(`reconnect: after nbdmux and its processes were gone ${outageSeconds} s: ${back.text.replace(/.*nbd-attach: /, '')}`);
    await readsAfter(back.atMs, 3);

    const troubles = guest
      .lines()
      .filter((line) => line.atMs > killedAt && /I\/O error|ramboot: FAILED|gave up|Buffer I\/O/.test(line.text))
      .map((line) => line.text);
    expect(troubles).toEqual([]);
    // No read returned other bytes, and the image is untouched.
    expect(guest.lines().filter((line) => line.text.startsWith('ramtest: read ') && !line.text.endsWith(kit.payloadSha256))).toEqual([]);
    expect(sha256(fs.readFileSync(image))).toBe(sha256(fs.readFileSync(kit.images.disk)));
  }, 900_000);
});

/**
 * The same through nbdmux alone, for a persistent Debian 12 machine booted by MAC from qemu's PXE
 * ROM: its serving processes die twice while systemd boots it (reading its root hard), the second
 * time with nbdmux gone for 20 s and its export switched meanwhile to another image. The machine
 * must come up on the bytes it booted, write its state, and power off with that state's journal
 * clean.
 */
describe.skipIf(skipWithout('qemu-system-x86_64'))('reconnect: a persistent Debian machine booted by nbdmux', () => {
  const dir = tempDir('nbdmux-reconnect-debian-');
  const machine = { mac: '52:54:00:00:00:24', name: 'steady', from: '127.0.0.2' };
  let kit: RambootKit;
  let debian: DebianImage;
  let daemon: RunningDaemon;
  let guest: Guest | undefined;
  const daemonArgs = () => ['--ramboot-kit', kit.dir, '--nbd-public-port', '10809', '--allowed-host', guestHttpHost];

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    debian = await debianImage(1_200_000);
    daemon = await startDaemon({ args: daemonArgs() });
    execFileSync('cp', ['--sparse=always', debian.file, path.join(dir, 'debian.img')]);
    fs.copyFileSync(kit.images.gpt, path.join(dir, 'other.img'));
    fs.writeFileSync(path.join(dir, 'by-mac.ipxe'), `#!ipxe\nchain http://${guestHttpHost}/boot.ipxe?mac=\${net0/mac}\n`);
    const added = await api(daemon, 'POST', '/exports', {
      name: 'debian',
      file: path.join(dir, 'debian.img'),
      cmdline: 'console=ttyS0,115200 panic=-1',
    });
    expect(added.status, added.text).toBe(201);
    const created = await api(daemon, 'POST', '/machines', {
      ...machine,
      from: undefined,
      export: 'debian',
      persistent: true,
      stateSize: '64M',
    });
    expect(created.status, created.text).toBe(201);
    await inspectedBoots(daemon, 60_000);
  }, 1_800_000);

  afterAll(() => {
    guest?.kill();
    killEverything([daemon.dataDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const said = (lines: SerialLine[], key: string) => textAfter(lines, `nbdmux-boot-check: ${key}`);

  it('comes up on the version it booted through a killed server and a 20 s outage with a version switch, and powers off with its state clean', async () => {
    guest = bootGuest({
      kit,
      kernel: 'vmlinuz',
      nbdPort: daemon.nbdPort,
      append: '',
      pxe: { tftpDir: dir, bootfile: 'by-mac.ipxe', httpPort: daemon.httpPort },
      serialLog: path.resolve('test-artifacts', 'reconnect-debian.log'),
      timeoutSeconds: 900,
      sourceAddress: machine.from,
      memoryMiB: 1024,
      // PCI slot 2: the slot the image's /etc/network/interfaces (ens2) was written for.
      nicOptions: `mac=${machine.mac},addr=2`,
    });
    const fail = (err: Error): never => {
      throw new Error(`${err.message.split('\n')[0]}\n${bootFailureReport(guest!.lines())}`);
    };
    // 1. While systemd starts: its root's serving process killed.
    await guest.waitForLine(/^ramboot: \[[\d.]+\] root mounted/, lineTimeoutMs).catch(fail);
    const root = (await trpcClient(daemon.url).connections.list.query({ live: true })).find((conn) => conn.exportName === 'debian');
    process.kill(root!.pid!, 'SIGKILL');
    await guest.waitForLine(/nbd-attach: nbd0: reconnected to debian/, lineTimeoutMs).catch(fail);

    // 2. The export moves on to another image; then nbdmux and every serving process are gone for 20 s.
    expect((await api(daemon, 'PUT', '/exports/debian', { file: path.join(dir, 'other.img') })).status).toBe(200);
    const { dataDir, nbdPort, httpPort } = daemon;
    expect(await daemon.stop('SIGTERM')).toBe(0);
    killServingProcesses([dataDir]);
    const goneAt = guest.sinceStartMs();
    await new Promise((resolve) => setTimeout(resolve, outageSeconds * 1000));
    daemon = await startDaemon({ dataDir, nbdPort, httpPort, args: daemonArgs() });
    await waitFor(
      'both devices reconnected',
      () => {
        const back = guest!.lines().filter((line) => line.atMs > goneAt && /nbd-attach: nbd[01]: reconnected/.test(line.text));
        return new Set(back.map((line) => /nbd[01]/.exec(line.text)![0])).size === 2 ? back : undefined;
      },
      lineTimeoutMs,
    );

    const { code } = await guest.exited;
    const lines = guest.lines();
    expect(code, `qemu did not power off by itself\n${bootFailureReport(lines)}`).toBe(0);
    // The running kernel kept its root: systemd came up on the image it booted, the state took its writes.
    expect(said(lines, 'system')).toBe('running');
    expect(said(lines, 'uname')).toBe(debian.kernelVersion);
    expect(said(lines, 'modprobe-vfat')).toBe('ok');
    const wrote = said(lines, 'wrote-persisted');
    expect(wrote).toMatch(/^[0-9a-f-]{36}$/);
    expect(lines.filter((line) => /I\/O error|EXT4-fs error|gave up|ramboot: FAILED/.test(line.text)).map((line) => line.text)).toEqual([]);
    expect(lines.some((line) => /ramboot: state filesystem read-only, journal clean, before poweroff/.test(line.text))).toBe(true);

    // The state file as the next boot will find it: clean, no journal to replay, this boot's write in it.
    await waitFor(
      'the state detached',
      async () => (await api(daemon, 'GET', `/machines/${machine.mac}`)).json.attached === false || undefined,
      30_000,
    );
    const state = path.join(dataDir, 'machines', `${machine.mac.replaceAll(':', '')}.ext4`);
    const header = execFileSync('dumpe2fs', ['-h', state], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
    expect(header).toMatch(/^Filesystem state:\s+clean$/m);
    expect(header).not.toMatch(/needs_recovery/);
    const persisted = execFileSync('debugfs', ['-R', 'cat /upper/var/lib/nbdmux-boot-check/persisted', state], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    expect(persisted.toString().trim()).toBe(`boot ${wrote}`);
    const timeline = (await api(daemon, 'GET', `/machines/${machine.mac}`)).json.timeline as Record<string, string>;
    expect(Object.keys(timeline)).toEqual(expect.arrayContaining(['script', 'attached', 'root', 'reconnected', 'up', 'off']));
  }, 1_200_000);
});
