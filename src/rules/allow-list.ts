import net from 'node:net';
import { canonicalAddress } from './client-address.js';

/** Parses "10.0.0.0/8", "2001:db8::/32" or a bare address; null when it is not one. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [address = '', prefixText, ...rest] = text.trim().split('/');
  const version = net.isIP(address);
  if (version === 0 || rest.length > 0) return null;
  const family = version === 4 ? 'ipv4' : 'ipv6';
  const max = version === 4 ? 32 : 128;
  if (prefixText === undefined) return { address, prefix: max, family };
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) return null;
  return { address, prefix: Number(prefixText), family };
}

/** Which client addresses a list of ranges admits (--nbd-allow, an export's allow list). An empty list allows everyone. */
export class AllowList {
  private readonly list = new net.BlockList();
  readonly empty: boolean;

  constructor(cidrs: readonly string[]) {
    this.empty = cidrs.length === 0;
    for (const cidr of cidrs) {
      const parsed = parseCidr(cidr);
      if (!parsed) throw new Error(`not an IP address or CIDR range: ${cidr}`);
      this.list.addSubnet(parsed.address, parsed.prefix, parsed.family);
    }
  }

  allows(address: string): boolean {
    if (this.empty) return true;
    const canonical = canonicalAddress(address);
    return this.list.check(canonical, net.isIP(canonical) === 6 ? 'ipv6' : 'ipv4');
  }
}

/** Whether an export's allow list admits `client` (an empty list admits every client the NBD port does). */
export function admits(exp: { allow: readonly string[] }, client: string): boolean {
  return exp.allow.length === 0 || new AllowList(exp.allow).allows(client);
}
