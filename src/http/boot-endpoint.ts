import type http from 'node:http';
import net from 'node:net';
import { httpBase, type BootEndpoint } from '../boot/ipxe.js';
import { canonicalAddress } from '../rules/client-address.js';
import { hostOfHeader } from './allowed-hosts.js';

/**
 * Where a client that sent `req` reaches this daemon, as the boot scripts write it: the boot
 * routes put it in a machine's script, and the dashboard in the lines it offers to copy, so the
 * two cannot differ. The request screen has already judged the Host header.
 */
export function bootEndpointOf(req: http.IncomingMessage, nbdPort: number): BootEndpoint {
  return { httpBase: requestBase(req), nbdHost: nbdHostFor(req), nbdPort };
}

/** `http://host[:port]` as the client reached us. */
function requestBase(req: http.IncomingMessage): string {
  const header = req.headers.host!;
  const port = /:(\d{1,5})$/.exec(header)?.[1];
  return httpBase(hostOfHeader(header)!, port === undefined ? null : Number(port));
}

/**
 * The NBD address for the initramfs, which takes an IPv4 address and resolves no names: the Host
 * header's when it is one (it survives port forwards and qemu's guestfwd), else the address the
 * request arrived on, which is the one the machine reached over the network.
 */
function nbdHostFor(req: http.IncomingMessage): string {
  const host = hostOfHeader(req.headers.host!)!;
  if (net.isIPv4(host)) return host;
  const local = canonicalAddress(req.socket.localAddress ?? '');
  return net.isIPv4(local) ? local : host;
}
