import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../testkit/daemon.js';
import { buildKitPackages, buildKitTools } from './helpers/build-kit.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const linkCommands = path.join(repo, 'scripts/link-commands');
const bins = (JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A bin dir of its own, so the test never writes /usr/local/bin. */
function binDir(): string {
  const dir = tempDir('nbdmux-bin-');
  dirs.push(dir);
  return dir;
}

function link(dir: string) {
  const result = spawnSync(linkCommands, [], { env: { ...process.env, NBDMUX_BIN_DIR: dir }, encoding: 'utf8', timeout: 20_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Each link's inode and target: a run that changes nothing leaves both as they were. */
function snapshot(dir: string) {
  return fs
    .readdirSync(dir)
    .sort()
    .map((name) => {
      const stat = fs.lstatSync(path.join(dir, name));
      return { name, ino: stat.ino, mtimeMs: stat.mtimeMs, target: stat.isSymbolicLink() ? fs.readlinkSync(path.join(dir, name)) : null };
    });
}

describe('scripts/link-commands (run by scripts/setup)', () => {
  it('puts nbdmux and nbdmux-server on the PATH as links to the built, executable files; a second run changes nothing', () => {
    expect(Object.keys(bins).sort()).toEqual(['nbdmux', 'nbdmux-server']);
    const dir = binDir();
    const first = link(dir);
    expect(first.code, first.stderr).toBe(0);
    for (const [name, file] of Object.entries(bins)) {
      const linkPath = path.join(dir, name);
      expect(fs.realpathSync(linkPath)).toBe(fs.realpathSync(path.join(repo, file)));
      expect(fs.statSync(linkPath).mode & 0o111, `${file} is executable`).toBe(0o111);
      expect(first.stdout).toContain(`${name}: ${linkPath} -> `);
    }

    // Found through PATH and run by name, as an operator types them.
    const env = { ...process.env, PATH: `${dir}:${path.dirname(process.execPath)}:/usr/bin:/bin` };
    const version = spawnSync('nbdmux', ['--version'], { env, encoding: 'utf8', timeout: 20_000 });
    expect([version.status, version.stdout]).toEqual([0, expect.stringMatching(/^nbdmux \d+\.\d+\.\d+\n$/)]);
    const serverHelp = spawnSync('nbdmux-server', ['--help'], { env, encoding: 'utf8', timeout: 20_000 });
    expect(serverHelp.status, serverHelp.stderr).toBe(0);
    expect(serverHelp.stdout).toMatch(/--data-dir/);

    const before = snapshot(dir);
    const second = link(dir);
    expect(second.code, second.stderr).toBe(0);
    expect(snapshot(dir)).toEqual(before);
    for (const name of Object.keys(bins)) expect(second.stdout).toContain(`${name}: already `);
  });

  it('never replaces a file of that name that is not its link: it says so and links the rest', () => {
    const dir = binDir();
    const foreign = path.join(dir, 'nbdmux');
    fs.writeFileSync(foreign, '#!/bin/sh\necho another nbdmux\n', { mode: 0o755 });
    const elsewhere = path.join(dir, 'nbdmux-server');
    fs.symlinkSync('/opt/somewhere-else/server', elsewhere);

    const result = link(dir);
    expect(result.code, result.stderr).toBe(0);
    expect(fs.readFileSync(foreign, 'utf8')).toBe('#!/bin/sh\necho another nbdmux\n');
    expect(fs.readlinkSync(elsewhere)).toBe('/opt/somewhere-else/server');
    expect(result.stderr).toContain(`nbdmux: NOT linked: ${foreign} is a file not made by nbdmux; left as it is`);
    expect(result.stderr).toContain(`nbdmux-server: NOT linked: ${elsewhere} is a link to /opt/somewhere-else/server; left as it is`);
  });

  it("replaces only a dangling link to a gone checkout's same bin", () => {
    const dir = binDir();
    fs.symlinkSync(`/gone/checkout/${bins.nbdmux}`, path.join(dir, 'nbdmux'));
    const result = link(dir);
    expect(result.code, result.stderr).toBe(0);
    expect(fs.realpathSync(path.join(dir, 'nbdmux'))).toBe(fs.realpathSync(path.join(repo, bins.nbdmux!)));
    expect(result.stdout).toContain('replaced a link to a checkout that is gone');
  });
});

describe('scripts/setup', () => {
  const setup = fs.readFileSync(path.join(repo, 'scripts/setup'), 'utf8');
  /** The packages plain `./scripts/setup` installs: the first list, before `--test` adds its own. */
  const serverPackages = /^packages=\(\n([\s\S]*?)^\)/m
    .exec(setup)![1]!
    .split('\n')
    .flatMap((line) => line.replace(/#.*/, '').trim().split(/\s+/))
    .filter(Boolean);

  it('installs, without --test, every tool ramboot/build-kit checks for (or it is essential to Debian)', () => {
    expect(buildKitTools()).toContain('gcc');
    const needed = buildKitPackages();
    expect(needed).toContain('kmod');
    expect(needed.filter((pkg) => !serverPackages.includes(pkg))).toEqual([]);
    // build-kit copies /bin/busybox into the initramfs and refuses a dynamic one.
    expect(serverPackages).toContain('busybox-static');
  });

  it("names itself in build-kit's errors, and ends by linking the commands and naming the next step", () => {
    const buildKit = fs.readFileSync(path.join(repo, 'ramboot/build-kit'), 'utf8');
    expect(buildKit).toMatch(/is missing: run \.\/scripts\/setup/);
    expect(buildKit).not.toMatch(/run scripts\/setup"/);
    const build = setup.search(/^npm run build/m);
    expect(build).toBeGreaterThan(0);
    expect(setup.search(/^scripts\/link-commands$/m)).toBeGreaterThan(build);
    expect(setup).toMatch(/nbdmux-server --data-dir \.\/data\n/);
    expect(setup).toMatch(/^ {2}nbdmux ls$/m);
  });
});
