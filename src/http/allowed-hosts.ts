import os from 'node:os';
import { canonicalHostName } from '../rules/host-name.js';

/** Bind addresses that mean "every address of this machine". */
const everyAddress = new Set(['0.0.0.0', '::']);
const hostAndPort = /^(\[[^\]]+\]|[^:[\]]+)(?::\d{1,5})?$/;

/**
 * The names a request's Host header may carry. A page on another site can make the operator's
 * browser reach this daemon under the page's own name (DNS rebinding), same-origin as far as the
 * browser can tell; only a name of our own proves the request was meant for us.
 */
export class AllowedHosts {
  private readonly names: Set<string>;
  private readonly onEveryAddress: boolean;

  constructor(bind: string | undefined, operatorNames: string[]) {
    this.onEveryAddress = bind === undefined || everyAddress.has(canonicalHostName(bind) ?? bind);
    const own = this.onEveryAddress ? [] : [bind!];
    // The machine's own host name: a rebinding page needs a name its author controls, never this one.
    this.names = new Set(['localhost', os.hostname(), ...own, ...operatorNames].flatMap((name) => canonicalHostName(name) ?? []));
  }

  /** True when `host` (the name from a Host header, see hostOfHeader) names this daemon. */
  allows(host: string): boolean {
    if (this.names.has(host)) return true;
    // Read at each request: DHCP or a new interface can change the addresses while we run.
    return this.onEveryAddress && interfaceAddresses().has(host);
  }
}

/** The host name in a Host header value, without its port; null when the value is not `host[:port]`. */
export function hostOfHeader(header: string): string | null {
  const host = hostAndPort.exec(header)?.[1];
  return host === undefined ? null : canonicalHostName(host);
}

function interfaceAddresses(): Set<string> {
  const addresses = Object.values(os.networkInterfaces()).flatMap((list) => list ?? []);
  return new Set(addresses.flatMap(({ address }) => canonicalHostName(address) ?? []));
}
