import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { sha256 } from '../testkit/nbd.js';
import { killServingProcesses } from '../testkit/proc.js';
import { bootFailureReport, bootGuest, guestNbdAddress, rambootKit, type Guest, type RambootKit } from './helpers/qemu.js';
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
