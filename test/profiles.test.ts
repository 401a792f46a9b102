import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { refusal, sharedImage, testControlPlane, type TestControlPlane } from './helpers/context.js';

/**
 * Profiles through createCaller, on a migrated in-memory database: what a machine gets from its
 * profile, field by field, and the refusals. State files are real (mkfs.ext4 on a sparse file).
 * That a profile's export and cmdline reach the boot script is shown through the daemon
 * (test/boot-routes-profiles.test.ts).
 */

const [mac1, mac2, mac3] = ['52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:03'];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('profiles', () => {
  const images = sharedImage();
  let plane: TestControlPlane;
  beforeEach(async () => {
    plane = testControlPlane({ imageRoots: [images.root] });
    await plane.caller.exports.create({ name: 'debian', file: images.file });
    await plane.caller.exports.create({ name: 'alpine', file: images.file });
  });
  afterEach(() => plane.close());

  it('gives each machine its own value, else its profile’s, else the default, and says where each came from', async () => {
    await plane.caller.profiles.create({ name: 'rack3', export: 'debian', cmdline: 'quiet' });
    const inherits = await plane.caller.machines.create({ mac: mac1, name: 'a', profile: 'rack3' });
    expect(inherits).toMatchObject({
      profile: 'rack3',
      export: 'debian',
      cmdline: 'quiet',
      persistent: false,
      stateSize: 4 * 1024 ** 3,
      sources: { export: 'profile', cmdline: 'profile', persistent: 'default', stateSize: 'default' },
    });
    const own = await plane.caller.machines.create({ mac: mac2, name: 'b', profile: 'rack3', export: 'alpine', cmdline: '' });
    expect(own).toMatchObject({ export: 'alpine', cmdline: '', sources: { export: 'machine', cmdline: 'machine', persistent: 'default' } });
    const alone = await plane.caller.machines.create({ mac: mac3, name: 'c' });
    expect(alone).toMatchObject({ profile: null, export: null, cmdline: '', sources: { export: 'default', cmdline: 'default' } });

    // A profile change reaches the machines that take the field from it, and only them.
    await plane.caller.profiles.update({ name: 'rack3', export: 'alpine', cmdline: 'quiet splash' });
    expect((await plane.caller.machines.get({ mac: mac1 })).export).toBe('alpine');
    expect((await plane.caller.machines.get({ mac: mac2 })).cmdline).toBe('');
    expect(plane.events.recent(1)[0]).toMatchObject({
      type: 'profile.updated',
      exportName: 'alpine',
      details: { name: 'rack3', changed: ['export', 'cmdline'], machines: 1, stateDiscarded: [] },
    });
    // Clearing its own value hands the field back to the profile.
    const cleared = await plane.caller.machines.update({ mac: mac2, export: null, cmdline: null });
    expect(cleared).toMatchObject({ export: 'alpine', cmdline: 'quiet splash', sources: { export: 'profile', cmdline: 'profile' } });
    expect(await plane.caller.profiles.get({ name: 'rack3' })).toMatchObject({
      export: 'alpine',
      persistent: null,
      machines: [
        { mac: mac1, name: 'a' },
        { mac: mac2, name: 'b' },
      ],
    });
  });

  it('sets a profile’s export for all its machines at once, clearing their own', async () => {
    await plane.caller.profiles.create({ name: 'rack3' });
    await plane.caller.machines.create({ mac: mac1, name: 'a', profile: 'rack3', export: 'debian' });
    await plane.caller.machines.create({ mac: mac2, name: 'b', profile: 'rack3' });
    await plane.caller.profiles.update({ name: 'rack3', export: 'alpine', allMachines: true });
    expect((await plane.caller.machines.list()).map((m) => [m.name, m.export, m.sources.export])).toEqual([
      ['a', 'alpine', 'profile'],
      ['b', 'alpine', 'profile'],
    ]);
    expect(plane.events.recent(1)[0]!.details).toMatchObject({ changed: ['export'], machines: 2, cleared: ['export'] });
    expect(await refusal(() => plane.caller.profiles.update({ name: 'rack3', allMachines: true }))).toMatchObject({
      status: 400,
      error: { issues: [{ field: 'allMachines' }] },
    });
  });

  it('refuses an unknown profile with 400 on the field, an unknown one by name with 404, and a taken name with 409', async () => {
    for (const call of [
      () => plane.caller.machines.create({ mac: mac1, name: 'a', profile: 'nope' }),
      async () => {
        await plane.caller.machines.create({ mac: mac2, name: 'b' });
        return plane.caller.machines.update({ mac: mac2, profile: 'nope' });
      },
    ]) {
      expect(await refusal(call)).toEqual({
        status: 400,
        error: expect.objectContaining({
          code: 'BAD_REQUEST',
          message: 'profile: no profile "nope"; GET /profiles lists them',
          issues: [{ field: 'profile', message: 'no profile "nope"; GET /profiles lists them' }],
        }),
      });
    }
    expect(await refusal(() => plane.caller.profiles.get({ name: 'nope' }))).toMatchObject({
      status: 404,
      error: { code: 'NOT_FOUND', message: 'no profile named nope; GET /profiles lists them' },
    });
    await plane.caller.profiles.create({ name: 'rack3' });
    expect(await refusal(() => plane.caller.profiles.create({ name: 'rack3' }))).toMatchObject({
      status: 409,
      error: { message: 'a profile named rack3 already exists: choose another name' },
    });
    expect(await refusal(() => plane.caller.profiles.create({ name: 'x', export: 'nope' }))).toMatchObject({
      status: 400,
      error: { issues: [{ field: 'export', message: expect.stringContaining('no export "nope"') }] },
    });
    expect(await refusal(() => plane.caller.profiles.create({ name: '../x' }))).toMatchObject({
      status: 400,
      error: { issues: [{ field: 'name' }] },
    });
  });

  it('refuses to remove a profile in use with 409 naming its machines; once they leave it, removes it', async () => {
    await plane.caller.profiles.create({ name: 'rack3', export: 'debian' });
    await plane.caller.machines.create({ mac: mac1, name: 'a', profile: 'rack3' });
    await plane.caller.machines.create({ mac: mac2, name: 'b', profile: 'rack3', export: 'alpine' });
    expect(await refusal(() => plane.caller.profiles.remove({ name: 'rack3' }))).toEqual({
      status: 409,
      error: {
        code: 'CONFLICT',
        message: `profile rack3 is used by a (${mac1}), b (${mac2}); PATCH /machines/{mac} with "profile": null takes each out of it (${mac1}, ${mac2})`,
        problem: `profile rack3 is used by a (${mac1}), b (${mac2})`,
        remedy: { kind: 'leave-profile', name: 'rack3', macs: [mac1, mac2] },
      },
    });
    // Out of it, a machine keeps only its own fields: a boots nothing, b still boots its own export.
    expect(await plane.caller.machines.update({ mac: mac1, profile: null })).toMatchObject({
      export: null,
      sources: { export: 'default' },
    });
    expect(await plane.caller.machines.update({ mac: mac2, profile: null })).toMatchObject({ export: 'alpine' });
    await plane.caller.profiles.remove({ name: 'rack3' });
    expect(await plane.caller.profiles.list()).toEqual([]);
    expect(plane.events.recent(1)[0]).toMatchObject({ type: 'profile.removed', details: { name: 'rack3' } });
  });

  describe('adopt', () => {
    /** Three MACs discovered in the order 03, 01, 02: not the order of their MACs. */
    async function discover(): Promise<void> {
      for (const mac of [mac3, mac1, mac2]) {
        plane.boots.scriptFetched(mac, '10.1.0.9');
        await sleep(5);
      }
    }

    it('names discovered machines from the pattern in their order of discovery, all in one step', async () => {
      await plane.caller.profiles.create({ name: 'rack3', export: 'debian', persistent: true, stateSize: '64M' });
      await discover();
      const { adopted, profile } = await plane.caller.profiles.adopt({ name: 'rack3', names: 'rack3-node{01..40}' });
      expect(adopted).toEqual([
        { mac: mac3, name: 'rack3-node01' },
        { mac: mac1, name: 'rack3-node02' },
        { mac: mac2, name: 'rack3-node03' },
      ]);
      expect(profile.machines).toHaveLength(3);
      expect(await plane.caller.machines.discovered()).toEqual([]);
      const machine = await plane.caller.machines.get({ mac: mac3 });
      expect(machine).toMatchObject({
        name: 'rack3-node01',
        profile: 'rack3',
        export: 'debian',
        persistent: true,
        stateSize: 64 * 1024 ** 2,
      });
      // Persistent by its profile: each has its state filesystem.
      for (const mac of [mac1, mac2, mac3]) expect(plane.stateFiles.exists(mac)).toBe(true);
      expect(plane.events.recent(1)[0]).toMatchObject({ type: 'profile.adopted', details: { name: 'rack3', machines: adopted } });
    });

    it('adopts only the MACs given, still numbered in their order of discovery', async () => {
      await plane.caller.profiles.create({ name: 'rack3' });
      await discover();
      const { adopted } = await plane.caller.profiles.adopt({ name: 'rack3', names: 'n{1..9}', macs: [mac2, mac3] });
      expect(adopted).toEqual([
        { mac: mac3, name: 'n1' },
        { mac: mac2, name: 'n2' },
      ]);
      expect((await plane.caller.machines.discovered()).map((d) => d.mac)).toEqual([mac1]);
    });

    it('refuses too few names, a malformed pattern, a name taken and an undiscovered MAC, and then adopts none', async () => {
      await plane.caller.profiles.create({ name: 'rack3' });
      await discover();
      await plane.caller.machines.create({ mac: '52:54:00:00:00:99', name: 'rack3-node02' });
      const cases: Array<[Parameters<typeof plane.caller.profiles.adopt>[0], number, string]> = [
        [{ name: 'rack3', names: 'rack3-node{1..2}' }, 400, 'names: rack3-node{1..2} gives 2 name(s) for 3 machines: widen its range'],
        [{ name: 'rack3', names: 'rack3-node' }, 400, 'names: must hold one range of numbers in braces, e.g. rack3-node{01..40}'],
        [{ name: 'rack3', names: 'n{5..1}' }, 400, 'names: the range {5..1} counts down: give the smaller number first'],
        [{ name: 'rack3', names: 'Rack{1..3}' }, 400, 'names: Rack1 must be a host name'],
        [{ name: 'rack3', names: 'rack3-node{01..40}' }, 409, 'machines named rack3-node02 already exist: choose other names'],
        [{ name: 'rack3', names: 'x{1..3}', macs: ['52:54:00:00:00:42'] }, 400, 'macs: 52:54:00:00:00:42 has not asked to boot'],
        [{ name: 'nope', names: 'x{1..3}' }, 404, 'no profile named nope'],
      ];
      for (const [input, status, message] of cases) {
        const refused = await refusal(() => plane.caller.profiles.adopt(input));
        expect(refused.status, message).toBe(status);
        expect(refused.error.message).toContain(message);
      }
      expect((await plane.caller.machines.list()).map((m) => m.name)).toEqual(['rack3-node02']);
      expect(await plane.caller.machines.discovered()).toHaveLength(3);
    });
  });

  it('makes, discards and keeps its machines’ states as their own changes would, refusing while one is attached', async () => {
    await plane.caller.profiles.create({ name: 'rack3', export: 'debian' });
    await plane.caller.machines.create({ mac: mac1, name: 'a', profile: 'rack3' });
    expect(plane.stateFiles.exists(mac1)).toBe(false);
    await plane.caller.profiles.update({ name: 'rack3', persistent: true, stateSize: '64M' });
    expect(plane.stateFiles.exists(mac1)).toBe(true);
    const stat = () => fs.statSync(plane.stateFiles.pathOf(mac1)).ino;
    const first = stat();

    // Its root attached: nothing that would rewrite its state runs under it.
    const id = plane.db.$client.prepare('SELECT id FROM machines WHERE mac = ?').pluck().get(mac1) as number;
    plane.dataPlane.liveConnections.push({ id: 900, machineId: id });
    expect(await refusal(() => plane.caller.profiles.update({ name: 'rack3', export: 'alpine' }))).toMatchObject({
      status: 409,
      error: {
        message: 'attached, so their state cannot change under a running system: a (its state would be discarded); power them off first',
      },
    });
    expect((await plane.caller.profiles.get({ name: 'rack3' })).export).toBe('debian');
    // A change that leaves the state alone reaches it at its next boot, booted or not.
    await plane.caller.profiles.update({ name: 'rack3', cmdline: 'quiet' });
    plane.dataPlane.liveConnections.length = 0;

    await plane.caller.profiles.update({ name: 'rack3', export: 'alpine', keepState: true });
    expect(stat()).toBe(first);
    await plane.caller.profiles.update({ name: 'rack3', export: 'debian' });
    expect(plane.events.recent(1)[0]!.details).toMatchObject({ stateDiscarded: ['a'] });
    await plane.caller.profiles.update({ name: 'rack3', stateSize: '128M' });
    expect(fs.statSync(plane.stateFiles.pathOf(mac1)).size).toBe(128 * 1024 ** 2);
    expect(await refusal(() => plane.caller.profiles.update({ name: 'rack3', stateSize: '64M' }))).toMatchObject({
      status: 409,
      error: { message: expect.stringContaining('the state filesystem of a cannot shrink') },
    });
  });
});
