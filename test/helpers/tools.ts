import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

/**
 * Whether the suite that needs these tools must be skipped: true, with the reason printed, when
 * one is missing on a developer's machine; in CI (`CI` set) a missing tool is a failure instead,
 * so a run that tested nothing of it cannot pass. Each tool is a command on the PATH or a path.
 */
export function skipWithout(...tools: string[]): boolean {
  const missing = tools.filter((tool) =>
    tool.startsWith('/') ? !fs.existsSync(tool) : spawnSync('sh', ['-c', 'command -v "$1"', 'sh', tool]).status !== 0,
  );
  if (missing.length === 0) return false;
  const reason = `needs ${missing.join(', ')} (scripts/setup --test installs it)`;
  if (process.env.CI) throw new Error(`CI must run every test, and this one ${reason}`);
  console.warn(`skipped: ${reason}`);
  return true;
}
