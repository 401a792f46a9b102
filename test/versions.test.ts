import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { killServingProcesses } from '../testkit/proc.js';

/** Versions end to end: the built daemon, real nbd-server, real NBD clients reading real bytes. */
describe('export versions', () => {
  let images: string;
  let daemon: RunningDaemon;
  const bytes: Record<'one' | 'two', string> = { one: '', two: '' };
  const files: Record<'one' | 'two', string> = { one: '', two: '' };

  beforeAll(async () => {
    images = fs.realpathSync(tempDir('nbdmux-versions-images-'));
    files.one = makeImage(images, 'lab-1.img', 1 << 20);
    files.two = makeImage(images, 'lab-2.img', 2 << 20);
    bytes.one = sha256(files.one);
    bytes.two = sha256(files.two);
    daemon = await startDaemon({ args: ['--image-root', images] });
  });

  afterAll(async () => {
    await daemon?.stop();
    killServingProcesses([daemon.dataDir]);
    fs.rmSync(images, { recursive: true, force: true });
    fs.rmSync(daemon.dataDir, { recursive: true, force: true });
  });

  const readSha = async () => sha256(await readExport(daemon.nbdUri('lab')));

  it('keeps a live reader on the version it attached while a new one becomes current, and rolls back for new readers', async () => {
    const created = await api(daemon, 'POST', '/exports', { name: 'lab', file: files.one });
    expect(created).toMatchObject({ status: 201, json: { name: 'lab', version: 1, file: files.one, size: 1 << 20 } });

    const reader = startSlowReader(daemon.nbdUri('lab'), path.join(daemon.dataDir, 'stop-reader'));
    await reader.connected;
    await waitFor('the reader to count on version 1', async () =>
      (await api(daemon, 'GET', '/exports/lab')).json.connections === 1 ? true : undefined,
    );

    const updated = await api(daemon, 'PUT', '/exports/lab', { file: files.two });
    expect(updated).toMatchObject({ status: 200, json: { name: 'lab', version: 2, file: files.two, size: 2 << 20, state: 'serving' } });
    expect(await readSha()).toBe(bytes.two);

    const versions = await api(daemon, 'GET', '/exports/lab/versions');
    expect(versions.status).toBe(200);
    expect(versions.json).toMatchObject([
      { version: 2, file: files.two, size: 2 << 20, current: true, connections: 0, state: 'ready', sha256: null },
      { version: 1, file: files.one, size: 1 << 20, current: false, connections: 1, state: 'ready' },
    ]);

    // Every byte the reader read after the switch, read whole at its end, is still version 1's.
    const finished = await reader.finish();
    expect(finished).toMatchObject({ code: 0, sha256: bytes.one });

    // A bare POST: no body needed to step back.
    const rolledBack = await fetch(`${daemon.url}/exports/lab/rollback`, { method: 'POST' });
    expect(rolledBack.status).toBe(200);
    expect(await rolledBack.json()).toMatchObject({ name: 'lab', version: 1, file: files.one });
    expect(await readSha()).toBe(bytes.one);

    expect(await api(daemon, 'POST', '/exports/lab/rollback', { version: 2 })).toMatchObject({ status: 200, json: { version: 2 } });
    expect(await readSha()).toBe(bytes.two);

    expect((await api(daemon, 'GET', '/exports')).json).toMatchObject([{ name: 'lab', version: 2 }]);
  });

  it('serves the current version again after a restart', async () => {
    await daemon.stop();
    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--image-root', images] });
    expect((await api(daemon, 'GET', '/exports/lab')).json).toMatchObject({ version: 2, fileChange: null });
    expect(await readSha()).toBe(bytes.two);
    // Version 1 was not pinned while not current: a rollback opens it again and checks it is the same file.
    expect(await api(daemon, 'POST', '/exports/lab/rollback', {})).toMatchObject({ status: 200, json: { version: 1 } });
    expect(await readSha()).toBe(bytes.one);
  });

  it('refuses a rollback to a version whose path now leads to another file, and changes nothing', async () => {
    // Version 2's path now holds other bytes: serving them as version 2 would be a lie.
    fs.rmSync(files.two);
    makeImage(images, 'lab-2.img', 2 << 20);
    const refused = await api(daemon, 'POST', '/exports/lab/rollback', { version: 2 });
    expect(refused).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT' } } });
    expect(refused.json.error.message).toContain(
      `version 2 of "lab" cannot be served again: its file ${files.two} now leads to another file`,
    );
    expect(await readSha()).toBe(bytes.one);
  });

  it.each<[what: string, method: string, route: string, body: unknown, status: number, message: RegExp]>([
    ['an unknown export', 'PUT', '/exports/nope', { file: '/tmp/x.img' }, 404, /no export named "nope"/],
    ['a name in the body', 'PUT', '/exports/lab', { name: 'other', file: '/tmp/x.img' }, 400, /^name: the export is named by the path/],
    ['a file outside the image roots', 'PUT', '/exports/lab', { file: '/etc/hostname' }, 400, /^file: .* is outside the image roots/],
    ['a version that never was', 'POST', '/exports/lab/rollback', { version: 9 }, 404, /export "lab" has no version 9/],
    ['the current version', 'POST', '/exports/lab/rollback', { version: 1 }, 409, /version 1 of "lab" is already current/],
    ['a version that is no number', 'POST', '/exports/lab/rollback', { version: 'one' }, 400, /^version: must be a version number/],
    ['versions of an unknown export', 'GET', '/exports/nope/versions', undefined, 404, /no export named "nope"/],
  ])('refuses %s with a precise error', async (_what, method, route, body, status, message) => {
    const reply = await api(daemon, method, route, body);
    expect(reply.status).toBe(status);
    expect(reply.json.error.message).toMatch(message);
  });
});
