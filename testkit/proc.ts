import fs from 'node:fs';

/** Every process id in /proc right now. */
export function allPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number);
}

/**
 * The fields of /proc/PID/stat after the command name: state is [0], the parent pid [1], utime..cstime
 * [11..14]. The name is cut off first, since it is in parentheses and may itself hold spaces or ')'.
 * Null once the process is gone.
 */
export function statFields(pid: number): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

export function parentPid(pid: number): number | null {
  const fields = statFields(pid);
  return fields === null ? null : Number(fields[1]);
}

/** True while the process exists and has not exited (an unreaped zombie has). */
export function processRuns(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/** The process's command line, arguments joined by NUL as /proc has it; null once it is gone. */
export function cmdline(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return null;
  }
}

/** The nbd-server processes serving from a data dir: they name its config on their command line. */
export function servingPids(dataDir: string): number[] {
  return allPids().filter((pid) => cmdline(pid)?.includes(`${dataDir}/nbd-server.conf`));
}

/** Serving processes outlive their daemon on purpose, so whoever started one must end it. */
export function killServingProcesses(dataDirs: readonly string[]): void {
  for (const pid of dataDirs.flatMap(servingPids)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** Linux reports process times in USER_HZ, 100 on every common configuration. */
const clockTicksPerSecond = 100;

/** CPU seconds a process used, its own plus every child it has reaped (utime+stime+cutime+cstime). */
export function cpuSeconds(pid: number): number {
  const fields = statFields(pid)?.map(Number);
  if (!fields) throw new Error(`no /proc/${pid}/stat`);
  return (fields[11]! + fields[12]! + fields[13]! + fields[14]!) / clockTicksPerSecond;
}

/** Children of a process that have not been reaped yet (zombies included). */
export function liveChildren(pid: number): number[] {
  const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return text === '' ? [] : text.split(' ').map(Number);
}
