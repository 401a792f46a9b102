import { createHistogram } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { whileSampling } from '../bench/lib/loop-delay.js';

describe("the import bench's event loop delay", () => {
  it('counts a loop blocked during the work, and nothing of the pause between two pieces of work', async () => {
    const delays = createHistogram();
    await whileSampling(delays, async () => {
      await sleep(50);
      const until = Date.now() + 200;
      while (Date.now() < until); // the loop blocked for 200 ms
      await sleep(50);
    });
    await sleep(1000);
    await whileSampling(delays, () => sleep(100));
    expect(delays.max / 1e6).toBeGreaterThanOrEqual(150);
    // The 1 s pause, measured as one sample, would show here.
    expect(delays.max / 1e6).toBeLessThan(900);
  });
});
