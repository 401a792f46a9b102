import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, nbdsh, readExport, sha256 } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';
import { runText } from '../testkit/process.js';

const mib = 1024 * 1024;
const operatorCli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));

interface FileChangedEvent {
  type: string;
  exportName: string | null;
  details: { pathLeadsTo: string; serving: string };
}

async function fileChangedEvents(daemon: RunningDaemon, name: string): Promise<FileChangedEvent[]> {
  const { json } = await api(daemon, 'GET', '/trpc/events.list');
  return (json.result.data as FileChangedEvent[]).filter((e) => e.type === 'export.file-changed' && e.exportName === name);
}

/** Waits for the daemon's periodic check to notice, then returns every file-changed event of `name`. */
function eventuallyFileChanged(daemon: RunningDaemon, name: string, count = 1): Promise<FileChangedEvent[]> {
  return waitFor(`an export.file-changed event for ${name}`, async () => {
    const events = await fileChangedEvents(daemon, name);
    return events.length >= count ? events : undefined;
  });
}

/**
 * What an export serves is the file judged at registration (same inode), whatever its path is
 * made to lead to later: the file swapped for a symlink, a directory on the way swapped for one,
 * the file deleted. The swapped-in targets lie outside the image root.
 */
describe('a path swapped after registration never leads an export outside the image roots', () => {
  let daemon: RunningDaemon;
  let images: string;
  let outside: string;

  beforeAll(async () => {
    images = fs.realpathSync(tempDir('nbdmux-images-'));
    outside = fs.realpathSync(tempDir('nbdmux-outside-'));
    daemon = await startDaemon({ args: ['--image-root', images] });
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('keeps serving the registered bytes when the file is replaced by a symlink to a file outside, and says so', async () => {
    const image = makeImage(images, 'a.img', mib);
    const registered = sha256(image);
    const secret = makeImage(outside, 'secret', mib);
    expect((await api(daemon, 'POST', '/exports', { name: 'a', file: image })).status).toBe(201);

    await run('ln', ['-sf', secret, image]);
    expect(sha256(await readExport(daemon.nbdUri('a')))).toBe(registered);

    const [event] = await eventuallyFileChanged(daemon, 'a');
    expect(event!.details).toMatchObject({ pathLeadsTo: 'another file', serving: 'the registered file' });
    const { json: view } = await api(daemon, 'GET', '/exports/a');
    expect(view.fileChange).toMatchObject({ pathLeadsTo: 'another file', serving: 'the registered file' });
    // Once per change: later checks of the same swapped path add nothing.
    await new Promise((resolve) => setTimeout(resolve, 3500));
    expect(await fileChangedEvents(daemon, 'a')).toHaveLength(1);
  });

  it('keeps serving the registered bytes when a directory on the way is swapped for a symlink to one outside', async () => {
    fs.mkdirSync(path.join(images, 'sub'));
    const image = makeImage(path.join(images, 'sub'), 'b.img', mib);
    const registered = sha256(image);
    fs.mkdirSync(path.join(outside, 'sub'));
    makeImage(path.join(outside, 'sub'), 'b.img', mib);
    expect((await api(daemon, 'POST', '/exports', { name: 'b', file: image })).status).toBe(201);

    fs.renameSync(path.join(images, 'sub'), path.join(images, 'sub.old'));
    fs.symlinkSync(path.join(outside, 'sub'), path.join(images, 'sub'));
    expect(sha256(await readExport(daemon.nbdUri('b')))).toBe(registered);
    const [event] = await eventuallyFileChanged(daemon, 'b');
    expect(event!.details).toMatchObject({ pathLeadsTo: 'another file', serving: 'the registered file' });
  });

  it('writes a read-write export to the registered file, never to the file outside its swapped path leads to', async () => {
    const image = makeImage(images, 'rw.img', mib);
    // A second name for the registered inode, to read it back once its own path is taken.
    const kept = path.join(images, 'rw.kept');
    fs.linkSync(image, kept);
    const secret = makeImage(outside, 'rw-secret', mib);
    const secretBefore = sha256(secret);
    expect((await api(daemon, 'POST', '/exports', { name: 'rw', file: image, readonly: false })).status).toBe(201);

    await run('ln', ['-sf', secret, image]);
    const write = await nbdsh(['-u', daemon.nbdUri('rw'), '-c', 'h.pwrite(b"W" * 4096, 0)']);
    expect(write.code, write.stderr).toBe(0);

    expect(sha256(secret)).toBe(secretBefore);
    expect(fs.readFileSync(kept).subarray(0, 4096).equals(Buffer.alloc(4096, 'W'))).toBe(true);
  });

  it('keeps serving a deleted file from the descriptor it holds, and says the path leads to nothing', async () => {
    const image = makeImage(images, 'gone.img', mib);
    const registered = sha256(image);
    expect((await api(daemon, 'POST', '/exports', { name: 'gone', file: image })).status).toBe(201);

    fs.rmSync(image);
    expect(sha256(await readExport(daemon.nbdUri('gone')))).toBe(registered);
    const [event] = await eventuallyFileChanged(daemon, 'gone');
    expect(event!.details).toMatchObject({ pathLeadsTo: 'nothing', serving: 'the registered file' });
  });

  it('closes the descriptor of a removed export', async () => {
    const image = makeImage(images, 'removed.img', mib);
    expect((await api(daemon, 'POST', '/exports', { name: 'removed', file: image })).status).toBe(201);
    const heldBy = () =>
      fs.readdirSync(`/proc/${daemon.child.pid}/fd`).filter((fd) => fs.readlinkSync(`/proc/${daemon.child.pid}/fd/${fd}`) === image);
    expect(heldBy()).toHaveLength(1);
    expect((await api(daemon, 'DELETE', '/exports/removed')).status).toBe(204);
    expect(heldBy()).toHaveLength(0);
  });
});

describe('a path swapped while the daemon is down', () => {
  let daemon: RunningDaemon;
  afterAll(() => killEverything([daemon.dataDir]));

  it('serves that export as nothing after the restart, with an event and the reason in the API, and the others as before', async () => {
    const images = fs.realpathSync(tempDir('nbdmux-images-'));
    const outside = fs.realpathSync(tempDir('nbdmux-outside-'));
    const swapped = makeImage(images, 'swapped.img', mib);
    const intact = makeImage(images, 'intact.img', mib);
    const secret = makeImage(outside, 'secret', mib);
    const args = ['--image-root', images];
    daemon = await startDaemon({ args });
    expect((await api(daemon, 'POST', '/exports', { name: 'swapped', file: swapped })).status).toBe(201);
    expect((await api(daemon, 'POST', '/exports', { name: 'intact', file: intact })).status).toBe(201);
    expect(await daemon.stop()).toBe(0);

    await run('ln', ['-sf', secret, swapped]);
    daemon = await startDaemon({ dataDir: daemon.dataDir, args });

    const refused = await run('nbdcopy', [daemon.nbdUri('swapped'), '-']);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout.length).toBe(0);
    expect(sha256(await readExport(daemon.nbdUri('intact')))).toBe(sha256(intact));

    const events = await fileChangedEvents(daemon, 'swapped');
    expect(events.map((e) => e.details)).toEqual([expect.objectContaining({ pathLeadsTo: 'another file', serving: 'nothing' })]);
    const { json: exports } = await api(daemon, 'GET', '/exports');
    const byName = Object.fromEntries((exports as Array<{ name: string; fileChange: unknown }>).map((e) => [e.name, e.fileChange]));
    expect(byName).toEqual({ intact: null, swapped: expect.objectContaining({ pathLeadsTo: 'another file', serving: 'nothing' }) });
    const shown = await runText(process.execPath, [operatorCli, 'show', 'swapped'], { env: { ...process.env, NBDMUX_URL: daemon.url } });
    expect(shown.stdout).toMatch(/^file changed +.*: the path leads to another file; serving nothing$/m);
  });
});
