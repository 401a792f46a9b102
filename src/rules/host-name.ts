import net from 'node:net';

/** A DNS name or IP address in the one spelling we compare (lowercase, IPv6 compressed and without brackets); null if it is neither. */
export function canonicalHostName(name: string): string | null {
  const unbracketed = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  if (net.isIPv6(unbracketed)) return new URL(`http://[${unbracketed}]`).hostname.slice(1, -1);
  return /^[A-Za-z0-9.-]+$/.test(name) ? name.toLowerCase() : null;
}
