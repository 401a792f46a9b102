import type { Duplex } from 'node:stream';

/**
 * The pipe between the daemon and one serving process (its descriptor `reportFd`). Once the
 * client has chosen an export, the config's prerun writes that export's id as one line; the
 * daemon answers every report with a verdict line, which only an export with an allow list waits
 * for (its prerun refuses the client unless it reads `admittedVerdict`).
 */
export const admittedVerdict = 'allow';
const refusedVerdict = 'deny';

/** The export id a report names; null for anything else (only our prerun writes here). */
export function parseReport(text: string): number | null {
  const exportId = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(exportId) ? exportId : null;
}

/** The line that answers a report. */
export function verdictLine(admitted: boolean): string {
  return `${admitted ? admittedVerdict : refusedVerdict}\n`;
}

/** A report and the verdict it got. */
export interface AnsweredReport {
  exportId: number;
  admitted: boolean;
}

/**
 * Answers each report on `pipe` with `judge`'s verdict, then calls `answered` with both (with
 * null for data that is no report). A pipe error means the process is gone, which its 'close' tells.
 */
export function answerReports(pipe: Duplex, judge: (exportId: number) => boolean, answered: (report: AnsweredReport | null) => void): void {
  pipe.on('data', (chunk: Buffer) => {
    const exportId = parseReport(chunk.toString('utf8'));
    if (exportId === null) return answered(null);
    const admitted = judge(exportId);
    pipe.write(verdictLine(admitted));
    answered({ exportId, admitted });
  });
  pipe.on('error', () => {});
}
