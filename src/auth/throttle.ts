import net from 'node:net';
import { canonicalAddress } from '../rules/client-address.js';

export interface ThrottleLimits {
  /** Failures one source (an IPv4 address, an IPv6 /64) may make within the window. */
  perSource: number;
  /** Failures all sources together may make within the window: what many addresses can guess. */
  total: number;
  windowMs: number;
  /** Sources remembered at most; past it the one whose last failure is oldest is forgotten. */
  maxSources: number;
}

export const defaultThrottleLimits: ThrottleLimits = { perSource: 5, total: 20, windowMs: 60_000, maxSources: 10_000 };

export type Refusal = { scope: 'source' | 'everyone'; retryAfterMs: number };

/**
 * Failed password attempts, per source and in total, in a sliding window. While either bound is
 * reached every attempt is refused unchecked, so a refusal says nothing about a guess, and
 * refused attempts are not counted, so the refusal ends when the window moves past the failures.
 * Memory is bounded: at most `total` failure times, and at most `maxSources` sources, each with
 * at most `perSource` times; sources whose failures have all left the window are dropped.
 */
export class FailureThrottle {
  /** Sources in order of their latest failure, oldest first (a failure re-inserts its source). */
  private readonly bySource = new Map<string, number[]>();
  private readonly everyone: number[] = [];

  constructor(private readonly limits: ThrottleLimits = defaultThrottleLimits) {}

  /** Why an attempt from `address` must be refused now, or null when it may be checked. */
  refusal(address: string, now = Date.now()): Refusal | null {
    this.forgetExpired(now);
    const everyone = this.recent(this.everyone, now);
    if (everyone.length >= this.limits.total) return { scope: 'everyone', retryAfterMs: this.retryAfter(everyone, this.limits.total, now) };
    const source = this.recent(this.bySource.get(throttleSource(address)) ?? [], now);
    if (source.length >= this.limits.perSource)
      return { scope: 'source', retryAfterMs: this.retryAfter(source, this.limits.perSource, now) };
    return null;
  }

  fail(address: string, now = Date.now()): void {
    this.forgetExpired(now);
    const key = throttleSource(address);
    const times = [...this.recent(this.bySource.get(key) ?? [], now), now].slice(-this.limits.perSource);
    this.bySource.delete(key);
    this.bySource.set(key, times);
    if (this.bySource.size > this.limits.maxSources) this.bySource.delete(this.bySource.keys().next().value!);
    this.everyone.push(now);
    if (this.everyone.length > this.limits.total) this.everyone.shift();
  }

  /** How many sources are remembered: for tests of the bound. */
  get size(): number {
    return this.bySource.size;
  }

  private recent(times: number[], now: number): number[] {
    return times.filter((at) => at > now - this.limits.windowMs);
  }

  /** When the failure that completes the limit leaves the window, counting from the newest. */
  private retryAfter(recent: number[], limit: number, now: number): number {
    return recent[recent.length - limit]! + this.limits.windowMs - now;
  }

  /** Drops sources from the oldest while their latest failure has left the window. */
  private forgetExpired(now: number): void {
    for (const [key, times] of this.bySource) {
      if (times.at(-1)! > now - this.limits.windowMs) return;
      this.bySource.delete(key);
    }
  }
}

/**
 * The unit one client is counted as: an IPv4 address, or the /64 of an IPv6 address (one host
 * commonly holds a whole /64). IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, as a dual-stack
 * listener reports IPv4 clients) count as the IPv4 address.
 */
export function throttleSource(address: string): string {
  const canonical = canonicalAddress(address);
  if (net.isIPv4(canonical)) return canonical;
  const withoutZone = canonical.split('%')[0]!;
  if (net.isIPv6(withoutZone)) return `${ipv6Groups(withoutZone).slice(0, 4).join(':')}::/64`;
  return address;
}

/** The eight 16-bit groups of an IPv6 address, in hex without leading zeros. */
function ipv6Groups(address: string): string[] {
  const embeddedIpv4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  const text = embeddedIpv4
    ? address.slice(0, embeddedIpv4.index) +
      [
        [1, 2],
        [3, 4],
      ]
        .map(([a, b]) => ((Number(embeddedIpv4[a!]) << 8) | Number(embeddedIpv4[b!])).toString(16))
        .join(':')
    : address;
  const [head = '', tail] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  return [...headGroups, ...zeros, ...tailGroups].map((group) => parseInt(group, 16).toString(16));
}
