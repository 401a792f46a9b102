import { describe, expect, it } from 'vitest';
import { defaultThrottleLimits, FailureThrottle, throttleSource } from '../src/auth/throttle.js';

// Pure unit tests: the throttle is a table in memory, driven here with explicit clock values.
const limits = defaultThrottleLimits;
const minute = limits.windowMs;

/** `count` failures from `address`, one a millisecond from `start`. */
function failMany(throttle: FailureThrottle, address: (i: number) => string, count: number, start: number): void {
  for (let i = 0; i < count; i++) throttle.fail(address(i), start + i);
}

describe('throttleSource', () => {
  it.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['::FFFF:192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2::1', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002:ffff:eeee:dddd:cccc', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['64:ff9b::192.0.2.7', '64:ff9b:0:0::/64'],
  ])('counts %s as %s', (address, source) => {
    expect(throttleSource(address)).toBe(source);
  });
});

describe('FailureThrottle', () => {
  it(`refuses a source after ${limits.perSource} failures until the first of them leaves the window`, () => {
    const throttle = new FailureThrottle();
    failMany(throttle, () => '192.0.2.1', limits.perSource, 1_000);
    expect(throttle.refusal('192.0.2.1', 2_000)).toEqual({ scope: 'source', retryAfterMs: 1_000 + minute - 2_000 });
    expect(throttle.refusal('192.0.2.2', 2_000)).toBeNull();
    expect(throttle.refusal('192.0.2.1', 1_000 + minute - 1)).not.toBeNull();
    expect(throttle.refusal('192.0.2.1', 1_000 + minute)).toBeNull();
  });

  it('counts one IPv6 /64 as one source, and an IPv4-mapped address as its IPv4 address', () => {
    const throttle = new FailureThrottle();
    failMany(throttle, (i) => `2001:db8:1:2::${i + 1}`, limits.perSource, 0);
    expect(throttle.refusal('2001:db8:1:2:ffff:ffff:ffff:ffff', 10)?.scope).toBe('source');
    expect(throttle.refusal('2001:db8:1:3::1', 10)).toBeNull();

    failMany(throttle, () => '::ffff:198.51.100.9', limits.perSource, 20);
    expect(throttle.refusal('198.51.100.9', 30)?.scope).toBe('source');
  });

  it(`refuses everyone after ${limits.total} failures in total from as many addresses, until the window moves`, () => {
    const throttle = new FailureThrottle();
    failMany(throttle, (i) => `10.0.${i >> 8}.${i & 255}`, limits.total, 0);
    const later = 5_000;
    expect(throttle.refusal('203.0.113.1', later)).toEqual({ scope: 'everyone', retryAfterMs: minute - later });
    // The first failure leaving the window lets one more attempt through, and no more.
    expect(throttle.refusal('203.0.113.1', minute)).toBeNull();
    throttle.fail('203.0.113.1', minute);
    expect(throttle.refusal('203.0.113.2', minute)?.scope).toBe('everyone');
  });

  it(`remembers at most ${limits.maxSources} sources, forgetting the oldest first, and forgets expired ones`, () => {
    // A total bound this high stays out of the way: this test is about the table of sources.
    const count = 100_000;
    const throttle = new FailureThrottle({ ...limits, total: 2 * count });
    const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    const started = performance.now();
    let largest = 0;
    for (let i = 0; i < count; i++) {
      throttle.fail(address(i), 0);
      largest = Math.max(largest, throttle.size);
    }
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(largest).toBe(limits.maxSources);
    // The newest sources are remembered (one more failure each reaches the limit); the oldest were evicted.
    const newest = count - 1;
    failMany(throttle, () => address(newest), limits.perSource - 1, 1);
    expect(throttle.refusal(address(newest), 10)?.scope).toBe('source');
    failMany(throttle, () => address(0), limits.perSource - 1, 1);
    expect(throttle.refusal(address(0), 10)).toBeNull();

    // Once every failure has left the window, the next one leaves only its own source.
    throttle.fail('192.0.2.1', 10 + minute);
    expect(throttle.size).toBe(1);
  });
});
