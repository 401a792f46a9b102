import fs from 'node:fs';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { exportVersionsTable } from '../src/db/schema.js';
import { refusal, testControlPlane, type TestControlPlane } from './helpers/context.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, startSlowReader } from '../testkit/nbd.js';

/**
 * One file, one writer: a read-write export is refused beside any other export of its file (and
 * any export beside it), judged on the file itself (device and inode), never on the path alone.
 */

describe('a second writer of one file, through createCaller', () => {
  let images: string;
  let shared: string;
  let other: string;
  let plane: TestControlPlane;
  beforeAll(() => {
    images = fs.realpathSync(tempDir('nbdmux-one-writer-'));
    shared = makeImage(images, 'shared.img', 8192);
    other = makeImage(images, 'other.img', 8192);
    // Another name for the same inode: a path comparison would let it through.
    fs.linkSync(shared, path.join(images, 'shared-link.img'));
  });
  afterAll(() => fs.rmSync(images, { recursive: true, force: true }));
  beforeEach(() => {
    plane = testControlPlane({ imageRoots: [images] });
  });
  afterEach(() => plane.close());

  const create = (name: string, file: string, mode: { readonly?: boolean; cow?: boolean } = {}) =>
    plane.caller.exports.create({ name, file, ...mode });
  const link = () => path.join(images, 'shared-link.img');

  it('refuses a read-write export of a file another export serves, and any export of a file a read-write one writes, with 409 naming the holder', async () => {
    await create('reader', shared);
    const applied = plane.dataPlane.applied.length;

    const writer = await refusal(() => create('writer', link(), { readonly: false }));
    expect(writer.status).toBe(409);
    expect(writer.error).toEqual({
      code: 'CONFLICT',
      message: `${link()} is served by the export "reader": a read-write export must be its file's only export; remove "reader" first, or register a copy of the file`,
    });
    // Nothing of the refused export is left, and the data plane was never asked.
    expect((await plane.caller.exports.list()).map((e) => e.name)).toEqual(['reader']);
    expect(plane.dataPlane.applied).toHaveLength(applied);

    await plane.caller.exports.delete({ name: 'reader' });
    await create('writer', shared, { readonly: false });
    for (const mode of [{}, { cow: true }, { readonly: false }]) {
      const refused = await refusal(() => create('second', link(), mode));
      expect([refused.status, refused.error.message]).toEqual([
        409,
        `${link()} is written by the read-write export "writer": no other export may serve it meanwhile; remove "writer" first, or register a copy of the file`,
      ]);
    }
  });

  it('lets readers share a file: read-only and copy-on-write exports never write it', async () => {
    await create('one', shared);
    await create('two', link());
    await create('three', shared, { cow: true });
    expect((await plane.caller.exports.list()).map((e) => [e.name, e.file])).toEqual([
      ['one', shared],
      ['three', shared],
      ['two', link()],
    ]);
  });

  it('refuses an update that points an export at a file with a writer, or a read-write export at a shared file', async () => {
    await create('writer', shared, { readonly: false });
    await create('reader', other);
    const onto = await refusal(() => plane.caller.exports.update({ name: 'reader', file: link() }));
    expect(onto.status).toBe(409);
    expect(onto.error.message).toMatch(/is written by the read-write export "writer"/);

    await plane.caller.exports.delete({ name: 'writer' });
    await create('reader-of-shared', shared);
    await create('scratch', makeImage(images, 'scratch.img', 8192), { readonly: false });
    const writerOnto = await refusal(() => plane.caller.exports.update({ name: 'scratch', file: shared }));
    expect(writerOnto.status).toBe(409);
    expect(writerOnto.error.message).toMatch(
      /is served by the export "reader-of-shared": a read-write export must be its file's only export/,
    );
    // Each export still serves its one version.
    expect((await plane.caller.exports.versions({ name: 'scratch' })).map((v) => v.version)).toEqual([1]);
    expect((await plane.caller.exports.versions({ name: 'reader' })).map((v) => v.version)).toEqual([1]);
  });

  it('refuses a rollback of a read-write export to a file another export serves since', async () => {
    const created = await create('writer', shared, { readonly: false });
    expect(created.version).toBe(1);
    await plane.caller.exports.update({ name: 'writer', file: makeImage(images, 'next.img', 8192) });
    // Its version 1 serves no one now: the file is free for a reader.
    await create('reader', shared);
    const refused = await refusal(() => plane.caller.exports.rollback({ name: 'writer' }));
    expect(refused.status).toBe(409);
    expect(refused.error.message).toMatch(/is served by the export "reader"/);
    expect((await plane.caller.exports.get({ name: 'writer' })).version).toBe(2);
  });

  it('counts what live connections still use: a removed export draining, an older version its clients keep', async () => {
    const writer = await create('writer', shared, { readonly: false });
    // The recording data plane stands in for live NBD connections here; the daemon test below has real ones.
    const firstVersion = plane.db
      .select({ id: exportVersionsTable.id })
      .from(exportVersionsTable)
      .where(eq(exportVersionsTable.exportId, writer.id))
      .get()!;
    plane.dataPlane.liveByVersion.set(firstVersion.id, 1);
    await plane.caller.exports.update({ name: 'writer', file: makeImage(images, 'newer.img', 8192) });
    const kept = await refusal(() => create('reader', shared));
    expect(kept.error.message).toBe(
      `${shared} is written by the read-write export "writer": no other export may serve it meanwhile; remove "writer" first, or register a copy of the file`,
    );

    await plane.caller.exports.delete({ name: 'writer' });
    const draining = await refusal(() => create('reader', shared));
    expect(draining.error.message).toBe(
      `${shared} is written by the read-write export "writer" (removed; its live connections still use the file): no other export may serve it meanwhile; wait for them to end, or register a copy of the file`,
    );

    plane.dataPlane.liveByVersion.clear();
    expect((await create('reader', shared)).state).toBe('serving');
  });

  it('lets exactly one of two simultaneous writers of one file win', async () => {
    const outcomes = await Promise.allSettled([
      create('first', shared, { readonly: false }),
      create('second', link(), { readonly: false }),
    ]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect((await plane.caller.exports.list()).map((e) => e.readonly)).toEqual([false]);
  });
});

describe('a second writer of one file, over REST on a real daemon', () => {
  let daemon: RunningDaemon;
  let images: string;
  beforeAll(async () => {
    images = fs.realpathSync(tempDir('nbdmux-one-writer-rest-'));
    daemon = await startDaemon({ args: ['--image-root', images] });
  });
  afterAll(() => {
    killEverything([daemon.dataDir]);
    fs.rmSync(images, { recursive: true, force: true });
  });

  it("answers 409 naming the export that holds the file, on POST and on PUT, and while the holder's live connections drain", async () => {
    const shared = makeImage(images, 'shared.img', 1024 * 1024);
    const link = path.join(images, 'shared-link.img');
    fs.linkSync(shared, link);
    expect((await api(daemon, 'POST', '/exports', { name: 'writer', file: shared, readonly: false })).status).toBe(201);

    const post = await api(daemon, 'POST', '/exports', { name: 'reader', file: link });
    expect(post.status).toBe(409);
    expect(post.json.error).toEqual({
      code: 'CONFLICT',
      message: `${link} is written by the read-write export "writer": no other export may serve it meanwhile; remove "writer" first, or register a copy of the file`,
    });

    expect(
      (await api(daemon, 'POST', '/exports', { name: 'elsewhere', file: makeImage(images, 'elsewhere.img', 1024 * 1024) })).status,
    ).toBe(201);
    const put = await api(daemon, 'PUT', '/exports/elsewhere', { file: link });
    expect(put.status).toBe(409);
    expect(put.json.error.message).toMatch(/is written by the read-write export "writer"/);

    // Removed, the writer still writes through the connection it has: the file stays taken until that ends.
    const stop = path.join(images, 'stop-reader');
    const reader = startSlowReader(daemon.nbdUri('writer'), stop);
    await reader.connected;
    expect((await api(daemon, 'DELETE', '/exports/writer')).status).toBe(204);
    const draining = await api(daemon, 'POST', '/exports', { name: 'reader', file: shared });
    expect(draining.status).toBe(409);
    expect(draining.json.error.message).toMatch(/"writer" \(removed; its live connections still use the file\).*wait for them to end/);

    expect((await reader.finish()).code).toBe(0);
    // A draining export is listed until its last connection is seen closing.
    await waitFor('the drained export to go', async () =>
      (await api(daemon, 'GET', '/exports')).json.some((e: { name: string }) => e.name === 'writer') ? undefined : true,
    );
    const freed = await api(daemon, 'POST', '/exports', { name: 'reader', file: shared });
    expect(freed.status, freed.text).toBe(201);
    const writerBeside = await api(daemon, 'POST', '/exports', { name: 'writer-2', file: link, readonly: false });
    expect([writerBeside.status, writerBeside.json.error.message]).toEqual([
      409,
      `${link} is served by the export "reader": a read-write export must be its file's only export; remove "reader" first, or register a copy of the file`,
    ]);
  });
});
