/** A download must bring at least `bytes` in every `windowMs` it is waited on (--import-min-rate). */
export interface MinRate {
  bytes: number;
  windowMs: number;
}

/**
 * The bytes a source sent over the last window of time the import spent waiting on it. Time the
 * import spends elsewhere (writing to the disk, a decompressor turning a few KB into gigabytes
 * of zeros) is not the source's: the clock stops while nobody asks for the next bytes, so a fast
 * source behind a busy import is never called slow.
 */
export class SourceRate {
  /** Waiting time (ms) that ended before the current wait. */
  private waitedMs = 0;
  private waitingSince: number | null;
  private bytes = 0;
  /** (waiting time, bytes so far) points, at most one per bucket, the oldest at or before the window's start. */
  private samples: Array<{ clock: number; bytes: number }> = [{ clock: 0, bytes: 0 }];
  private readonly bucketMs: number;

  /** Starts waiting at once: the response head is waited for too. */
  constructor(
    private readonly floor: MinRate,
    private readonly now: () => number = Date.now,
  ) {
    this.waitingSince = now();
    this.bucketMs = floor.windowMs / 20;
  }

  /** The import asks the source for more. */
  waiting(): void {
    this.waitingSince ??= this.now();
  }

  /** Bytes arrived: the wait is over until the import asks again. */
  received(bytes: number): void {
    this.bytes += bytes;
    this.sample();
    if (this.waitingSince !== null) this.waitedMs += this.now() - this.waitingSince;
    this.waitingSince = null;
  }

  /** The bytes of the last window, once a whole window has been waited; null while it is fine. */
  tooSlow(): { bytes: number } | null {
    if (this.floor.bytes === 0) return null;
    const clock = this.sample();
    const start = clock - this.floor.windowMs;
    if (start < 0) return null;
    while (this.samples.length > 1 && this.samples[1]!.clock <= start) this.samples.shift();
    // The point at or before the window's start: its window is a little longer, never shorter, than asked.
    const inWindow = this.bytes - this.samples[0]!.bytes;
    return inWindow < this.floor.bytes ? { bytes: inWindow } : null;
  }

  private clock(): number {
    return this.waitedMs + (this.waitingSince === null ? 0 : this.now() - this.waitingSince);
  }

  /** Records the present as a point unless the last one is within a bucket; returns the clock. */
  private sample(): number {
    const clock = this.clock();
    if (clock - this.samples.at(-1)!.clock >= this.bucketMs) this.samples.push({ clock, bytes: this.bytes });
    return clock;
  }
}
