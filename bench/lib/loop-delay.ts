import type { RecordableHistogram } from 'node:perf_hooks';

/** How often the loop's delay is sampled, as monitorEventLoopDelay's resolution. */
const samplingMs = 10;

/**
 * Records into `delays` (ns) how late a 10 ms timer fires while `work` runs, and only then. Not
 * monitorEventLoopDelay: enabled again after a pause, its first sample spans the whole pause, so
 * the import bench's curl and qemu-img rounds between two imports showed as one stall of their
 * length (a 23 s "max").
 */
export async function whileSampling<T>(delays: RecordableHistogram, work: () => Promise<T>): Promise<T> {
  let last = process.hrtime.bigint();
  const timer = setInterval(() => {
    const now = process.hrtime.bigint();
    delays.record(Math.max(1, Number(now - last) - samplingMs * 1e6));
    last = now;
  }, samplingMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
