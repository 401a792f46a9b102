import fs from 'node:fs';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultCmdline } from '../src/rules/cmdline.js';
import { exportVersionsTable } from '../src/db/schema.js';
import { testActor, testControlPlane, type TestControlPlane } from './helpers/context.js';
import { tempDir } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';

/** The registry's version rules on a migrated in-memory database and real image files. */
describe('the registry with versions', () => {
  let images: string;
  let plane: TestControlPlane;
  beforeEach(() => {
    images = fs.realpathSync(tempDir('nbdmux-version-images-'));
    plane = testControlPlane({ imageRoots: [images], keepVersions: 2 });
  });
  afterEach(() => {
    plane.close();
    fs.rmSync(images, { recursive: true, force: true });
  });

  const image = (name: string) => makeImage(images, name, 4096);
  const versionIds = () =>
    new Map(
      plane.db
        .select()
        .from(exportVersionsTable)
        .all()
        .map((row) => [row.version, row.id]),
    );
  /** What the last config handed to the data plane serves for `name`: its version, and the file behind its descriptor. */
  const served = (name: string) => {
    const exp = plane.dataPlane.applied.at(-1)!.find((e) => e.name === name)!;
    return { versionId: exp.versionId, file: fs.readlinkSync(`/proc/self/fd/${exp.fd}`) };
  };

  it("makes a new version current in one step with the config, and closes the former one's descriptor", async () => {
    const one = image('one.img');
    const two = image('two.img');
    await plane.registry.create({ name: 'lab', file: one, readonly: true, cow: false, allow: [], cmdline: defaultCmdline }, testActor);
    const firstFd = plane.dataPlane.applied.at(-1)![0]!.fd;

    const updated = await plane.registry.update({ name: 'lab', file: two }, testActor);
    expect(updated).toMatchObject({ name: 'lab', version: 2, file: two, state: 'serving' });
    expect(served('lab')).toEqual({ versionId: versionIds().get(2), file: two });
    // The configs no longer name version 1: its descriptor is no longer held (or now another file's).
    expect(fs.existsSync(`/proc/self/fd/${firstFd}`) ? fs.readlinkSync(`/proc/self/fd/${firstFd}`) : null).not.toBe(one);
    expect(plane.events.recent(1)[0]).toMatchObject({
      type: 'export.version-switched',
      exportName: 'lab',
      details: { version: 2, file: two, reason: 'update', actor: 'open' },
    });

    plane.registry.rollback({ name: 'lab' }, testActor);
    expect(served('lab')).toEqual({ versionId: versionIds().get(1), file: one });
    expect(plane.registry.versions('lab').map((v) => [v.version, v.current])).toEqual([
      [2, false],
      [1, true],
    ]);
  });

  it('refuses an update of an export removed while its file was judged, keeping nothing of it', async () => {
    await plane.registry.create(
      { name: 'lab', file: image('one.img'), readonly: true, cow: false, allow: [], cmdline: defaultCmdline },
      testActor,
    );
    const pending = plane.registry.update({ name: 'lab', file: image('two.img') }, testActor);
    plane.registry.delete({ name: 'lab', force: false }, testActor);
    await expect(pending).rejects.toThrow('no export named "lab"');
    expect([...versionIds().keys()]).toEqual([1]);
    expect(plane.dataPlane.applied.at(-1)).toEqual([]);
  });

  it('refuses a rollback with nothing earlier to go to', async () => {
    await plane.registry.create(
      { name: 'lab', file: image('one.img'), readonly: true, cow: false, allow: [], cmdline: defaultCmdline },
      testActor,
    );
    expect(() => plane.registry.rollback({ name: 'lab' }, testActor)).toThrow('export "lab" has no earlier version that can be served');
  });

  it('deletes imported store files once no version needs them: not current, not among the newest kept, not attached', async () => {
    // Imports are what put files in the store; here each file is registered by path, then marked
    // as the importer's (`stored`), which is all the collector looks at.
    const markStored = (version: number) =>
      plane.db
        .update(exportVersionsTable)
        .set({ stored: true })
        .where(eq(exportVersionsTable.id, versionIds().get(version)!))
        .run();
    const files = ['v1.img', 'v2.img', 'v3.img', 'v4.img'].map(image);
    const registered = image('by-path.img');
    await plane.registry.create(
      { name: 'keep', file: registered, readonly: true, cow: false, allow: [], cmdline: defaultCmdline },
      testActor,
    );
    await plane.registry.create(
      { name: 'lab', file: files[0]!, readonly: true, cow: false, allow: [], cmdline: defaultCmdline },
      testActor,
    );
    markStored(1);
    // A machine still runs on version 1.
    plane.dataPlane.liveByVersion.set(versionIds().get(1)!, 1);
    for (const [index, file] of files.slice(1).entries()) {
      await plane.registry.update({ name: 'lab', file }, testActor);
      markStored(index + 2);
    }
    await plane.registry.update({ name: 'keep', file: image('by-path-2.img') }, testActor);
    await plane.registry.update({ name: 'keep', file: image('by-path-3.img') }, testActor);

    // Kept: v4 (current), v3 (newest 2), v1 (attached). Deleted: v2. Never: the file registered by path.
    expect(files.map((file) => fs.existsSync(file))).toEqual([true, false, true, true]);
    expect(fs.existsSync(registered)).toBe(true);
    expect(plane.registry.versions('lab').map((v) => [v.version, v.state, v.connections])).toEqual([
      [4, 'ready', 0],
      [3, 'ready', 0],
      [2, 'deleted', 0],
      [1, 'ready', 1],
    ]);
    expect(() => plane.registry.rollback({ name: 'lab', version: 2 }, testActor)).toThrow(
      'version 2 of "lab" is deleted (its imported file was removed)',
    );

    // Its last connection ends: at the next collection (the daemon runs one every few seconds), version 1's file goes too.
    plane.dataPlane.liveByVersion.clear();
    plane.registry.collectGarbage();
    expect(files.map((file) => fs.existsSync(file))).toEqual([false, false, true, true]);

    // A removed export keeps no history: its stored files go once nothing is attached.
    plane.registry.delete({ name: 'lab', force: false }, testActor);
    expect(files.map((file) => fs.existsSync(file))).toEqual([false, false, false, false]);
    expect(fs.existsSync(registered)).toBe(true);
  });
});
