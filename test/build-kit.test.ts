import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { skipWithout } from './helpers/tools.js';

/**
 * The docs build the kit as `ramboot/build-kit ./kit`, from the clone: a relative OUT_DIR must
 * land where the operator named it (the cached builds every other test uses pass an absolute one).
 */
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'nbdmux-build-kit-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

it.skipIf(skipWithout('busybox', 'nbd-client', 'cpio', 'depmod', 'apt-get'))(
  'builds the kit into a relative OUT_DIR, taken from the current directory',
  () => {
    const build = spawnSync(path.resolve('ramboot/build-kit'), ['./kit'], { cwd: scratch, encoding: 'utf8', timeout: 240_000 });
    expect(build.stderr).not.toMatch(/No such file or directory/);
    expect(build.status).toBe(0);
    for (const file of ['vmlinuz', 'vmlinux', 'initrd.img', 'kit.env'])
      expect(fs.statSync(path.join(scratch, 'kit', file)).size).toBeGreaterThan(0);
    // gzip's magic: the initramfs is a whole archive, not an empty redirect target.
    expect([...fs.readFileSync(path.join(scratch, 'kit', 'initrd.img')).subarray(0, 2)]).toEqual([0x1f, 0x8b]);
  },
  300_000,
);
