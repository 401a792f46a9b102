import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api } from '../../testkit/daemon.js';

const cachedBuild = fileURLToPath(new URL('../../ramboot/cached-build', import.meta.url));

export interface RambootKit {
  dir: string;
  /** The Debian bzImage, as PXE/iPXE boots it. */
  vmlinuz: string;
  /** The same kernel uncompressed: qemu boots it through PVH, without the seconds of decompression under TCG. */
  vmlinux: string;
  initrd: string;
  /** The test images: a GPT disk, an MBR disk, a whole-disk filesystem. */
  images: { gpt: string; mbr: string; disk: string };
  /** IMAGE_ID and PAYLOAD_SHA256 of the test image. */
  imageId: string;
  payloadSha256: string;
}

/** The kit and test image, built by ramboot/cached-build (once per content, cached outside the clone). */
export function rambootKit(timeoutMs: number): Promise<RambootKit> {
  return new Promise((resolve, reject) => {
    execFile(cachedBuild, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`ramboot/cached-build failed: ${err.message}\n${stderr}`));
      const dir = stdout.trim();
      const env = readEnvFile(path.join(dir, 'test-image.env'));
      resolve({
        dir,
        vmlinuz: path.join(dir, 'vmlinuz'),
        vmlinux: path.join(dir, 'vmlinux'),
        initrd: path.join(dir, 'initrd.img'),
        images: { gpt: path.join(dir, 'test-gpt.img'), mbr: path.join(dir, 'test-mbr.img'), disk: path.join(dir, 'test-disk.img') },
        imageId: env.IMAGE_ID!,
        payloadSha256: env.PAYLOAD_SHA256!,
      });
    });
  });
}

const cachedDebianImage = fileURLToPath(new URL('../../ramboot/cached-debian-image', import.meta.url));

export interface DebianImage {
  /** A GPT disk: EFI system partition, then an ext4 root with Debian 12, its kernel, ifupdown DHCP on `nic`. */
  file: string;
  /** The image's own kernel: its /lib/modules entry. */
  kernelVersion: string;
  /** The interface its /etc/network/interfaces configures: the NIC must sit in PCI slot 2. */
  nic: string;
}

/**
 * The Debian 12 test image, built by ramboot/cached-debian-image (once per content, cached outside the clone);
 * `variant` picks its kernel (stock, cloud: Debian's cloud kernel, zst: backports' with .ko.zst modules) or adds
 * cloud-init (cloud-init).
 */
export function debianImage(timeoutMs: number, variant: 'stock' | 'cloud' | 'zst' | 'cloud-init' = 'stock'): Promise<DebianImage> {
  return new Promise((resolve, reject) => {
    execFile(cachedDebianImage, [variant], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`ramboot/cached-debian-image failed: ${err.message}\n${stderr}`));
      const dir = stdout.trim();
      const env = readEnvFile(path.join(dir, 'debian-image.env'));
      resolve({ file: path.join(dir, 'debian-12.img'), kernelVersion: env.KERNEL_VERSION!, nic: env.NIC! });
    });
  });
}

/** KEY=VALUE lines, as the ramboot build scripts write them. */
function readEnvFile(file: string): Record<string, string> {
  return Object.fromEntries(
    fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => line.includes('='))
      .map((line) => line.split('=', 2) as [string, string]),
  );
}

/** Where the guest reaches nbdmux: qemu forwards this address, inside the guest only, to the host's loopback. */
export const guestNbdAddress = '10.0.2.100:10809';
/** Where a PXE-booting guest reaches the HTTP server of `pxe.httpPort` (port 80 of the same address). */
export const guestHttpHost = '10.0.2.100';

/**
 * Registers a sparse copy of `image` in `dir` as export `name`, its kernel's console on the serial
 * line, and returns the copy's path: a copy, so that a bug writing an image could never corrupt
 * the cached one.
 */
export async function registerImageCopy(daemon: { url: string }, dir: string, name: string, image: string): Promise<string> {
  const copy = path.join(dir, `${name}.img`);
  execFileSync('cp', ['--sparse=always', image, copy]);
  const reply = await api(daemon, 'POST', '/exports', { name, file: copy, cmdline: 'console=ttyS0,115200 panic=-1' });
  if (reply.status !== 201) throw new Error(`registering ${name} failed (${reply.status}): ${reply.text}`);
  return copy;
}

/** Boot from qemu's own PXE ROM (Debian ipxe-qemu) instead of loading a kernel directly. */
export interface PxeBoot {
  /** qemu's built-in TFTP server serves this directory... */
  tftpDir: string;
  /** ...and its DHCP names this file in it as the boot file: an iPXE script that chains over HTTP. */
  bootfile: string;
  /** The host's HTTP port on 127.0.0.1, reached by the guest as http://10.0.2.100/. */
  httpPort: number;
}

export interface GuestOptions {
  kit: RambootKit;
  kernel: 'vmlinuz' | 'vmlinux';
  /** The host's NBD port on 127.0.0.1. */
  nbdPort: number;
  /** Kernel command line after console, panic and nbdroot's server. */
  append: string;
  serialLog: string;
  /** Hard limit: qemu is SIGKILLed by `timeout` after this. */
  timeoutSeconds: number;
  /** More NIC properties, e.g. `addr=2` to pin the PCI slot the NIC's predictable name (ens2) comes from. */
  nicOptions?: string;
  /** The NIC's qemu device (default virtio-net-pci), e.g. e1000. */
  nicModel?: string;
  /** Guest RAM (default 512). */
  memoryMiB?: number;
  /** More qemu arguments, e.g. `-global PIIX4_PM.acpi-root-pci-hotplug=off` (no hotplug slots). */
  qemuArgs?: string[];
  /** Boot through the PXE ROM: kit, kernel and append are then unused, the chained script names the kernel. */
  pxe?: PxeBoot;
  /** The loopback address every forwarded connection comes from (default 127.0.0.1): one per guest, so nbdmux tells guests apart. */
  sourceAddress?: string;
  /**
   * Boot from the PXE ROM on a tap device of a network namespace the test made, whose DHCP,
   * TFTP and paths to nbdmux the test runs, instead of qemu's user networking (`pxe`,
   * `nbdPort` and `sourceAddress` are then unused).
   */
  tap?: { namespace: string; device: string };
}

export interface SerialLine {
  text: string;
  /** Milliseconds after qemu was started when the line was first seen in the serial log. */
  atMs: number;
}

/** What the first console line holding `prefix` (and a space) says after it: a boot check's `key value` lines. */
export function textAfter(lines: readonly SerialLine[], prefix: string): string | undefined {
  const line = lines.find((candidate) => candidate.text.includes(`${prefix} `))?.text;
  return line?.slice(line.indexOf(`${prefix} `) + prefix.length + 1);
}

export interface Guest {
  /** Every complete line of the serial console so far. */
  lines(): SerialLine[];
  /** The first line matching, once it appears; rejects if qemu exits first or after `ms`. */
  waitForLine(pattern: RegExp, ms: number): Promise<SerialLine>;
  /** Resolves when qemu exits: its exit code (137 when `timeout` killed it) and when. */
  exited: Promise<{ code: number | null; atMs: number }>;
  /** Milliseconds since qemu was started: the clock of SerialLine.atMs. */
  sinceStartMs(): number;
  kill(): void;
}

const pollMs = 50;

/**
 * Boots the kit's kernel and initramfs under qemu (TCG), with user networking that only ever
 * reaches 127.0.0.1: restrict=on cuts the guest off from everything, and each guestfwd (the NBD
 * port, the PXE HTTP port) opens a fresh loopback connection for each guest connection.
 *
 * This is its argv (nice, timeout, qemu), for a caller that starts it itself, as a BMC simulator's power-on does.
 */
export function guestCommand({
  kit,
  kernel,
  nbdPort,
  append,
  serialLog,
  timeoutSeconds,
  nicOptions,
  nicModel = 'virtio-net-pci',
  memoryMiB,
  qemuArgs = [],
  pxe,
  sourceAddress,
  tap,
}: GuestOptions): string[] {
  const guestForwards = [
    { guestAddress: guestNbdAddress, hostPort: nbdPort },
    ...(pxe ? [{ guestAddress: `${guestHttpHost}:80`, hostPort: pxe.httpPort }] : []),
  ]
    // `,,` is a literal comma inside a qemu option value.
    .map(
      ({ guestAddress, hostPort }) =>
        // socat's own messages (`-lf`) must not join the guest's stream: qemu hands the command's
        // stderr the channel too, and a closed connection's error would reach the guest as bytes.
        `guestfwd=tcp:${guestAddress}-cmd:socat -lf /dev/null - TCP:127.0.0.1:${hostPort}${sourceAddress ? `,,bind=${sourceAddress}` : ''}`,
    )
    .join(',');
  const nic = `${nicModel},netdev=n0${nicOptions ? `,${nicOptions}` : ''}`;
  const bootArgs = tap
    ? ['-boot', 'n', '-netdev', `tap,id=n0,ifname=${tap.device},script=no,downscript=no`, '-device', nic]
    : pxe
      ? [
          '-boot',
          'n',
          '-netdev',
          `user,id=n0,restrict=on,tftp=${pxe.tftpDir},bootfile=${pxe.bootfile},${guestForwards}`,
          // The default option ROM: iPXE, which fetches the boot file over TFTP and runs it.
          '-device',
          nic,
        ]
      : [
          '-kernel',
          kit[kernel],
          '-initrd',
          kit.initrd,
          '-append',
          `console=ttyS0 panic=-1 ${append}`,
          '-netdev',
          `user,id=n0,restrict=on,${guestForwards}`,
          // No option ROM: the kernel is loaded directly, nothing PXE-boots inside qemu.
          '-device',
          `${nic},romfile=`,
        ];
  const args = [
    // Niced: emulated CPUs must not starve the daemons and test files running beside them.
    '-n',
    '10',
    'timeout',
    '-s',
    'KILL',
    String(timeoutSeconds),
    ...(tap ? ['ip', 'netns', 'exec', tap.namespace] : []),
    'qemu-system-x86_64',
    // A stock Debian kernel does not boot under this host's KVM (see shared notes): TCG unless told.
    '-accel',
    process.env.NBDMUX_QEMU_ACCEL ?? 'tcg',
    '-m',
    String(memoryMiB ?? 512),
    '-nodefaults',
    '-no-reboot',
    '-display',
    'none',
    '-serial',
    `file:${serialLog}`,
    ...qemuArgs,
    ...bootArgs,
  ];
  return ['nice', ...args];
}

/** Starts the guest of `guestCommand` and follows its serial console. */
export function bootGuest(options: GuestOptions): Guest {
  const { serialLog } = options;
  fs.rmSync(serialLog, { force: true });
  const [command, ...args] = guestCommand(options);
  const started = Date.now();
  // Its own process group: `timeout`, qemu and the socat processes of guestfwd end together.
  const child: ChildProcess = spawn(command!, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

  const seen: SerialLine[] = [];
  let partial = '';
  let offset = 0;
  const readNew = () => {
    let data: Buffer;
    try {
      data = fs.readFileSync(serialLog).subarray(offset);
    } catch {
      return;
    }
    offset += data.length;
    const text = partial + data.toString('latin1');
    const parts = text.split(/\r?\n/);
    partial = parts.pop()!;
    const atMs = Date.now() - started;
    for (const line of parts) seen.push({ text: line, atMs });
  };
  const timer = setInterval(readNew, pollMs);
  const exited = new Promise<{ code: number | null; atMs: number }>((resolve) => {
    child.on('close', (code) => {
      clearInterval(timer);
      readNew();
      if (partial !== '') seen.push({ text: partial, atMs: Date.now() - started });
      partial = '';
      resolve({ code, atMs: Date.now() - started });
    });
  });

  return {
    lines: () => [...seen],
    exited,
    sinceStartMs: () => Date.now() - started,
    kill: () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    },
    waitForLine: async (pattern, ms) => {
      const deadline = Date.now() + ms;
      let done = false;
      void exited.then(() => (done = true));
      for (;;) {
        const finished = done; // once qemu has exited, `seen` holds every line
        const found = seen.find((line) => pattern.test(line.text));
        if (found) return found;
        if (finished) throw new Error(`qemu exited before printing ${pattern}; stderr: ${stderr}\n${tail(seen)}`);
        if (Date.now() > deadline) throw new Error(`no ${pattern} on the console within ${ms} ms\n${tail(seen)}`);
        await new Promise((resolve) => setTimeout(resolve, pollMs));
      }
    },
  };
}

/**
 * Why a boot did not end, for an assertion message: the boot's milestones and the guest kernel's
 * complaints with the host time each was seen, then the console's last lines. A CI log keeps only
 * the message, and the last 30 lines alone once showed nothing but one stack trace.
 */
export function bootFailureReport(lines: SerialLine[]): string {
  const landmark = /^(ramboot|ramtest|nbdmux-boot-check):|soft lockup|rcu.*stall|BUG:|WARNING:|Kernel panic|Call Trace/;
  const landmarks = lines.filter((line) => landmark.test(line.text.replace(/^\[\s*[\d.]+\] /, ''))).slice(0, 40);
  const stamp = (line: SerialLine) => `  ${(line.atMs / 1000).toFixed(1).padStart(6)} s | ${line.text}`;
  return [`milestones (host seconds after qemu started):`, ...landmarks.map(stamp), 'last lines:', ...lines.slice(-15).map(stamp)].join(
    '\n',
  );
}

function tail(lines: SerialLine[]): string {
  return lines
    .slice(-30)
    .map((line) => `  | ${line.text}`)
    .join('\n');
}
