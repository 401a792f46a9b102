import { describe, expect, it } from 'vitest';
import { judgeGrowth, type Series } from '../bench/lib/growth.js';

/**
 * The soak's leak check on series whose answer is known. Synthetic on purpose: a real daemon that
 * leaks on demand does not exist, and the check must be shown to fail as well as to pass.
 */
function series(values: (t: number) => number, seconds = 60): Series {
  return { what: 'x', unit: 'u', points: Array.from({ length: seconds }, (_, t) => ({ t, value: values(t) })) };
}

/** A fixed zig-zag around the level: noise without any trend, reproducible. */
const zigzag = (t: number) => [0, 3, -2, 4, -4, 1, -3, 2][t % 8]!;

describe('judgeGrowth: a least-squares slope over the second half', () => {
  it('passes a level that only wobbles', () => {
    expect(
      judgeGrowth(
        series((t) => 40 + zigzag(t)),
        { floor: 4, relative: 0 },
      ).bounded,
    ).toBe(true);
  });

  it('passes growth confined to the first half (start-up)', () => {
    expect(
      judgeGrowth(
        series((t) => Math.min(t, 30) * 2 + zigzag(t)),
        { floor: 4, relative: 0 },
      ).bounded,
    ).toBe(true);
  });

  it('fails a steady leak of one a second that the wobble does not hide', () => {
    const growth = judgeGrowth(
      series((t) => 40 + t + zigzag(t)),
      { floor: 4, relative: 0 },
    );
    expect(growth.bounded).toBe(false);
    expect(growth.slopePerSecond).toBeCloseTo(1, 1);
  });

  it('tolerates growth within the relative share of the level, not beyond it', () => {
    const slow = series((t) => 1000 + t);
    expect(judgeGrowth(slow, { floor: 0, relative: 0.1 }).bounded).toBe(true);
    expect(judgeGrowth(slow, { floor: 0, relative: 0.01 }).bounded).toBe(false);
  });
});
