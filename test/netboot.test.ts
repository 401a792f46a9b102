import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, it, type ExpectStatic } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { sha256 } from '../testkit/nbd.js';
import { bootGuest, guestNbdAddress, rambootKit, type Guest, type RambootKit, type SerialLine } from './helpers/qemu.js';
import { trpcClient } from './helpers/trpc.js';
import { skipWithout } from './helpers/tools.js';

/**
 * Real machines (qemu, TCG) boot real nbdmux exports with the ramboot kit's kernel and
 * initramfs. Every guest runs the test image's init, which states on the serial console where
 * it runs; the host checks each statement against what it knows. The guests boot at the same
 * time (five on two cores), so each boot takes several times longer than alone.
 */
const bootTimeoutSeconds = 300;
const lineTimeoutMs = 240_000;
const testTimeoutMs = 330_000;

describe.skipIf(skipWithout('qemu-system-x86_64'))('netboot: machines boot nbdmux exports under qemu', () => {
  let kit: RambootKit;
  let images: { gpt: string; mbr: string; disk: string };
  let daemon: RunningDaemon;
  let logs: string;
  const dataDirs: string[] = [];
  const guests: Guest[] = [];
  const timings: Array<{ guest: string; rootMountedMs: number; guestUptimeAtRoot: number; attachSeconds: number }> = [];
  const suiteStarted = Date.now();

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    // Copies, so that a bug writing an image could never corrupt the cached ones.
    const dir = tempDir('nbdmux-netboot-images-');
    images = {
      gpt: copy(kit.images.gpt, dir),
      mbr: copy(kit.images.mbr, dir),
      disk: copy(kit.images.disk, dir),
    };
    logs = path.resolve('test-artifacts', 'netboot');
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    expect201(await api(daemon, 'POST', '/exports', { name: 'root', file: images.gpt }));
    expect201(await api(daemon, 'POST', '/exports', { name: 'scratch', file: images.mbr, cow: true }));
  }, 600_000);

  afterAll(() => {
    for (const guest of guests) guest.kill();
    killEverything(dataDirs);
    if (timings.length > 0) {
      console.log(
        [
          `netboot timings (qemu start to root mounted, host clock; guests booting concurrently), suite ${((Date.now() - suiteStarted) / 1000).toFixed(1)} s:`,
          ...timings.map(
            (t) =>
              `  ${t.guest.padEnd(18)} root mounted ${(t.rootMountedMs / 1000).toFixed(2)} s after qemu start ` +
              `(guest uptime ${t.guestUptimeAtRoot.toFixed(2)} s), NBD attach ${t.attachSeconds.toFixed(2)} s`,
          ),
        ].join('\n'),
      );
    }
  });

  /** Boots the uncompressed kernel unless told otherwise: the decompressor costs seconds of emulated CPU per guest. */
  function boot(name: string, nbdPort: number, append: string, kernel: 'vmlinuz' | 'vmlinux' = 'vmlinux'): Guest {
    const guest = bootGuest({
      kit,
      kernel,
      nbdPort,
      append,
      serialLog: path.join(logs, `${name}.log`),
      timeoutSeconds: bootTimeoutSeconds,
    });
    guests.push(guest);
    return guest;
  }

  function recordTiming(name: string, guest: Guest): void {
    const lines = guest.lines();
    const mounted = lines.find((line) => /^ramboot: \[[\d.]+\] root mounted/.test(line.text));
    const attached = lines.map((line) => /^ramboot: \[[\d.]+\] attached .* in ([\d.]+)s$/.exec(line.text)).find(Boolean);
    if (!mounted || !attached) return;
    timings.push({
      guest: name,
      rootMountedMs: mounted.atMs,
      guestUptimeAtRoot: Number(/\[([\d.]+)\]/.exec(mounted.text)![1]),
      attachSeconds: Number(attached[1]),
    });
  }

  /** What the test image's init said about key (the text after "ramtest: KEY "). */
  function said(lines: SerialLine[], key: string): string | undefined {
    const prefix = `ramtest: ${key} `;
    return lines.find((line) => line.text.startsWith(prefix))?.text.slice(prefix.length);
  }

  /** The facts every booted machine must state: overlay root, tmpfs upper, NBD lower, the image's own files. */
  function expectBootedFromExport(expect: ExpectStatic, lines: SerialLine[], device: string, readOnly: boolean): void {
    expect(said(lines, 'init')).toMatch(new RegExp(`^pid 1 image ${kit.imageId} `));
    expect(said(lines, 'mount /')).toMatch(
      /^overlay overlay rw,.*lowerdir=\/run\/ramboot\/ro,upperdir=\/run\/ramboot\/rw\/upper,workdir=\/run\/ramboot\/rw\/work/,
    );
    expect(said(lines, 'mount rw')).toMatch(/^tmpfs tmpfs rw,/);
    expect(said(lines, 'mount ro')).toMatch(new RegExp(`^${device} ext4 ro,`));
    expect(said(lines, 'nbd0')).toBe(readOnly ? 'ro=1' : 'ro=0');
    // Written to /: it is in the tmpfs upper layer and not in the image.
    expect(said(lines, 'wrote /ramtest-written')).toBe('upper=yes lower=no');
    expect(said(lines, 'payload')).toBe(kit.payloadSha256);
    expect(lines.filter((line) => /I\/O error|block nbd0:|ramboot: FAILED/.test(line.text)).map((line) => line.text)).toEqual([]);
  }

  it.concurrent(
    'boots two machines from one export at once: overlay root, tmpfs upper, the NBD device read-only below, the image unchanged',
    async ({ expect }) => {
      const before = sha256(images.gpt);
      const nbdroot = `nbdroot=${guestNbdAddress}/root`;
      // One picks the root partition itself (the largest Linux one, not the EFI partition 1)
      // with DHCP; the other is told partition 3 and a static address.
      // The first boots vmlinuz, the file PXE serves: the same kernel through its decompressor.
      const dhcp = boot('gpt-dhcp', daemon.nbdPort, `${nbdroot} ramtest=hold`, 'vmlinuz');
      const fixed = boot('gpt-static', daemon.nbdPort, `${nbdroot} nbdroot.part=3 nbdroot.ip=10.0.2.16/24:10.0.2.2 ramtest=hold`);
      await Promise.all([dhcp, fixed].map((guest) => guest.waitForLine(/^ramtest: read 1 /, lineTimeoutMs)));
      // Both are up at this moment, each on its own connection.
      expect((await api(daemon, 'GET', '/exports/root')).json.connections).toBe(2);

      for (const guest of [dhcp, fixed]) {
        const lines = guest.lines();
        expectBootedFromExport(expect, lines, '/dev/nbd0p3', true);
        expect(said(lines, 'block-write')).toMatch(/^refused: .*Operation not permitted/);
      }
      expect(dhcp.lines().some((line) => /^ramboot: .* network up: ens2 10\.0\.2\.15\/24$/.test(line.text))).toBe(true);
      expect(fixed.lines().some((line) => /^ramboot: .* network up: ens2 10\.0\.2\.16\/24$/.test(line.text))).toBe(true);
      recordTiming('gpt-dhcp (vmlinuz)', dhcp);
      recordTiming('gpt-static', fixed);
      dhcp.kill();
      fixed.kill();
      await Promise.all([dhcp.exited, fixed.exited]);
      expect(sha256(images.gpt)).toBe(before);
    },
    testTimeoutMs,
  );

  it.concurrent(
    'boots a copy-on-write export whose machine writes its block device and reads it back, and the image never changes',
    async ({ expect }) => {
      const before = sha256(images.mbr);
      const guest = boot('mbr-cow', daemon.nbdPort, `nbdroot=${guestNbdAddress}/scratch ramtest=write`);
      const { code } = await guest.exited;
      expect(code).toBe(0); // powered off by itself
      const lines = guest.lines();
      expectBootedFromExport(expect, lines, '/dev/nbd0p3', false);
      expect(said(lines, 'block-write')).toMatch(/^ok [0-9a-f]{64}$/);
      expect(lines.some((line) => line.text === 'ramtest: done')).toBe(true);
      recordTiming('mbr-cow', guest);
      expect(sha256(images.mbr)).toBe(before);
      await waitFor('the diff to be gone with the connection', () =>
        fs.readdirSync(path.join(daemon.dataDir, 'cow')).length === 0 ? true : undefined,
      );
    },
    testTimeoutMs,
  );

  it.concurrent(
    'keeps a machine up and reading its disk while its export drains and while nbdmux restarts',
    async ({ expect }) => {
      let own = await startDaemon();
      dataDirs.push(own.dataDir);
      expect201(await api(own, 'POST', '/exports', { name: 'held', file: images.disk }));
      const before = sha256(images.disk);
      const guest = boot('disk-held', own.nbdPort, `nbdroot=${guestNbdAddress}/held ramtest=hold`);
      await guest.waitForLine(/^ramtest: read 1 /, lineTimeoutMs);
      expectBootedFromExport(expect, guest.lines(), '/dev/nbd0', true);
      recordTiming('disk-held', guest);

      /** Waits for `count` uncached re-reads of the disk after `fromMs`, each with the right bytes. */
      const readsAfter = async (fromMs: number, count: number) => {
        const reads = await waitFor(
          `${count} reads by the guest`,
          () => {
            const found = guest.lines().filter((line) => line.atMs > fromMs && line.text.startsWith('ramtest: read '));
            return found.length >= count ? found : undefined;
          },
          lineTimeoutMs,
        );
        for (const read of reads) expect(read.text).toMatch(new RegExp(`^ramtest: read \\d+ ${kit.payloadSha256}$`));
      };

      expect((await api(own, 'DELETE', '/exports/held')).status).toBe(204);
      expect((await api(own, 'GET', '/exports')).json).toMatchObject([{ name: 'held', state: 'draining', connections: 1 }]);
      await readsAfter(guest.sinceStartMs(), 3);

      const dataDir = own.dataDir;
      const nbdPort = own.nbdPort;
      expect(await own.stop('SIGTERM')).toBe(0);
      await readsAfter(guest.sinceStartMs(), 2); // with no nbdmux running at all
      own = await startDaemon({ dataDir, nbdPort });
      const [adopted] = await trpcClient(own.url).connections.list.query({ live: true });
      expect(adopted).toMatchObject({ exportName: 'held', live: true });
      expect((await api(own, 'GET', '/exports')).json).toMatchObject([{ name: 'held', state: 'draining', connections: 1 }]);
      await readsAfter(guest.sinceStartMs(), 3);

      // Not one failed request to the NBD device through all of it.
      expect(
        guest
          .lines()
          .filter((line) => /I\/O error|block nbd0:/.test(line.text))
          .map((line) => line.text),
      ).toEqual([]);
      guest.kill();
      await guest.exited;
      const restarted = own;
      await waitFor(
        'the drained export to go',
        async () => ((await api(restarted, 'GET', '/exports')).json.length === 0 ? true : undefined),
        15_000,
      );
      expect(sha256(images.disk)).toBe(before);
    },
    testTimeoutMs,
  );

  it.concurrent(
    'fails fast on an unknown export: one line with the reason on the console, then power off',
    async ({ expect }) => {
      const guest = boot('unknown', daemon.nbdPort, `nbdroot=${guestNbdAddress}/no-such-export`);
      const { code, atMs } = await guest.exited;
      expect(code).toBe(0); // it powered off; `timeout` would have killed it with 137
      const failures = guest.lines().filter((line) => line.text.startsWith('ramboot: FAILED: '));
      expect(failures.map((line) => line.text)).toEqual([
        `ramboot: FAILED: cannot attach export no-such-export from ${guestNbdAddress}: the server refused export no-such-export: Export unknown`,
      ]);
      expect(guest.lines().some((line) => line.text.startsWith('ramtest:'))).toBe(false);
      console.log(`netboot: the unknown export failed and powered off ${(atMs / 1000).toFixed(1)} s after qemu start`);
    },
    testTimeoutMs,
  );
});

function copy(file: string, dir: string): string {
  const target = path.join(dir, path.basename(file));
  fs.copyFileSync(file, target);
  return target;
}

function expect201(reply: { status: number; text: string }): void {
  if (reply.status !== 201) throw new Error(`registering an export failed (${reply.status}): ${reply.text}`);
}
