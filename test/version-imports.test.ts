import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeTestImage, pack, serveFile, serveStalled, sha256Of, startImageServer, type ImageServer } from '../testkit/image-fixtures.js';
import { listExports, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { killServingProcesses } from '../testkit/proc.js';

/** Imports end to end: a local HTTP server, the built daemon, real nbd-server and NBD clients. */
describe('exports imported from a URL', () => {
  let work: string;
  let server: ImageServer;
  let daemon: RunningDaemon;
  const raw: Record<'one' | 'two', string> = { one: '', two: '' };
  let oneXz: string;

  beforeAll(async () => {
    work = fs.realpathSync(tempDir('nbdmux-imports-'));
    raw.one = makeTestImage(work, 'one.img', 3);
    raw.two = makeTestImage(work, 'two.img', 4);
    oneXz = await pack(raw.one, 'xz');
    const twoQcow2Xz = await pack(raw.two, 'qcow2.xz');
    server = await startImageServer({
      '/one.img.xz': serveFile(oneXz),
      '/two.qcow2.xz': serveFile(twoQcow2Xz, { contentLength: false }),
      '/stalled.img': serveStalled(raw.one, 64 * 1024),
    });
    // --keep-versions 1: an imported version's file goes as soon as it is neither current nor attached.
    daemon = await startDaemon({ args: ['--image-root', work, '--keep-versions', '1'] });
  });

  afterAll(async () => {
    await daemon?.stop();
    killServingProcesses([daemon.dataDir]);
    await server?.close();
    fs.rmSync(work, { recursive: true, force: true });
    fs.rmSync(daemon.dataDir, { recursive: true, force: true });
  });

  const exportOf = async (name: string) => (await api(daemon, 'GET', `/exports/${name}`)).json;
  const untilState = (name: string, state: string, version?: number) =>
    waitFor(
      `${name} to be ${state}`,
      async () => {
        const exp = await exportOf(name);
        return exp.state === state && (version === undefined || exp.version === version) ? exp : undefined;
      },
      60_000,
      100,
    );
  const storeEntries = () => fs.readdirSync(path.join(daemon.dataDir, 'images'));
  /** The newest events, oldest first. */
  const recentEvents = async (
    limit: number,
  ): Promise<Array<{ type: string; exportName: string | null; details: Record<string, unknown> }>> => {
    const reply = await fetch(`${daemon.url}/trpc/events.list?input=${encodeURIComponent(JSON.stringify({ limit }))}`);
    return ((await reply.json()) as { result: { data: [] } }).result.data.reverse();
  };

  it('imports into a new export, serves the original bytes once ready, and switches atomically to an imported version 2', async () => {
    const accepted = await api(daemon, 'POST', '/exports', { name: 'net', url: server.url('/one.img.xz'), sha256: sha256Of(oneXz) });
    expect(accepted).toMatchObject({
      status: 202,
      json: {
        name: 'net',
        state: 'importing',
        version: null,
        file: null,
        import: { version: 1, url: server.url('/one.img.xz'), error: null },
      },
    });

    const served = await untilState('net', 'serving');
    expect(served).toMatchObject({ version: 1, size: 3 << 20, sha256: sha256Of(oneXz), import: null });
    expect(sha256(await readExport(daemon.nbdUri('net')))).toBe(sha256Of(raw.one));

    const update = await api(daemon, 'PUT', '/exports/net', { url: server.url('/two.qcow2.xz') });
    // Version 1 serves until version 2 is ready.
    expect(update).toMatchObject({ status: 202, json: { state: 'serving', version: 1, import: { version: 2 } } });
    await untilState('net', 'serving', 2);
    expect(sha256(await readExport(daemon.nbdUri('net')))).toBe(sha256Of(raw.two));

    const versions = (await api(daemon, 'GET', '/exports/net/versions')).json;
    expect(versions).toMatchObject([
      { version: 2, current: true, state: 'ready', size: 4 << 20 },
      // Imported, not current, beyond --keep-versions 1, attached by nobody: its file is gone.
      { version: 1, current: false, state: 'deleted' },
    ]);
    expect(fs.existsSync(versions[1].file)).toBe(false);
    expect(storeEntries()).toEqual([path.basename(versions[0].file)]);
    const types = (await recentEvents(50)).map((event) => event.type);
    expect(types.filter((type) => type.startsWith('import.') || type === 'export.version-switched')).toEqual([
      'import.started',
      'import.done',
      'export.version-switched',
      'import.started',
      'import.done',
      'export.version-switched',
    ]);
  });

  it('keeps an importing export from every NBD client, and cancels its import on DELETE, leaving no file', async () => {
    expect(await api(daemon, 'POST', '/exports', { name: 'stall', url: server.url('/stalled.img') })).toMatchObject({ status: 202 });
    // The server sent its head and 64 KiB, then nothing: they are landing in a partial file.
    await waitFor('a partial file', () => (storeEntries().some((name) => name.startsWith('.partial-')) ? true : undefined));
    expect(await exportOf('stall')).toMatchObject({
      state: 'importing',
      version: null,
      file: null,
      import: { stage: 'downloading', error: null },
    });
    expect(await listExports(daemon.nbdUri())).not.toContain('stall');

    expect((await api(daemon, 'DELETE', '/exports/stall')).status).toBe(204);
    await waitFor('the partial file to go', () => (storeEntries().some((name) => name.startsWith('.partial-')) ? undefined : true));
    expect((await recentEvents(5)).find((event) => event.type === 'import.cancelled')).toMatchObject({
      exportName: 'stall',
      details: { version: 1 },
    });
  });

  it('fails an import whose sha256 does not match, and keeps the current version serving when an update fails', async () => {
    const wrong = 'ab'.repeat(32);
    expect(await api(daemon, 'PUT', '/exports/net', { url: server.url('/one.img.xz'), sha256: wrong })).toMatchObject({ status: 202 });
    const failed = await waitFor('the update to fail', async () => {
      const exp = await exportOf('net');
      return exp.import?.error ? exp : undefined;
    });
    expect(failed).toMatchObject({ state: 'serving', version: 2, import: { version: 3 } });
    expect(failed.import.error).toMatch(/sha256/);
    expect(sha256(await readExport(daemon.nbdUri('net')))).toBe(sha256Of(raw.two));

    expect(await api(daemon, 'POST', '/exports', { name: 'bad', url: server.url('/missing.img') })).toMatchObject({ status: 202 });
    const missing = await untilState('bad', 'failed');
    expect(missing.import.error).toMatch(/404/);

    // The list reads every export's versions at once: it must show each as its own GET does.
    const listed = (await api(daemon, 'GET', '/exports')).json as { name: string }[];
    for (const name of ['net', 'bad']) expect(listed.find((exp) => exp.name === name)).toEqual(await exportOf(name));
  });

  it('marks an import a restart interrupted as failed, with the reason, and leaves no partial file', async () => {
    expect(await api(daemon, 'POST', '/exports', { name: 'cut', url: server.url('/stalled.img') })).toMatchObject({ status: 202 });
    await waitFor('a partial file', () => (storeEntries().some((name) => name.startsWith('.partial-')) ? true : undefined));
    // SIGKILL: no clean shutdown could have tidied anything.
    await daemon.stop('SIGKILL');
    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--image-root', work, '--keep-versions', '1'] });
    const cut = await exportOf('cut');
    expect(cut).toMatchObject({ state: 'failed', import: { version: 1 } });
    expect(cut.import.error).toMatch(/^nbdmux stopped during the import/);
    expect(storeEntries().filter((name) => name.startsWith('.partial-'))).toEqual([]);
    // What was served before still is.
    expect(sha256(await readExport(daemon.nbdUri('net')))).toBe(sha256Of(raw.two));
  });

  it('keeps an imported file while a connection still reads its version, and deletes it once that connection ends', async () => {
    const before = (await api(daemon, 'GET', '/exports/net/versions')).json.find((v: { current: boolean }) => v.current);
    const reader = startSlowReader(daemon.nbdUri('net'), path.join(work, 'stop-gc-reader'));
    await reader.connected;
    expect(await api(daemon, 'PUT', '/exports/net', { url: server.url('/one.img.xz') })).toMatchObject({ status: 202 });
    const after = await waitFor(
      'the new version to serve',
      async () => {
        const exp = await exportOf('net');
        return exp.version > before.version && exp.state === 'serving' ? exp : undefined;
      },
      60_000,
      100,
    );
    // Neither current nor within --keep-versions 1, but attached: kept.
    const attached = (await api(daemon, 'GET', '/exports/net/versions')).json.find(
      (v: { version: number }) => v.version === before.version,
    );
    expect(attached).toMatchObject({ state: 'ready', connections: 1, current: false });
    expect(fs.existsSync(before.file)).toBe(true);

    expect(await reader.finish()).toMatchObject({ code: 0, sha256: sha256Of(raw.two) });
    await waitFor('the file of the version no one reads to go', () => (fs.existsSync(before.file) ? undefined : true), 15_000, 200);
    expect(
      (await api(daemon, 'GET', '/exports/net/versions')).json.find((v: { version: number }) => v.version === before.version),
    ).toMatchObject({ state: 'deleted', connections: 0 });
    expect(sha256(await readExport(daemon.nbdUri('net')))).toBe(sha256Of(raw.one));
    expect(after.version).toBeGreaterThan(before.version);
  });

  it.each<[what: string, body: unknown, message: RegExp]>([
    ['both file and url', { name: 'x', file: '/tmp/x.img', url: 'http://127.0.0.1/x.img' }, /^file: give either "file" .* or "url"/],
    ['neither', { name: 'x' }, /^file: give either/],
    ['a url of another scheme', { name: 'x', url: 'ftp://127.0.0.1/x.img' }, /^url: must be an http:\/\/, https:\/\/ or file:\/\/ URL/],
    ['a sha256 without a url', { name: 'x', file: '/tmp/x.img', sha256: 'ab'.repeat(32) }, /^sha256: is checked over downloaded bytes/],
    ['a sha256 of the wrong length', { name: 'x', url: 'http://127.0.0.1/x.img', sha256: 'abc' }, /^sha256: must be 64 hexadecimal digits/],
  ])('refuses %s with a precise 400', async (_what, body, message) => {
    const reply = await api(daemon, 'POST', '/exports', body);
    expect(reply.status).toBe(400);
    expect(reply.json.error.message).toMatch(message);
  });
});
