import fs from 'node:fs';
import path from 'node:path';
import { TRPCError } from '@trpc/server';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { defaultCmdline } from '../src/rules/cmdline.js';
import { describeError } from '../src/errors.js';
import { testActor, testControlPlane, type TestControlPlane } from './helpers/context.js';
import { tempDir } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';

/** The registry's own rules, on a migrated in-memory database and real image files: milliseconds each. */

/** The error a call threw, which must be a TRPCError. */
async function refusal(call: () => unknown): Promise<TRPCError> {
  const error = await Promise.resolve()
    .then(call)
    .then(
      () => null,
      (err: unknown) => err,
    );
  expect(error).toBeInstanceOf(TRPCError);
  return error as TRPCError;
}

describe('the export registry', () => {
  let images: string;
  let outside: string;
  let image: string;
  let plane: TestControlPlane;
  beforeAll(() => {
    images = fs.realpathSync(tempDir('nbdmux-images-'));
    outside = fs.realpathSync(tempDir('nbdmux-outside-'));
    image = makeImage(images, 'disk.img', 64 * 1024);
    makeImage(outside, 'outside.img', 4096);
    fs.symlinkSync(path.join(outside, 'outside.img'), path.join(images, 'link-out.img'));
    fs.symlinkSync(image, path.join(images, 'link-in.img'));
  });
  afterAll(() => {
    fs.rmSync(images, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  });
  beforeEach(() => {
    plane = testControlPlane({ imageRoots: [images] });
  });
  afterEach(() => plane.close());

  const create = (name: string, file = image, extra: { readonly?: boolean; cow?: boolean; allow?: string[] } = {}) =>
    plane.registry.create(
      { name, file, readonly: extra.readonly ?? true, cow: extra.cow ?? false, allow: extra.allow ?? [], cmdline: defaultCmdline },
      testActor,
    );

  it('creates an export and hands the data plane the new served list in the same step as the commit', async () => {
    const created = await create('alpha', image, { allow: ['10.1.0.0/16'] });
    expect(created).toMatchObject({
      name: 'alpha',
      file: image,
      readonly: true,
      cow: false,
      allow: ['10.1.0.0/16'],
      size: 64 * 1024,
      removedAt: null,
      state: 'serving',
      connections: 0,
    });
    expect(plane.dataPlane.applied).toEqual([
      [
        {
          id: created.id,
          versionId: expect.any(Number),
          name: 'alpha',
          file: image,
          readonly: true,
          cow: false,
          allow: ['10.1.0.0/16'],
          fd: expect.any(Number),
        },
      ],
    ]);
    // Served from the descriptor opened when the file was judged, not by its name.
    expect(fs.readlinkSync(`/proc/self/fd/${plane.dataPlane.applied[0]![0]!.fd}`)).toBe(image);

    await create('beta');
    // The whole list every time, sorted by name: nbd-server's config is rewritten from it.
    expect(plane.dataPlane.applied.at(-1)!.map((e) => e.name)).toEqual(['alpha', 'beta']);
  });

  it('commits nothing and records nothing when the data plane cannot take the new list', async () => {
    plane.dataPlane.failNextApply = new Error('config write failed');
    await expect(create('alpha')).rejects.toThrow('config write failed');
    expect(plane.registry.list()).toEqual([]);
    expect(plane.events.recent(10)).toEqual([]);

    await create('alpha');
    expect(plane.registry.list().map((e) => e.name)).toEqual(['alpha']);
  });

  it('refuses a name already served with CONFLICT, leaving the data plane untouched', async () => {
    await create('alpha');
    const error = await refusal(() => create('alpha'));
    expect([error.code, error.message]).toEqual([
      'CONFLICT',
      'an export named "alpha" already exists; remove it first or choose another name',
    ]);
    expect(plane.dataPlane.applied).toHaveLength(1);
  });

  it('lets exactly one of two simultaneous creates of a name win', async () => {
    const outcomes = await Promise.allSettled([create('race'), create('race')]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    const lost = outcomes.find((o) => o.status === 'rejected')!;
    expect((lost.reason as TRPCError).code).toBe('CONFLICT');
    expect(plane.registry.list()).toHaveLength(1);
  });

  it('judges files by their real path against the image roots', async () => {
    for (const file of [
      path.join(outside, 'outside.img'),
      path.join(images, 'link-out.img'),
      `${images}/../${path.basename(outside)}/outside.img`,
    ]) {
      const error = await refusal(() => create('out', file));
      expect(error.code).toBe('BAD_REQUEST');
      expect(describeError(error).issues).toEqual([
        {
          field: 'file',
          message: `${path.join(outside, 'outside.img')} is outside the image roots (${images}); move the image under one of them`,
        },
      ]);
    }
    expect(plane.dataPlane.applied).toEqual([]);

    const viaLink = await create('via-link', path.join(images, 'link-in.img'));
    expect(viaLink.file).toBe(image);
  });

  it('refuses files nbd-server cannot serve, naming the file field', async () => {
    fs.writeFileSync(path.join(images, 'empty.img'), '');
    const cases: Array<[string, RegExp]> = [
      [path.join(images, 'missing.img'), /missing\.img: no such file$/],
      [images, /outside the image roots/],
      [path.join(images, 'empty.img'), /empty\.img is empty; there is nothing to serve$/],
    ];
    for (const [file, message] of cases) {
      const { code, issues } = describeError(await refusal(() => create('bad', file)));
      expect(code).toBe('BAD_REQUEST');
      expect(issues?.map((i) => i.field)).toEqual(['file']);
      expect(issues?.[0]?.message).toMatch(message);
    }
  });

  it('refuses a copy-on-write export when the cow dir is a path nbd-server would misread', async () => {
    const unsafe = testControlPlane({ imageRoots: [images], cowDir: '/var/lib/nbd mux/cow' });
    try {
      const error = await refusal(() =>
        unsafe.registry.create({ name: 'cow', file: image, readonly: true, cow: true, allow: [], cmdline: defaultCmdline }, testActor),
      );
      expect(describeError(error).issues?.map((i) => i.field)).toEqual(['cow']);
      expect(error.message).toContain('/var/lib/nbd mux/cow');
      expect(unsafe.dataPlane.applied).toEqual([]);
    } finally {
      unsafe.close();
    }
  });

  it('records export.created and export.removed with what was done, and by whom', async () => {
    const created = await create('alpha', image, { allow: ['10.0.0.1'] });
    plane.registry.delete({ name: 'alpha', force: false }, testActor);
    expect(plane.events.recent(10).map(({ type, exportName, details }) => ({ type, exportName, details }))).toEqual([
      { type: 'export.removed', exportName: 'alpha', details: { id: created.id, force: false, liveConnections: 0, ...testActor } },
      {
        type: 'export.created',
        exportName: 'alpha',
        details: {
          id: created.id,
          file: image,
          readonly: true,
          cow: false,
          allow: ['10.0.0.1'],
          cmdline: defaultCmdline,
          size: 64 * 1024,
          ...testActor,
        },
      },
    ]);
  });

  it('removes an export without connections at once, and then knows no such name', async () => {
    await create('alpha');
    expect(plane.registry.delete({ name: 'alpha', force: false }, testActor)).toEqual({ name: 'alpha', killed: 0, draining: 0 });
    expect(plane.dataPlane.applied.at(-1)).toEqual([]);
    expect(plane.registry.list()).toEqual([]);
    const error = await refusal(() => plane.registry.delete({ name: 'alpha', force: false }, testActor));
    expect([error.code, error.message]).toEqual(['NOT_FOUND', 'no export named "alpha"']);
    expect((await refusal(() => plane.registry.get('alpha'))).code).toBe('NOT_FOUND');
  });

  it('keeps a removed export with live connections listed as draining until they end, and lets a new export take its name', async () => {
    const old = await create('disk');
    plane.dataPlane.live.set(old.id, 2);
    expect(plane.registry.get('disk').connections).toBe(2);

    expect(plane.registry.delete({ name: 'disk', force: false }, testActor)).toEqual({ name: 'disk', killed: 0, draining: 2 });
    expect(plane.dataPlane.applied.at(-1)).toEqual([]);
    expect(plane.dataPlane.kills).toEqual([]);
    expect(plane.registry.list()).toMatchObject([{ id: old.id, name: 'disk', state: 'draining', connections: 2 }]);
    expect(plane.registry.list()[0]!.removedAt).not.toBeNull();
    expect((await refusal(() => plane.registry.get('disk'))).code).toBe('NOT_FOUND');

    const replacement = await create('disk');
    expect(plane.dataPlane.applied.at(-1)!.map((e) => e.id)).toEqual([replacement.id]);
    expect(plane.registry.list().map((e) => [e.id, e.state])).toEqual([
      [old.id, 'draining'],
      [replacement.id, 'serving'],
    ]);
    expect(plane.registry.get('disk').id).toBe(replacement.id);

    plane.dataPlane.live.delete(old.id);
    expect(plane.registry.list().map((e) => e.id)).toEqual([replacement.id]);
  });

  it('refuses to remove a name that is only draining without force, and cuts its connections with force', async () => {
    const old = await create('disk');
    plane.dataPlane.live.set(old.id, 1);
    plane.registry.delete({ name: 'disk', force: false }, testActor);
    const applies = plane.dataPlane.applied.length;

    const error = await refusal(() => plane.registry.delete({ name: 'disk', force: false }, testActor));
    expect([error.code, describeError(error).message]).toEqual([
      'CONFLICT',
      'export "disk" is already removed and draining 1 connection(s); DELETE /exports/disk?force=true cuts them',
    ]);

    expect(plane.registry.delete({ name: 'disk', force: true }, testActor)).toEqual({ name: 'disk', killed: 1, draining: 0 });
    expect(plane.dataPlane.kills).toEqual([[old.id]]);
    expect(plane.dataPlane.applied).toHaveLength(applies);
    // Forcing a name that was only draining removes nothing more, so no second export.removed.
    expect(plane.events.recent(10).filter((e) => e.type === 'export.removed')).toHaveLength(1);
  });

  it('cuts the live connections of a serving export removed with force', async () => {
    const served = await create('disk');
    plane.dataPlane.live.set(served.id, 3);
    expect(plane.registry.delete({ name: 'disk', force: true }, testActor)).toEqual({ name: 'disk', killed: 3, draining: 0 });
    expect(plane.dataPlane.kills).toEqual([[served.id]]);
    expect(plane.events.recent(1)[0]).toMatchObject({
      type: 'export.removed',
      details: { id: served.id, force: true, liveConnections: 3 },
    });
  });
});
