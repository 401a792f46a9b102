import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';

describe('a daemon whose log reader has gone', () => {
  const dataDirs: string[] = [];
  afterAll(() => killEverything(dataDirs));

  it('keeps serving and stops cleanly on SIGTERM once writing its log fails with EPIPE', async () => {
    const daemon = await startDaemon({ args: ['--log-level', 'debug'] });
    dataDirs.push(daemon.dataDir);
    const image = makeImage(tempDir(), 'disk.img', 1 << 20);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);
    // The end of its stderr pipe closed: what a closed terminal or a restarted log collector leaves it with.
    daemon.child.stderr!.destroy();
    // Each of these logs debug lines, now written into a broken pipe.
    for (let i = 0; i < 3; i++)
      expect(
        execFileSync('nbdinfo', ['--size', daemon.nbdUri('disk')], { timeout: 10_000 })
          .toString()
          .trim(),
      ).toBe(String(1 << 20));
    expect((await api(daemon, 'GET', '/exports/disk')).status).toBe(200);

    const stopped = daemon.stop('SIGTERM');
    const timedOut = new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 10_000).unref());
    expect(await Promise.race([stopped, timedOut])).toBe(0);
  }, 60_000);
});
