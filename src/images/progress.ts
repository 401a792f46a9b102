export type ImportStage = 'queued' | 'downloading' | 'decompressing' | 'converting' | 'verifying';

export interface ImportProgress {
  stage: ImportStage;
  bytes: number;
  /** Known when the server sent Content-Length (downloading) or qemu-img told (converting). */
  totalBytes: number | null;
  bytesPerSecond: number;
  startedAt: string;
}

/** Progress is passed on at most this often (stage changes pass at once). */
export const progressIntervalMs = 250;
/** The rate is measured over about this much of the recent past. */
const rateWindowMs = 2000;

/**
 * Turns a stream of byte counts into progress reports: at most 4 a second, with a recent rate.
 * What a report had to skip follows at the end of its interval: a download that stalls right
 * after a burst shows where it stopped, not where it was a moment before.
 */
export class ProgressMeter {
  private stage: ImportStage = 'queued';
  private bytes = 0;
  private totalBytes: number | null = null;
  private readonly startedAt = new Date().toISOString();
  private samples: Array<{ at: number; bytes: number }> = [];
  private lastReportAt = 0;
  private trailing: NodeJS.Timeout | undefined;

  constructor(private readonly report: (progress: ImportProgress) => void) {}

  /** A new stage is reported at once; the same stage again (its total now known) waits its turn. */
  enter(stage: ImportStage, bytes: number, totalBytes: number | null): void {
    const changed = stage !== this.stage || this.lastReportAt === 0;
    this.stage = stage;
    this.totalBytes = totalBytes;
    if (changed) this.samples = [];
    this.update(bytes, changed);
  }

  update(bytes: number, force = false): void {
    const now = Date.now();
    this.bytes = bytes;
    this.samples.push({ at: now, bytes });
    while (this.samples.length > 2 && now - this.samples[1]!.at >= rateWindowMs) this.samples.shift();
    if (!force && now - this.lastReportAt < progressIntervalMs) {
      // Unref'd: a meter left behind by an import that ended holds nothing up.
      this.trailing ??= setTimeout(
        () => {
          this.trailing = undefined;
          this.update(this.bytes, true);
        },
        progressIntervalMs - (now - this.lastReportAt),
      ).unref();
      return;
    }
    clearTimeout(this.trailing);
    this.trailing = undefined;
    this.lastReportAt = now;
    this.report({
      stage: this.stage,
      bytes: this.bytes,
      totalBytes: this.totalBytes,
      bytesPerSecond: this.rate(now),
      startedAt: this.startedAt,
    });
  }

  private rate(now: number): number {
    const oldest = this.samples[0]!;
    const seconds = (now - oldest.at) / 1000;
    return seconds > 0 ? Math.round((this.bytes - oldest.bytes) / seconds) : 0;
  }
}
