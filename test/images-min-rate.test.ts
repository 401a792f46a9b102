import { describe, expect, it } from 'vitest';
import { SourceRate } from '../src/images/min-rate.js';

/** SourceRate is pure arithmetic over a clock; a hand-moved clock shows minutes of a download in microseconds. */
function rateAt(bytes: number, windowMs: number) {
  let now = 0;
  const rate = new SourceRate({ bytes, windowMs }, () => now);
  return { rate, advance: (ms: number) => (now += ms) };
}

describe('the minimum rate of a download', () => {
  it('judges nothing before one whole window has been waited', () => {
    const { rate, advance } = rateAt(1000, 60_000);
    advance(59_999);
    expect(rate.tooSlow()).toBeNull();
    advance(1);
    expect(rate.tooSlow()).toEqual({ bytes: 0 });
  });

  it('slides: a fast start does not pay for a trickle after it', () => {
    const { rate, advance } = rateAt(1000, 60_000);
    rate.received(10_000_000);
    for (let second = 0; second < 70; second++) {
      rate.waiting();
      advance(1000);
      rate.received(1);
      expect(rate.tooSlow(), `at ${second + 1} s`).toEqual(second + 1 < 63 ? null : { bytes: expect.any(Number) });
    }
    // The window may reach back one bucket (3 s) further than asked, never less.
    expect(rate.tooSlow()!.bytes).toBeGreaterThanOrEqual(60);
    expect(rate.tooSlow()!.bytes).toBeLessThanOrEqual(63);
  });

  it('a source that keeps the minimum in every window passes however long it runs', () => {
    const { rate, advance } = rateAt(1000, 60_000);
    for (let second = 0; second < 600; second++) {
      rate.waiting();
      advance(1000);
      rate.received(17);
      expect(rate.tooSlow()).toBeNull();
    }
  });

  it('counts only the time spent waiting on the source, not the time the import is busy elsewhere', () => {
    const { rate, advance } = rateAt(1000, 60_000);
    advance(10);
    rate.received(500);
    // The decompressor and the disk take ten minutes over those bytes: nobody asks the source meanwhile.
    advance(600_000);
    expect(rate.tooSlow()).toBeNull();
    rate.waiting();
    advance(59_000);
    expect(rate.tooSlow()).toBeNull();
    advance(1000);
    expect(rate.tooSlow()).toEqual({ bytes: 500 });
  });

  it('a minimum of 0 bytes is no minimum', () => {
    const { rate, advance } = rateAt(0, 1000);
    advance(3_600_000);
    expect(rate.tooSlow()).toBeNull();
  });
});
