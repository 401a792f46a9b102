import type { LiveConnection } from './live-connection.js';
import { listCowDiffs } from './cow-diffs.js';
import { readBytesWritten } from './proc.js';

/**
 * Byte counters move without any event: what each serving process has sent, read from /proc,
 * and the size of its copy-on-write diff, read from the cow dir.
 */
export function sampleConnections(conns: Iterable<LiveConnection>, cowDir: string): void {
  const diffs = listCowDiffs(cowDir);
  for (const conn of conns) {
    if (conn.pid === null) continue;
    conn.cowDiffBytes = diffs.get(conn.pid)?.bytes ?? conn.cowDiffBytes;
    if (conn.bytesFinal) {
      conn.bytesPerSecond = 0;
      continue;
    }
    const bytes = readBytesWritten(conn.pid);
    if (bytes === null) continue;
    const now = Date.now();
    conn.bytesPerSecond = conn.sampledAt === null ? 0 : sendRate(conn.bytesSent, conn.sampledAt, bytes, now);
    conn.bytesSent = bytes;
    conn.sampledAt = now;
  }
}

/** At its close: what the process sent in the end, while /proc still shows it. */
export function sampleLastBytes(conn: LiveConnection): void {
  if (conn.pid !== null) conn.bytesSent = readBytesWritten(conn.pid) ?? conn.bytesSent;
}

/** Bytes per second between two samples (times in ms); never negative, and no division by a zero interval. */
export function sendRate(bytesBefore: number, sampledAt: number, bytesNow: number, now: number): number {
  return Math.max(0, Math.round(((bytesNow - bytesBefore) * 1000) / Math.max(1, now - sampledAt)));
}
