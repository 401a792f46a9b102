import type { Duplex } from 'node:stream';

/**
 * The pipe between the daemon and one serving process (its descriptor `reportFd`). Once the
 * client has chosen an export, the config's prerun writes that export's id and the id of the
 * version its config serves as one line; the
 * daemon answers every report with a verdict line, which only an export with an allow list waits
 * for (its prerun refuses the client unless it reads `admittedVerdict`).
 */
export const admittedVerdict = 'allow';
const refusedVerdict = 'deny';

/** What a report names: an export and its version, or a machine's state. */
export type Report =
  | {
      exportId: number;
      /** Null from a process started by an nbdmux before versions, whose prerun names the export only. */
      versionId: number | null;
    }
  | { machineId: number };

/** The ids a report names; null for anything else (only our prerun writes here). */
export function parseReport(text: string): Report | null {
  const state = /^\s*state (\d+)\s*$/m.exec(text);
  if (state) {
    const machineId = Number(state[1]);
    return Number.isSafeInteger(machineId) ? { machineId } : null;
  }
  const match = /^\s*(\d+)(?: (\d+))?\s*$/m.exec(text);
  if (!match) return null;
  const exportId = Number(match[1]);
  const versionId = match[2] === undefined ? null : Number(match[2]);
  if (!Number.isSafeInteger(exportId) || (versionId !== null && !Number.isSafeInteger(versionId))) return null;
  return { exportId, versionId };
}

/** The line that answers a report. */
export function verdictLine(admitted: boolean): string {
  return `${admitted ? admittedVerdict : refusedVerdict}\n`;
}

/** A report and the verdict it got. */
export type AnsweredReport = Report & { admitted: boolean };

/**
 * Answers each report on `pipe` with `judge`'s verdict, then calls `answered` with both (with
 * null for data that is no report). A pipe error means the process is gone, which its 'close' tells.
 */
export function answerReports(pipe: Duplex, judge: (report: Report) => boolean, answered: (report: AnsweredReport | null) => void): void {
  pipe.on('data', (chunk: Buffer) => {
    const report = parseReport(chunk.toString('utf8'));
    if (report === null) return answered(null);
    const admitted = judge(report);
    pipe.write(verdictLine(admitted));
    answered({ ...report, admitted });
  });
  pipe.on('error', () => {});
}
