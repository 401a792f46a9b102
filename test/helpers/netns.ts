import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * A lab's boot network in miniature, made and removed by the test: a network namespace with a
 * tap device for one qemu guest, a real DHCP and TFTP server (dnsmasq) on it, and relays that
 * carry the guest's HTTP and NBD connections to nbdmux on the host's loopback. The relays cross
 * the namespace through Unix sockets in the test's directory, so nothing but loopback and the
 * namespace's own addresses is ever used; nbdmux sees the guest as `sourceAddress`.
 */
export interface BootNetwork {
  namespace: string;
  /** The tap device the guest's NIC uses (qemu runs in the namespace: see bootGuest's `tap`). */
  device: string;
  /** The server's address in the namespace: DHCP, TFTP, and nbdmux's HTTP (port 80) and NBD ports. */
  serverAddress: string;
  /** dnsmasq's log so far (its DHCP transactions, one per line). */
  dhcpLog(): string;
  /** dnsmasq's lease file: `EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID` lines. */
  leases(): string;
  close(): void;
}

export interface BootNetworkOptions {
  /** Where dnsmasq's TFTP root, log, lease file and the relays' sockets go. */
  dir: string;
  /** The file the PXE ROM is told to fetch over TFTP from `dir`: an iPXE script that chains over HTTP. */
  bootfile: string;
  /** The DHCP lease, in seconds (dnsmasq's minimum is 120). */
  leaseSeconds: number;
  httpPort: number;
  nbdPort: number;
  /** The port the guest dials for NBD, as nbdmux's scripts name it (`--nbd-public-port`). */
  publicNbdPort: number;
  /** The loopback address the relays connect to nbdmux from. */
  sourceAddress: string;
}

const subnet = '10.77.0';

export function startBootNetwork(options: BootNetworkOptions): BootNetwork {
  const namespace = `nbdmux-test-${process.pid}`;
  const device = 'tap0';
  const serverAddress = `${subnet}.1`;
  const inNamespace = (...args: string[]) => execFileSync('ip', ['-n', namespace, ...args], { stdio: 'pipe' });
  const children: ChildProcess[] = [];
  const close = () => {
    for (const child of children) child.kill('SIGKILL');
    try {
      execFileSync('ip', ['netns', 'delete', namespace], { stdio: 'ignore' });
    } catch {
      // never made, or already gone
    }
  };
  const run = (command: string[]) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: 'ignore' });
    children.push(child);
    return child;
  };

  execFileSync('ip', ['netns', 'add', namespace]);
  try {
    inNamespace('link', 'set', 'lo', 'up');
    inNamespace('tuntap', 'add', 'dev', device, 'mode', 'tap');
    inNamespace('addr', 'add', `${serverAddress}/24`, 'dev', device);
    inNamespace('link', 'set', device, 'up');
    const log = path.join(options.dir, 'dnsmasq.log');
    const leaseFile = path.join(options.dir, 'dnsmasq.leases');
    run([
      'ip',
      'netns',
      'exec',
      namespace,
      'dnsmasq',
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--port=0', // no DNS
      '--user=root',
      `--interface=${device}`,
      '--bind-dynamic',
      `--dhcp-range=${subnet}.50,${subnet}.59,255.255.255.0,${options.leaseSeconds}`,
      `--dhcp-leasefile=${leaseFile}`,
      `--log-facility=${log}`,
      '--log-dhcp',
      '--enable-tftp',
      `--tftp-root=${options.dir}`,
      `--dhcp-boot=${options.bootfile}`,
    ]);
    for (const [guestPort, hostPort] of [
      [80, options.httpPort],
      [options.publicNbdPort, options.nbdPort],
    ] as const) {
      const socket = path.join(options.dir, `relay-${guestPort}.sock`);
      run(['socat', '-lf', '/dev/null', `UNIX-LISTEN:${socket},fork`, `TCP:127.0.0.1:${hostPort},bind=${options.sourceAddress}`]);
      run([
        'ip',
        'netns',
        'exec',
        namespace,
        'socat',
        '-lf',
        '/dev/null',
        `TCP-LISTEN:${guestPort},bind=${serverAddress},reuseaddr,fork`,
        `UNIX-CONNECT:${socket}`,
      ]);
    }
    const readOr = (file: string) => {
      try {
        return fs.readFileSync(file, 'utf8');
      } catch {
        return '';
      }
    };
    return { namespace, device, serverAddress, dhcpLog: () => readOr(log), leases: () => readOr(leaseFile), close };
  } catch (err) {
    close();
    throw err;
  }
}
