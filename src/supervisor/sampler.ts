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
    const bytes = serverWrites(conn);
    if (bytes === null) continue;
    const now = Date.now();
    conn.bytesPerSecond = conn.sampledAt === null ? 0 : sendRate(conn.bytesSent, conn.sampledAt, bytes, now);
    conn.bytesSent = bytes;
    conn.sampledAt = now;
  }
}

/** At its close: what the process sent in the end, while /proc still shows it. */
export function sampleLastBytes(conn: LiveConnection): void {
  conn.bytesSent = serverWrites(conn) ?? conn.bytesSent;
}

/**
 * While the process waits in its postrun: the bytes its postrun reported (the client's TCP
 * acknowledgements, exact, and blind to what the client wrote) where /proc bounds them. Every
 * byte on the socket went through nbd-server's write(), so a true report never exceeds the
 * process's wchar; a larger one is not our helper talking, and wchar counts instead, as it does
 * when the process could not tell.
 */
export function sampleFinalBytes(conn: LiveConnection, reported: number | null): void {
  const written = serverWrites(conn);
  conn.bytesSent = reported !== null && written !== null && reported <= written ? reported : (written ?? conn.bytesSent);
}

/**
 * What the process wrote, less its prerun's report (in wchar too, once its shell is reaped; the
 * postrun's is not while it waits): the bytes it wrote to the client, plus whatever the client
 * had it write to the image or a diff. Null once the process is gone.
 */
function serverWrites(conn: LiveConnection): number | null {
  const written = conn.pid === null ? null : readBytesWritten(conn.pid);
  return written === null ? null : Math.max(0, written - conn.reportBytes);
}

/** Bytes per second between two samples (times in ms); never negative, and no division by a zero interval. */
export function sendRate(bytesBefore: number, sampledAt: number, bytesNow: number, now: number): number {
  return Math.max(0, Math.round(((bytesNow - bytesBefore) * 1000) / Math.max(1, now - sampledAt)));
}
