import type net from 'node:net';

const ipv4Mapped = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/**
 * One spelling per client. A dual-stack listener reports an IPv4 client as `::ffff:a.b.c.d`, an
 * IPv4 one as `a.b.c.d`: with HTTP on one and NBD on the other, the same machine would be two
 * clients, and a machine's script fetch would never match its NBD connection.
 */
export function canonicalAddress(address: string): string {
  return ipv4Mapped.exec(address)?.[1] ?? address;
}

/** The client's address as every comparison, allow list, event and view uses it. */
export function clientAddressOf(socket: Pick<net.Socket, 'remoteAddress'>): string {
  const address = socket.remoteAddress;
  return address === undefined ? 'unknown' : canonicalAddress(address);
}
