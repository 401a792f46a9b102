import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { servingPids } from '../testkit/proc.js';
import { trpcClient } from './helpers/trpc.js';

describe('live connections outlive the daemon', () => {
  const dataDirs: string[] = [];
  afterEach(() => killEverything(dataDirs.splice(0)));

  async function daemonWithExport(): Promise<{ daemon: RunningDaemon; image: string; images: string }> {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'root.img', 6 * 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'root', file: image })).status).toBe(201);
    return { daemon, image, images };
  }

  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    it(`keeps a reader reading through ${signal} and restart, and the new daemon adopts it`, async () => {
      const { daemon, image, images } = await daemonWithExport();
      const reader = startSlowReader(daemon.nbdUri('root'), path.join(images, 'stop-reader'));
      await reader.connected;
      await waitFor('the connection to be negotiated', async () =>
        (await trpcClient(daemon.url).connections.list.query({ live: true }))[0]?.exportName === 'root' ? true : undefined,
      );

      expect(await daemon.stop(signal)).toBe(signal === 'SIGTERM' ? 0 : null);
      await new Promise((resolve) => setTimeout(resolve, 300)); // the reader keeps reading with no daemon at all

      const restarted = await startDaemon({ dataDir: daemon.dataDir, nbdPort: daemon.nbdPort });
      const [adopted] = await trpcClient(restarted.url).connections.list.query({ live: true });
      expect(adopted).toMatchObject({ exportName: 'root', live: true, clientAddress: '127.0.0.1' });
      expect((await api(restarted, 'GET', '/exports/root')).json.connections).toBe(1);

      const finished = await reader.finish();
      expect(finished.code).toBe(0);
      expect(finished.sha256).toBe(sha256(image));
      await waitFor('the adopted connection to be seen closing', async () => {
        const [row] = await trpcClient(restarted.url).connections.list.query({ limit: 1 });
        return row?.live === false ? row : undefined;
      });
      // The restarted daemon serves new clients on the same port too.
      expect(sha256(await readExport(restarted.nbdUri('root')))).toBe(sha256(image));
    });
  }

  it('brings every export back exactly as it was', async () => {
    const { daemon, images } = await daemonWithExport();
    const rw = makeImage(images, 'scratch.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'scratch', file: rw, readonly: false })).status).toBe(201);
    const before = (await api(daemon, 'GET', '/exports')).json;
    expect(await daemon.stop()).toBe(0);

    const restarted = await startDaemon({ dataDir: daemon.dataDir });
    expect((await api(restarted, 'GET', '/exports')).json).toEqual(before);
    expect((await readExport(restarted.nbdUri('scratch'))).length).toBe(1024 * 1024);
  });

  it('closes, on restart, the records of connections that ended while it was down', async () => {
    const { daemon, images } = await daemonWithExport();
    const reader = startSlowReader(daemon.nbdUri('root'), path.join(images, 'stop-reader'));
    await reader.connected;
    await daemon.stop('SIGKILL');
    expect((await reader.finish()).code).toBe(0);
    // With no daemon to answer its postrun, the process stays a few seconds for an adopting daemon to count it.
    await waitFor('the serving process to end', () => (servingPids(daemon.dataDir).length === 0 ? true : undefined), 10_000);

    const restarted = await startDaemon({ dataDir: daemon.dataDir });
    const [row] = await trpcClient(restarted.url).connections.list.query({ limit: 1 });
    expect(row).toMatchObject({ live: false, outcome: 'closed', error: 'ended while nbdmux was not running' });
    expect((await api(restarted, 'GET', '/exports/root')).json.connections).toBe(0);
  });
});
