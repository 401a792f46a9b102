import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { refusal, sharedImage, testControlPlane, type TestControlPlane } from './helpers/context.js';

/** The router's procedures through createCaller, as REST calls them: inputs, defaults, errors, in milliseconds. */

describe('the router through createCaller', () => {
  const images = sharedImage();
  let plane: TestControlPlane;
  beforeEach(() => {
    plane = testControlPlane({ imageRoots: [images.root] });
  });
  afterEach(() => plane.close());

  it('creates with the documented defaults, then lists, gets and deletes', async () => {
    const created = await plane.caller.exports.create({ name: 'disk', file: images.file });
    expect(created).toMatchObject({
      name: 'disk',
      file: images.file,
      readonly: true,
      cow: false,
      allow: [],
      size: 8192,
      state: 'serving',
      connections: 0,
    });
    expect(await plane.caller.exports.list()).toEqual([created]);
    expect(await plane.caller.exports.get({ name: 'disk' })).toEqual(created);
    expect(await plane.caller.exports.delete({ name: 'disk' })).toEqual({ name: 'disk', killed: 0, draining: 0 });
    expect(await plane.caller.exports.list()).toEqual([]);
  });

  it('refuses bad input with 400 and every field at fault, before the registry or the data plane sees it', async () => {
    const { status, error } = await refusal(() => plane.caller.exports.create({ name: 'bad name', file: 'relative.img' }));
    expect(status).toBe(400);
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.issues?.map((i) => i.field)).toEqual(['name', 'file']);
    expect(error.message).toMatch(/^name: must be 1 to 64 characters.*; file: must be an absolute path/);
    expect(plane.dataPlane.applied).toEqual([]);
  });

  it.each([
    ['an unknown field', { name: 'x', file: '/x.img', extra: 1 }, 'extra', /unknown field; remove it/],
    ['the reserved name generic', { name: 'generic', file: '/x.img' }, 'name', /reserved by nbd-server/],
    [
      'a missing file',
      { name: 'x' },
      'file',
      /^give either "file" \(an image on this host\) or "url" \(an image to import\), exactly one$/,
    ],
    ['a path nbd-server would misread', { name: 'x', file: '/srv/my disk.img' }, 'file', /may only contain/],
    ['readonly that is not a boolean', { name: 'x', file: '/x.img', readonly: 'yes' }, 'readonly', /must be true or false/],
    ['cow with readonly false', { name: 'x', file: '/x.img', cow: true, readonly: false }, 'cow', /never writes its image/],
    ['an allow entry that is no address', { name: 'x', file: '/x.img', allow: ['10.1.0.0/33'] }, 'allow.0', /IP address or CIDR range/],
  ])('refuses %s, naming the field', async (_title, input, field, message) => {
    const { status, error } = await refusal(() => plane.caller.exports.create(input as never));
    expect(status).toBe(400);
    expect(error.issues).toEqual([{ field, message: expect.stringMatching(message) }]);
  });

  it('answers 404 for an unknown name and 409 for a taken one', async () => {
    expect(await refusal(() => plane.caller.exports.get({ name: 'absent' }))).toEqual({
      status: 404,
      error: {
        code: 'NOT_FOUND',
        message: 'no export named "absent"; GET /exports lists them',
        problem: 'no export named "absent"',
        remedy: { kind: 'list-exports' },
      },
    });
    await plane.caller.exports.create({ name: 'disk', file: images.file });
    const taken = await refusal(() => plane.caller.exports.create({ name: 'disk', file: images.file }));
    expect([taken.status, taken.error.code]).toEqual([409, 'CONFLICT']);
  });

  it('answers 503 naming the data dir when it is full, and reports it full', async () => {
    plane.dataPlane.failNextApply = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const { status, error } = await refusal(() => plane.caller.exports.create({ name: 'disk', file: images.file }));
    expect(status).toBe(503);
    expect(error).toEqual({
      code: 'SERVICE_UNAVAILABLE',
      message: `the data dir ${plane.space.dataDir} is full, so nothing was changed: free space there, then try again`,
    });
    expect(plane.space.problem).toMatch(/is full/);
    expect(plane.logs).toMatchObject([
      { level: 'error', msg: expect.stringMatching(/^data dir full/), error: expect.stringContaining('ENOSPC') },
    ]);
    expect(await plane.caller.exports.list()).toEqual([]);
  });

  it('hides a failure it has no words for behind a message that points to the log', async () => {
    plane.dataPlane.failNextApply = new Error('secret internals');
    const { status, error } = await refusal(() => plane.caller.exports.create({ name: 'disk', file: images.file }));
    expect(status).toBe(500);
    expect(error.message).not.toContain('secret internals');
    expect(error.message).toContain('daemon log');
  });

  it('lists events newest first, by limit and after an id', async () => {
    await plane.caller.exports.create({ name: 'a', file: images.file });
    await plane.caller.exports.create({ name: 'b', file: images.file });
    await plane.caller.exports.delete({ name: 'a' });
    const all = await plane.caller.events.list();
    expect(all.map((e) => [e.type, e.exportName])).toEqual([
      ['export.removed', 'a'],
      ['export.created', 'b'],
      ['export.created', 'a'],
    ]);
    expect((await plane.caller.events.list({ limit: 1 })).map((e) => e.id)).toEqual([all[0]!.id]);
    expect((await plane.caller.events.list({ afterId: all[1]!.id })).map((e) => e.id)).toEqual([all[0]!.id]);
    expect((await refusal(() => plane.caller.events.list({ limit: 1001 }))).error.issues).toEqual([
      { field: 'limit', message: 'must be at most 1000' },
    ]);
  });

  it('asks the data plane for recent connections with the defaults and the limits the input allows', async () => {
    await plane.caller.connections.list();
    await plane.caller.connections.list({ live: true, limit: 5 });
    expect(plane.dataPlane.recentAsked).toEqual([
      { limit: 100, live: false },
      { limit: 5, live: true },
    ]);
    expect((await refusal(() => plane.caller.connections.list({ limit: 0 }))).status).toBe(400);
    expect(plane.dataPlane.recentAsked).toHaveLength(2);
  });

  it('refuses a force that is not a boolean, and removes nothing', async () => {
    await plane.caller.exports.create({ name: 'disk', file: images.file });
    const { error } = await refusal(() => plane.caller.exports.delete({ name: 'disk', force: 'maybe' as never }));
    expect(error.issues?.map((i) => i.field)).toEqual(['force']);
    expect((await plane.caller.exports.list()).map((e) => e.name)).toEqual(['disk']);
  });
});
