import { describe, expect, it } from 'vitest';
import { estimateAfterMs, importSummary, ProgressText } from '../src/operator-cli/import.js';

const progress = (stage: 'queued' | 'downloading' | 'converting', bytes: number, bytesPerSecond: number) => ({
  stage,
  bytes,
  totalBytes: 100 << 20,
  bytesPerSecond,
  startedAt: '2026-01-02T03:04:05.000Z',
  version: 1,
  url: 'http://127.0.0.1/disk.img',
  error: null,
});

describe("nbdmux import's progress words", () => {
  it('gives a time left only once the stage has run long enough for its rate to mean something, again after each stage change', () => {
    const words = new ProgressText();
    // The first moments of a download: a burst of 1 MiB in its first 250 ms reads as 4 MiB/s.
    expect(words.text(progress('downloading', 1 << 20, 4 << 20), 0)).toBe('downloading 1.0 MiB of 100.0 MiB (1%), 4.0 MiB/s');
    expect(words.text(progress('downloading', 3 << 20, 1 << 20), estimateAfterMs - 1)).not.toMatch(/left/);
    expect(words.text(progress('downloading', 4 << 20, 1 << 20), estimateAfterMs)).toBe(
      'downloading 4.0 MiB of 100.0 MiB (4%), 1.0 MiB/s, 1m36s left',
    );
    expect(words.text(progress('converting', 0, 8 << 20), estimateAfterMs + 10)).toBe('converting 0 B of 100.0 MiB (0%), 8.0 MiB/s');
    expect(words.text(progress('converting', 50 << 20, 8 << 20), 2 * estimateAfterMs + 10)).toMatch(/, 6s left$/);
  });

  it('ends with the size, the time it took and the rate', () => {
    expect(importSummary(3 << 20, 1400)).toBe('3.0 MiB in 1.4s (2.1 MiB/s)');
    expect(importSummary(2 * 1024 ** 3, 187_000)).toBe('2.0 GiB in 3m07s (11.0 MiB/s)');
    expect(importSummary(null, 500)).toBe('in 0.5s');
  });
});
