import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigVariants } from '../src/supervisor/config-variants.js';
import {
  exportsVisibleTo,
  renderNbdServerConfig,
  withBootedVersions,
  type ServedExport,
  type ServedState,
} from '../src/supervisor/nbd-config.js';
import { tempDir } from '../testkit/daemon.js';

const cowDir = '/var/lib/nbdmux/cow';
const exports: ServedExport[] = [
  { id: 1, versionId: 101, name: 'public', file: '/srv/images/p.img', fd: 30, readonly: true },
  { id: 2, versionId: 102, name: 'secret', file: '/srv/images/s.img', fd: 31, readonly: true, allow: ['127.0.0.2/32'] },
  { id: 3, versionId: 103, name: 'lab', file: '/srv/images/l.img', fd: 32, readonly: true, allow: ['10.0.0.0/8'] },
];
const minute = 60_000;

describe('ConfigVariants: one config per set of visible exports, each under DATA_DIR/nbd-server.conf', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });
  function fresh(): { dir: string; variants: ConfigVariants } {
    const dir = tempDir('nbdmux-variants-');
    dirs.push(dir);
    const variants = new ConfigVariants(path.join(dir, 'nbd-server.conf'), cowDir);
    variants.apply(exports);
    return { dir, variants };
  }

  it('writes the full set to nbd-server.conf, and a client that sees fewer gets its own file holding exactly those, with their descriptors in order', () => {
    const { dir, variants } = fresh();
    expect(fs.readFileSync(path.join(dir, 'nbd-server.conf'), 'utf8')).toBe(renderNbdServerConfig(exports, cowDir));
    const outsider = variants.forClient('127.0.0.1');
    expect(outsider.path).toMatch(new RegExp(`^${dir}/nbd-server\\.conf\\.[0-9a-f]{16}$`));
    expect(outsider.fds).toEqual([30]);
    expect(fs.readFileSync(outsider.path, 'utf8')).toBe(renderNbdServerConfig(exportsVisibleTo(exports, '127.0.0.1'), cowDir));
    expect(variants.forClient('10.1.2.3').fds).toEqual([30, 32]);
  });

  it('never changes a file a process was handed: a change of exports makes new files, so positions and descriptors stay in step', () => {
    const { dir, variants } = fresh();
    const everyone = variants.forClient('127.0.0.2'); // sees public and secret
    expect(everyone.path).not.toBe(path.join(dir, 'nbd-server.conf'));
    const handed = fs.readFileSync(everyone.path, 'utf8');
    // An export that sorts first arrives: every later section's /proc/self/fd/N moves by one.
    variants.apply([{ id: 4, versionId: 104, name: 'aardvark', file: '/srv/images/a.img', fd: 33, readonly: true }, ...exports]);
    expect(fs.readFileSync(everyone.path, 'utf8')).toBe(handed);
    const next = variants.forClient('127.0.0.2');
    expect(next.path).not.toBe(everyone.path);
    expect(next.fds).toEqual([33, 30, 31]);
  });

  it("writes the full set once per change: nbd-server.conf is a second name of the full set's file, following each change", () => {
    const { dir } = fresh();
    const readable = path.join(dir, 'nbd-server.conf');
    const variants = new ConfigVariants(readable, cowDir);
    const open = exports.map((exp) => ({ ...exp, allow: undefined }));
    variants.apply(open);
    const full = variants.forClient('192.0.2.9'); // sees every export: the full set's own file
    expect(fs.statSync(readable).ino).toBe(fs.statSync(full.path).ino);

    variants.apply(open.slice(1));
    const next = variants.forClient('192.0.2.9');
    expect(next.path).not.toBe(full.path);
    expect(fs.statSync(readable).ino).toBe(fs.statSync(next.path).ino);
    // The former full set's file goes as any stale variant; the readable name keeps the current text.
    variants.removeStale(Date.now() + 2 * minute);
    expect(fs.existsSync(full.path)).toBe(false);
    expect(fs.readFileSync(readable, 'utf8')).toBe(renderNbdServerConfig(open.slice(1), cowDir));
  });

  it('writes a variant again when its file was removed behind its back, rather than handing out a missing path', () => {
    const { dir, variants } = fresh();
    const handed = variants.forClient('127.0.0.1');
    fs.rmSync(handed.path);
    fs.rmSync(path.join(dir, 'nbd-server.conf'));
    variants.apply([...exports]); // the same set: the same file names
    expect(fs.readFileSync(variants.forClient('127.0.0.1').path, 'utf8')).toBe(
      renderNbdServerConfig(exportsVisibleTo(exports, '127.0.0.1'), cowDir),
    );
    expect(fs.readFileSync(path.join(dir, 'nbd-server.conf'), 'utf8')).toBe(renderNbdServerConfig(exports, cowDir));
  });

  it('shares one file among clients that see the same exports', () => {
    const { dir, variants } = fresh();
    expect(variants.forClient('127.0.0.1').path).toBe(variants.forClient('192.0.2.9').path);
    // nbd-server.conf for people, the full set's own file (written with it), and the one 127.0.0.1 and 192.0.2.9 share.
    const files = fs.readdirSync(dir);
    expect(files).toHaveLength(3);
    expect(files).toEqual(expect.arrayContaining(['nbd-server.conf', path.basename(variants.forClient('127.0.0.1').path)]));
  });

  it('removes a variant no longer current only once no process started with it can still be about to read it', () => {
    const { variants } = fresh();
    const old = variants.forClient('127.0.0.1').path;
    variants.apply(exports.slice(1)); // public goes: 127.0.0.1 now sees nothing, a new text
    const current = variants.forClient('127.0.0.1').path;
    expect(current).not.toBe(old);
    variants.removeStale(Date.now() + minute / 2);
    expect(fs.existsSync(old)).toBe(true);
    variants.removeStale(Date.now() + 2 * minute);
    expect([fs.existsSync(old), fs.existsSync(current)]).toEqual([false, true]);
  });

  it('removes variants an earlier run left only after the same grace, since that run may just have started a process with one', () => {
    const { dir } = fresh();
    const leftover = path.join(dir, 'nbd-server.conf.0123456789abcdef');
    fs.writeFileSync(leftover, 'left by an earlier run\n');
    const variants = new ConfigVariants(path.join(dir, 'nbd-server.conf'), cowDir);
    variants.apply(exports);
    variants.removeStale(Date.now() + minute / 2);
    expect(fs.existsSync(leftover)).toBe(true);
    variants.removeStale(Date.now() + 2 * minute);
    expect(fs.existsSync(leftover)).toBe(false);
    expect(fs.existsSync(path.join(dir, 'nbd-server.conf'))).toBe(true);
  });

  describe('machines', () => {
    const stateOf = (machineId: number, fd: number): ServedState => ({
      machineId,
      machine: `m${machineId}`,
      name: `__state-52540000000${machineId}`,
      fd,
      client: `10.0.0.${machineId}`,
      exportId: 1,
    });

    /**
     * The exports with each one's `file` counted when read: only rendering a config reads it, so
     * the count shows configs rendered again (the work at stake) without timing anything.
     */
    function counted(): { exports: ServedExport[]; reads: () => number } {
      let reads = 0;
      const exportsCounted = exports.map((exp) => {
        const copy = { ...exp, allow: undefined };
        Object.defineProperty(copy, 'file', {
          enumerable: true,
          get: () => {
            reads++;
            return exp.file;
          },
        });
        return copy;
      });
      return { exports: exportsCounted, reads: () => reads };
    }

    it("keeps a machine's config unrendered when another machine boots, and renders it again when its state changes", () => {
      const { variants } = fresh();
      const { exports: served, reads } = counted();
      variants.apply(served);
      variants.applyMachines({ states: [stateOf(1, 40), stateOf(2, 41)], booted: [] });
      const first = variants.forClient('10.0.0.1');
      expect(first.fds).toEqual([30, 31, 32, 40]);

      const before = reads();
      // Machine 3 boots: machines 1 and 2 serve what they served.
      variants.applyMachines({ states: [stateOf(1, 40), stateOf(2, 41), stateOf(3, 42)], booted: [] });
      const rendered = reads() - before;
      expect(variants.forClient('10.0.0.1')).toEqual(first);
      expect(variants.forClient('10.0.0.3').fds).toEqual([30, 31, 32, 42]);
      expect(reads() - before).toBe(rendered);
      // Only machine 3's config was rendered: each export's file read as many times as in one render.
      const perRender = reads();
      renderNbdServerConfig(served, cowDir);
      expect(rendered).toBe(reads() - perRender);

      // Machine 1's state is now another descriptor: the same text, but not the same config.
      variants.applyMachines({ states: [stateOf(1, 43), stateOf(2, 41), stateOf(3, 42)], booted: [] });
      const moved = variants.forClient('10.0.0.1');
      expect(moved.fds).toEqual([30, 31, 32, 43]);
      expect(fs.readFileSync(moved.path, 'utf8')).toBe(renderNbdServerConfig(served, cowDir, [stateOf(1, 43)]));
    });

    it('has the config of a machine that booted a version written before it connects, and drops a machine that went', () => {
      const { dir, variants } = fresh();
      const open = exports.map((exp) => ({ ...exp, allow: undefined }));
      variants.apply(open);
      const booted = { exportId: 1, versionId: 99, version: 2, fd: 50, client: '10.0.0.7' };
      variants.applyMachines({ states: [], booted: [booted] });
      const texts = fs.readdirSync(dir).map((name) => fs.readFileSync(path.join(dir, name), 'utf8'));
      expect(texts).toContain(renderNbdServerConfig(withBootedVersions(open, [booted], '10.0.0.7'), cowDir));
      const config = variants.forClient('10.0.0.7');
      expect(config.fds).toEqual([50, 31, 32, 50]);
      variants.applyMachines({ states: [], booted: [] });
      expect(variants.forClient('10.0.0.7').fds).toEqual([30, 31, 32]);
    });
  });
});
