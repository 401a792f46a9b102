import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor } from '../testkit/daemon.js';
import { listExports, makeImage, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

describe('under load', () => {
  const dataDirs: string[] = [];
  afterEach(() => killEverything(dataDirs.splice(0)));

  it('serves a burst of 30 simultaneous clients without refusing any, each the exact bytes', async () => {
    // All 30 come from 127.0.0.1 at once; the machines of a real boot storm each have an address.
    const daemon = await startDaemon({ args: ['--nbd-max-pending-per-client', '30'] });
    dataDirs.push(daemon.dataDir);
    const image = makeImage(tempDir('nbdmux-images-'), 'boot.img', 2 * 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'boot', file: image })).status).toBe(201);

    const started = Date.now();
    const reads = await Promise.all(Array.from({ length: 30 }, () => readExport(daemon.nbdUri('boot'))));
    const elapsed = Date.now() - started;
    const expected = sha256(image);
    expect(reads.map((bytes) => sha256(bytes))).toEqual(Array(30).fill(expected));
    const served = await trpcClient(daemon.url).connections.list.query({ limit: 30 });
    expect(served.filter((c) => c.exportName === 'boot')).toHaveLength(30);
    console.log(`burst of 30 clients served in ${elapsed} ms`);
  });

  it('closes connections beyond --max-connections cleanly and records the refusal', async () => {
    const daemon = await startDaemon({ args: ['--max-connections', '2'] });
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'boot.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'boot', file: image })).status).toBe(201);

    const readers = [0, 1].map((i) => startSlowReader(daemon.nbdUri('boot'), path.join(images, `stop-${i}`)));
    await Promise.all(readers.map((r) => r.connected));
    const refused = await run('nbdinfo', [daemon.nbdUri('boot')], { timeoutMs: 10_000 });
    expect(refused.code).not.toBe(0);
    const [refusal] = await trpcClient(daemon.url).events.list.query({ limit: 1 });
    expect(refusal).toMatchObject({ type: 'connection.refused', details: { reason: 'the connection limit (2) is reached' } });

    for (const reader of readers) expect((await reader.finish()).sha256).toBe(sha256(image));
    await waitFor('both slots to free up', async () =>
      (await api(daemon, 'GET', '/exports/boot')).json.connections === 0 ? true : undefined,
    );
    expect((await run('nbdinfo', [daemon.nbdUri('boot')])).code).toBe(0);
  });

  it('keeps the database, the nbd-server config and GET /exports in agreement after 100 parallel creates and deletes', async () => {
    // 100 requests at once from one address: above the default per-client HTTP connection cap.
    const daemon = await startDaemon({ args: ['--max-http-per-client', '128'] });
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'shared.img', 64 * 1024);
    const names = Array.from({ length: 50 }, (_, i) => `vm-${i}`);

    // Every name is created twice (one wins, one gets 409) and every other name is deleted as it is created.
    const requests = names.flatMap((name, i) => [
      api(daemon, 'POST', '/exports', { name, file: image }),
      i % 2 === 0 ? api(daemon, 'DELETE', `/exports/${name}`) : api(daemon, 'POST', '/exports', { name, file: image }),
    ]);
    const statuses = (await Promise.all(requests)).map((r) => r.status);
    expect(statuses.every((s) => [201, 204, 404, 409].includes(s))).toBe(true);
    expect(statuses.filter((s) => s === 201).length).toBeGreaterThanOrEqual(50);

    const listed = ((await api(daemon, 'GET', '/exports')).json as Array<{ name: string }>).map((e) => e.name).sort();
    const configured = [...fs.readFileSync(path.join(daemon.dataDir, 'nbd-server.conf'), 'utf8').matchAll(/^\[([^\]]+)\]$/gm)]
      .map((m) => m[1]!)
      .filter((name) => name !== 'generic' && !name.startsWith('__'))
      .sort();
    const overNbd = (await listExports(daemon.nbdUri())).sort();
    const viaTrpc = (await trpcClient(daemon.url).exports.list.query()).map((e) => e.name).sort();

    expect(configured).toEqual(listed);
    expect(overNbd).toEqual(listed);
    expect(viaTrpc).toEqual(listed);
    // Odd names were only ever created; even names were created and maybe deleted.
    expect(listed).toEqual(expect.arrayContaining(names.filter((_, i) => i % 2 === 1)));
  });
});
