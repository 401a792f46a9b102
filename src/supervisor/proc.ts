import fs from 'node:fs';

// Processes by pid: what /proc says about them, and ending them.

/**
 * What /proc says about a process. The start time (clock ticks since boot) pins a pid to one
 * process, so a pid reused after a restart of nbdmux is never mistaken for a serving process.
 */
export interface ProcessIdentity {
  pid: number;
  startTicks: number;
}

function readStat(pid: number): { state: string; startTicks: number } | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTicks = Number(fields[19]);
  if (state === undefined || !Number.isFinite(startTicks)) return null;
  return { state, startTicks };
}

export function readStartTicks(pid: number): number | null {
  return readStat(pid)?.startTicks ?? null;
}

/** True while that very process exists and has not exited (a zombie has exited). */
export function isRunning({ pid, startTicks }: ProcessIdentity): boolean {
  const stat = readStat(pid);
  return stat !== null && stat.startTicks === startTicks && stat.state !== 'Z' && stat.state !== 'X';
}

/** True while the process runs or waits only for a CPU (state R), as opposed to sleeping on I/O. */
export function isOnCpu(pid: number): boolean {
  return readStat(pid)?.state === 'R';
}

/** Bytes the process has written: to the client socket, and to the image or a diff for what the client writes; null once it is gone. */
export function readBytesWritten(pid: number): number | null {
  try {
    const match = /^wchar: (\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/io`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** SIGKILLs the process (SIGTERM is ignored while nbd-server serves); false when it was already gone. */
export function killProcess(pid: number): boolean {
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}
