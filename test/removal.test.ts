import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, sha256, startSlowReader } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

describe('removing an export', () => {
  let daemon: RunningDaemon;
  let images: string;
  let image: string;

  beforeEach(async () => {
    daemon = await startDaemon();
    images = tempDir('nbdmux-images-');
    image = makeImage(images, 'disk.img', 4 * 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);
  });
  afterEach(() => killEverything([daemon.dataDir]));

  const exportState = async (name: string) => (await api(daemon, 'GET', '/exports')).json.filter((e: { name: string }) => e.name === name);

  it('hides it from new clients at once while a connected reader finishes with the right bytes', async () => {
    const reader = startSlowReader(daemon.nbdUri('disk'), path.join(images, 'stop-reader'));
    await reader.connected;
    await waitFor('the export to show its live connection', async () =>
      (await exportState('disk'))[0]?.connections === 1 ? true : undefined,
    );

    const removal = await api(daemon, 'DELETE', '/exports/disk');
    expect(removal.status).toBe(204);

    expect((await run('nbdinfo', [daemon.nbdUri('disk')])).code).not.toBe(0);
    expect(await exportState('disk')).toMatchObject([{ name: 'disk', state: 'draining', connections: 1 }]);

    const finished = await reader.finish();
    expect(finished.code).toBe(0);
    expect(finished.sha256).toBe(sha256(image));
    await waitFor('the drained export to disappear', async () => ((await exportState('disk')).length === 0 ? true : undefined));
  });

  it('cuts live connections when forced', async () => {
    const reader = startSlowReader(daemon.nbdUri('disk'), path.join(images, 'stop-reader'));
    await reader.connected;
    await waitFor('the live connection', async () => ((await exportState('disk'))[0]?.connections === 1 ? true : undefined));

    expect((await api(daemon, 'DELETE', '/exports/disk?force=true')).status).toBe(204);
    const finished = await reader.finish();
    expect(finished.code).not.toBe(0);
    await waitFor('the cut connection to be recorded as killed', async () => {
      const [last] = await trpcClient(daemon.url).connections.list.query({ limit: 1 });
      return last?.outcome === 'killed' ? last : undefined;
    });
    expect(await exportState('disk')).toEqual([]);
  });

  it('lets a new export take the name while the old one drains, and keeps each reader on its own image', async () => {
    const reader = startSlowReader(daemon.nbdUri('disk'), path.join(images, 'stop-reader'));
    await reader.connected;
    await waitFor('the live connection', async () => ((await exportState('disk'))[0]?.connections === 1 ? true : undefined));
    expect((await api(daemon, 'DELETE', '/exports/disk')).status).toBe(204);

    const replacement = makeImage(images, 'disk-v2.img', 2 * 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: replacement })).status).toBe(201);
    expect((await exportState('disk')).map((e: { state: string }) => e.state).sort()).toEqual(['draining', 'serving']);
    expect((await run('nbdcopy', [daemon.nbdUri('disk'), '-'])).stdout.length).toBe(2 * 1024 * 1024);

    const finished = await reader.finish();
    expect(finished.sha256).toBe(sha256(image));
  });

  it('refuses to remove a draining name again without force, and cuts it with force', async () => {
    const reader = startSlowReader(daemon.nbdUri('disk'), path.join(images, 'stop-reader'));
    await reader.connected;
    await waitFor('the live connection', async () => ((await exportState('disk'))[0]?.connections === 1 ? true : undefined));
    expect((await api(daemon, 'DELETE', '/exports/disk')).status).toBe(204);

    const again = await api(daemon, 'DELETE', '/exports/disk');
    expect(again.status).toBe(409);
    expect(again.json.error.message).toMatch(/draining 1 connection.*force/);

    expect((await api(daemon, 'DELETE', '/exports/disk?force=true')).status).toBe(204);
    expect((await reader.finish()).code).not.toBe(0);
  });

  it('never touches the image file', async () => {
    const before = sha256(image);
    expect((await api(daemon, 'DELETE', '/exports/disk?force=true')).status).toBe(204);
    expect(sha256(image)).toBe(before);
  });
});
