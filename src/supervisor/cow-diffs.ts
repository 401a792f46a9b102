import fs from 'node:fs';
import path from 'node:path';

/**
 * The diff files of copy-on-write connections. nbd-server names each `<file>-<ip>-<pid>.diff`
 * in the cow dir (pid: the serving process) and removes it when the connection ends, but not
 * when the process is killed: those leftovers are ours to remove.
 */
const diffName = /-(\d+)\.diff$/;

export interface CowDiff {
  path: string;
  bytes: number;
}

/** Creates the cow dir, private: a diff holds whatever a machine wrote to its disk. */
export function prepareCowDir(cowDir: string): void {
  fs.mkdirSync(cowDir, { recursive: true, mode: 0o700 });
}

/** Every diff file in the cow dir, by the pid of the process that writes it. */
export function listCowDiffs(cowDir: string): Map<number, CowDiff> {
  const diffs = new Map<number, CowDiff>();
  for (const name of readDir(cowDir)) {
    const match = diffName.exec(name);
    if (!match) continue;
    const file = path.join(cowDir, name);
    try {
      diffs.set(Number(match[1]), { path: file, bytes: fs.statSync(file).size });
    } catch {
      // Removed between the listing and the stat: its connection just ended.
    }
  }
  return diffs;
}

/** Removes the diff a killed process left behind; returns its last size, or null when it has none. */
export function removeCowDiff(cowDir: string, pid: number): number | null {
  const diff = listCowDiffs(cowDir).get(pid);
  if (!diff) return null;
  fs.rmSync(diff.path, { force: true });
  return diff.bytes;
}

/** Removes every diff whose process is not one of `livePids`; returns how many. */
export function removeLeftoverCowDiffs(cowDir: string, livePids: ReadonlySet<number>): number {
  let removed = 0;
  for (const [pid, diff] of listCowDiffs(cowDir)) {
    if (livePids.has(pid)) continue;
    fs.rmSync(diff.path, { force: true });
    removed++;
  }
  return removed;
}

function readDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
