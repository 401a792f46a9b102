import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { fillUp, isRoot, mountTmpfs, unmountTmpfs } from './helpers/tmpfs.js';

if (!isRoot) console.warn('full-disk tests skipped: mounting a small tmpfs as the data dir needs root (CI runs as root)');

describe.skipIf(!isRoot)('a data dir that fills up', () => {
  let mount: string;
  let dataDir: string;
  let daemon: RunningDaemon;
  let images: string;
  beforeAll(() => {
    mount = mountTmpfs('4m');
    dataDir = path.join(mount, 'data');
    images = tempDir('nbdmux-images-');
  });
  afterAll(() => {
    killEverything(daemon ? [dataDir] : []);
    unmountTmpfs(mount);
  });

  it('is reported, refuses changes with 503, keeps serving, and recovers by itself', async () => {
    daemon = await startDaemon({ dataDir });
    const image = makeImage(images, 'disk.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);

    const filler = path.join(mount, 'filler');
    console.log(`filler: ${fillUp(filler)} bytes`);

    const sick = await api(daemon, 'GET', '/healthz');
    expect(sick.status).toBe(503);
    expect(sick.text).toContain(`the data dir ${dataDir} is full`);
    expect(sick.text).toContain('free space there');

    const refused = await api(daemon, 'POST', '/exports', { name: 'second', file: image });
    expect(refused.status).toBe(503);
    expect(refused.json.error).toEqual({
      code: 'SERVICE_UNAVAILABLE',
      message: `the data dir ${dataDir} is full, so nothing was changed: free space there, then try again`,
    });

    // A booting machine is served even though its connection cannot be recorded.
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));
    expect(daemon.child.exitCode).toBeNull();
    expect(daemon.output().match(/"data dir full/g), 'logged once, not per failed write').toHaveLength(1);

    fs.rmSync(filler);
    await waitFor('health to clear', async () => ((await api(daemon, 'GET', '/healthz')).status === 200 ? true : undefined), 10_000);
    expect((await api(daemon, 'POST', '/exports', { name: 'second', file: image })).status).toBe(201);
    const recent = (await api(daemon, 'GET', `/trpc/events.list?input=${encodeURIComponent(JSON.stringify({ limit: 20 }))}`)).json.result
      .data as Array<{ type: string; details: Record<string, unknown> }>;
    const recovered = recent.find((event) => event.type === 'daemon.space-recovered');
    console.log('recovered:', JSON.stringify(recovered));
    expect(recovered?.details).toMatchObject({ dataDir, notRecorded: expect.any(Number) });
    expect(recovered!.details.notRecorded as number).toBeGreaterThan(0);
    expect(recent.find((event) => event.type === 'export.created')).toMatchObject({ details: { file: image } });
    expect(sha256(await readExport(daemon.nbdUri('second')))).toBe(sha256(image));
    expect(await daemon.stop()).toBe(0);
  }, 60_000);
});
