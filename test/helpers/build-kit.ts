import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../..', import.meta.url));

/** The tools ramboot/build-kit checks for before it starts, read from the script itself. */
export function buildKitTools(): string[] {
  const buildKit = fs.readFileSync(path.join(repo, 'ramboot/build-kit'), 'utf8');
  return /^for tool in ([^;]+); do\n\tcommand -v/m.exec(buildKit)![1]!.split(/\s+/);
}

/** The Debian package that holds a tool on this machine (Debian 12, usr-merged or not). */
export function debianPackageOf(tool: string): string {
  for (const dir of ['/bin', '/sbin', '/usr/bin', '/usr/sbin']) {
    const owner = spawnSync('dpkg-query', ['-S', `${dir}/${tool}`], { encoding: 'utf8' });
    if (owner.status === 0) return owner.stdout.split(':')[0]!;
  }
  throw new Error(`no Debian package holds ${tool}: run ./scripts/setup`);
}

/** Installed on every Debian system: no set-up needs to name it. */
export function essential(pkg: string): boolean {
  return spawnSync('dpkg-query', ['-W', '-f=${Essential}', pkg], { encoding: 'utf8' }).stdout === 'yes';
}

/** What a set-up must install for build-kit to run: the packages of its tools that Debian does not always have. */
export function buildKitPackages(): string[] {
  return [...new Set(buildKitTools().map(debianPackageOf))].filter((pkg) => !essential(pkg));
}
