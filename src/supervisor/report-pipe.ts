import type { Duplex } from 'node:stream';

/**
 * The pipe between the daemon and one serving process (its descriptor `reportFd`), one line per
 * message. Once the client has chosen an export, the config's prerun writes that export's id and
 * the id of the version its config serves; the daemon answers every report with a verdict line,
 * which only an export with an allow list waits for (its prerun refuses the client unless it
 * reads `admittedVerdict`). When the connection is over, the postrun writes `endedLine`, followed by
 * the bytes the client's TCP acknowledged when the postrun could read them (see
 * native/socket-sent.c), and waits for `countedReply`: until the daemon answers, the process
 * exists and its final counts can be read from /proc.
 */
export const admittedVerdict = 'allow';
const refusedVerdict = 'deny';
export const endedLine = 'ended';
export const countedReply = 'counted';

/** Longer than any line our prerun or postrun writes (two ids of at most 16 digits). */
const maxLineBytes = 64;
/**
 * A process writes two short lines in its life: past this much it is not our prerun and postrun
 * talking, and the pipe is closed (its postrun then finds no daemon, see nbd-config.ts).
 */
export const maxPipeBytes = 1024;

/** What a report names: an export and its version, or a machine's state. */
export type Report =
  | {
      exportId: number;
      /** Null from a process started by an nbdmux before versions, whose prerun names the export only. */
      versionId: number | null;
    }
  | { machineId: number };

/**
 * The bytes an ended line reports, or null for a bare ended line (no TCP socket, or the helper
 * missing); undefined when the line is no ended line at all. Like every line, untrusted: digits only,
 * bounded, a safe integer.
 */
export function parseEnded(line: string): number | null | undefined {
  if (line === endedLine) return null;
  const match = /^ended (\d{1,16})$/.exec(line);
  if (!match) return undefined;
  const bytes = Number(match[1]);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** The ids one line (without its newline) names, exactly as our prerun writes them; null for anything else. */
export function parseReport(line: string): Report | null {
  const state = /^state (\d{1,16})$/.exec(line);
  if (state) {
    const machineId = Number(state[1]);
    return Number.isSafeInteger(machineId) ? { machineId } : null;
  }
  const match = /^(\d{1,16})(?: (\d{1,16}))?$/.exec(line);
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

export interface ReportListener {
  /** Whether the client may use what the report names. */
  judge(report: Report): boolean;
  /** `lineBytes`: the report's line as written, newline included. */
  answered(report: AnsweredReport, lineBytes: number): void;
  /**
   * The process's connection is over and the process waits for the answer: its counts are final
   * and still readable. `reportedBytes`: what the client's TCP acknowledged, as the process says; null when it could not tell.
   */
  ended(reportedBytes: number | null): void;
  /** Data that is no message (`text` as read, untrusted and cut short), ignored; `closed` when the pipe was closed for it. */
  rejected(text: string, closed: boolean): void;
}

/**
 * Reads `pipe` line by line, answering each report with `judge`'s verdict and each ended line once
 * `ended` has run. Whatever the process writes is untrusted: lines are parsed strictly, a bad one
 * is ignored, and the pipe is closed past `maxPipeBytes`. A pipe error means the process is gone,
 * which its 'close' tells.
 */
export function answerReports(pipe: Duplex, listener: ReportListener): void {
  let received = 0;
  let pending = '';
  /** Inside a line already rejected as too long: dropped up to its newline. */
  let skipping = false;
  const onData = (chunk: Buffer) => {
    received += chunk.length;
    if (received > maxPipeBytes) {
      pipe.off('data', onData);
      pipe.destroy();
      listener.rejected(`${pending}${chunk.toString('latin1')}`.slice(0, maxLineBytes), true);
      return;
    }
    // latin1: one character per byte, so a multi-byte sequence split across chunks cannot shift a line.
    pending += chunk.toString('latin1');
    for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (skipping) skipping = false;
      else handle(line);
    }
    if (pending.length > maxLineBytes) {
      if (!skipping) listener.rejected(pending.slice(0, maxLineBytes), false);
      skipping = true;
      pending = '';
    }
  };
  const handle = (line: string) => {
    const ended = parseEnded(line);
    if (ended !== undefined) {
      listener.ended(ended);
      pipe.write(`${countedReply}\n`);
      return;
    }
    const report = parseReport(line);
    if (report === null) return listener.rejected(line.slice(0, maxLineBytes), false);
    const admitted = listener.judge(report);
    pipe.write(verdictLine(admitted));
    listener.answered({ ...report, admitted }, line.length + 1);
  };
  pipe.on('data', onData);
  pipe.on('error', () => {});
}
