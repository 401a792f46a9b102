import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { refusal, sharedImage, testControlPlane, type TestControlPlane } from './helpers/context.js';

/**
 * The machines' rules through createCaller, on a migrated in-memory database; state files are
 * real (mkfs.ext4 on a sparse file, checked with dumpe2fs). Booting them is the qemu tests' job.
 */

/** What dumpe2fs says of a state file. */
function dumpe2fs(file: string, name: string): string {
  const out = execFileSync('dumpe2fs', ['-h', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return new RegExp(`^${name}:\\s+(\\S+)`, 'm').exec(out)![1]!;
}
const filesystemBytes = (file: string) => Number(dumpe2fs(file, 'Block count')) * Number(dumpe2fs(file, 'Block size'));
/** A new filesystem has a new UUID: the same one means the same state. */
const filesystemId = (file: string) => dumpe2fs(file, 'Filesystem UUID');

const mac = '52:54:00:12:34:56';

describe('machines', () => {
  const images = sharedImage();
  let plane: TestControlPlane;
  beforeEach(async () => {
    plane = testControlPlane({ imageRoots: [images.root] });
    await plane.caller.exports.create({ name: 'debian', file: images.file });
    await plane.caller.exports.create({ name: 'alpine', file: images.file });
  });
  afterEach(() => plane.close());

  it('creates with the documented defaults, normalising the MAC, and lists, gets, deletes', async () => {
    const created = await plane.caller.machines.create({ mac: '52-54-00-12-34-5A', name: 'node7', export: 'debian' });
    expect(created).toMatchObject({
      mac: '52:54:00:12:34:5a',
      name: 'node7',
      export: 'debian',
      exportProblem: null,
      cmdline: '',
      persistent: false,
      stateSize: 4 * 1024 ** 3,
      stateExport: null,
      stage: null,
      attached: false,
    });
    expect(created.machineId).toMatch(/^[0-9a-f]{32}$/);
    // A list leaves out the cloud-init documents, which may hold secrets; `get` shows them.
    const { userData, networkConfig, vendorData, ...listed } = created;
    expect([userData, networkConfig, vendorData]).toEqual([null, null, null]);
    expect(await plane.caller.machines.list()).toEqual([listed]);
    expect(await plane.caller.machines.get({ mac: '52:54:00:12:34:5A' })).toEqual(created);
    await plane.caller.machines.delete({ mac: created.mac });
    expect(await plane.caller.machines.list()).toEqual([]);
    expect(plane.events.recent(2).map((event) => event.type)).toEqual(['machine.deleted', 'machine.created']);
  });

  it('gives every machine its own machine id', async () => {
    const ids = new Set<string>();
    for (let i = 0; i < 20; i++)
      ids.add((await plane.caller.machines.create({ mac: `52:54:00:00:00:${i.toString(16).padStart(2, '0')}`, name: `n${i}` })).machineId);
    expect(ids.size).toBe(20);
  });

  it.each([
    [{ mac: '52:54:00:12:34', name: 'a' }, 'mac', /must be a MAC address/],
    [{ mac: '01:00:5e:00:00:01', name: 'a' }, 'mac', /multicast or null address/],
    [{ mac: 'zz:54:00:12:34:56', name: 'a' }, 'mac', /must be a MAC address/],
    [{ mac, name: 'Node_7' }, 'name', /must be a host name/],
    [{ mac, name: '-node' }, 'name', /must be a host name/],
    [{ mac, name: 'a', cmdline: 'quiet systemd.hostname=other' }, 'cmdline', /must not set systemd\.hostname=/],
    [{ mac, name: 'a', cmdline: 'x=${net0/mac}' }, 'cmdline', /must not contain '\$'/],
    [{ mac, name: 'a', stateSize: '1M' }, 'stateSize', /between 64M and 16T/],
    [{ mac, name: 'a', stateSize: 'lots' }, 'stateSize', /whole number of bytes/],
    [{ mac, name: 'a', stateSize: 64 * 1024 * 1024 + 1 }, 'stateSize', /multiple of 4096/],
    [{ mac, name: 'a', persistent: 'yes' }, 'persistent', /true or false/],
  ])('refuses %j with 400 on the field', async (input, field, message) => {
    const { status, error } = await refusal(() => plane.caller.machines.create(input as never));
    expect(status).toBe(400);
    expect(error.issues).toEqual([{ field, message: expect.stringMatching(message) }]);
  });

  it('refuses an unknown export with 400 on the field, and a taken MAC or name with 409', async () => {
    expect(await refusal(() => plane.caller.machines.create({ mac, name: 'a', export: 'nope' }))).toMatchObject({
      status: 400,
      error: { issues: [{ field: 'export', message: expect.stringContaining('no export "nope"') }] },
    });
    await plane.caller.machines.create({ mac, name: 'a' });
    expect(await refusal(() => plane.caller.machines.create({ mac: mac.toUpperCase(), name: 'b' }))).toMatchObject({
      status: 409,
      error: { message: expect.stringContaining(`MAC ${mac} already exists`) },
    });
    expect(await refusal(() => plane.caller.machines.create({ mac: '52:54:00:00:00:01', name: 'a' }))).toMatchObject({
      status: 409,
      error: { message: expect.stringContaining('named a already exists') },
    });
    expect(await refusal(() => plane.caller.machines.update({ mac: '52:54:00:00:00:09', name: 'x' }))).toMatchObject({ status: 404 });
  });

  it('shows a machine whose export was removed with export null and the reason', async () => {
    await plane.caller.machines.create({ mac, name: 'a', export: 'alpine' });
    await plane.caller.exports.delete({ name: 'alpine' });
    const machine = await plane.caller.machines.get({ mac });
    expect(machine.export).toBeNull();
    expect(machine.exportProblem).toMatch(/^its export alpine was removed at .*: set another one$/);
    // A new export of the same name is another export: the machine does not silently boot it.
    await plane.caller.exports.create({ name: 'alpine', file: images.file });
    expect((await plane.caller.machines.get({ mac })).export).toBeNull();
  });

  it('makes a persistent machine an ext4 state of stateSize, sparse, and discards it on reset, delete and when persistence ends', async () => {
    const created = await plane.caller.machines.create({ mac, name: 'a', export: 'debian', persistent: true, stateSize: '128M' });
    expect(created.stateExport).toBe('__state-525400123456');
    const file = plane.stateFiles.pathOf(mac);
    expect(filesystemBytes(file)).toBe(128 * 1024 * 1024);
    expect(fs.statSync(file).blocks * 512).toBeLessThan(16 * 1024 * 1024);
    const before = filesystemId(file);
    await plane.caller.machines.reset({ mac });
    expect(filesystemId(file)).not.toBe(before);
    await plane.caller.machines.update({ mac, persistent: false });
    expect(fs.existsSync(file)).toBe(false);
    await plane.caller.machines.update({ mac, persistent: true });
    expect(filesystemBytes(file)).toBe(128 * 1024 * 1024);
    await plane.caller.machines.delete({ mac });
    expect(fs.existsSync(file)).toBe(false);
  });

  it('keeps the state over a new export only with keepState, grows it, and refuses to shrink it', async () => {
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian', persistent: true, stateSize: '128M' });
    const file = plane.stateFiles.pathOf(mac);
    const first = filesystemId(file);
    await plane.caller.machines.update({ mac, export: 'alpine', keepState: true });
    expect(filesystemId(file)).toBe(first);
    await plane.caller.machines.update({ mac, export: 'debian' });
    expect(filesystemId(file)).not.toBe(first);
    expect(plane.events.recent(1)[0]!.details).toMatchObject({ changed: ['export'], stateDiscarded: true });
    await plane.caller.machines.update({ mac, stateSize: '256M' });
    expect(filesystemBytes(file)).toBe(256 * 1024 * 1024);
    expect(await refusal(() => plane.caller.machines.update({ mac, stateSize: '128M' }))).toMatchObject({
      status: 409,
      error: { message: expect.stringContaining('cannot shrink') },
    });
    expect(await refusal(() => plane.caller.machines.update({ mac, keepState: true }))).toMatchObject({
      status: 400,
      error: { issues: [{ field: 'keepState' }] },
    });
  });

  it('refuses reset, delete and a state discard with 409 while the machine is attached, and reset of a machine with no state', async () => {
    const machine = await plane.caller.machines.create({ mac, name: 'a', export: 'debian', persistent: true, stateSize: '64M' });
    const id = plane.db.$client.prepare('SELECT id FROM machines WHERE mac = ?').pluck().get(mac) as number;
    plane.dataPlane.liveConnections.push({ id: 900, machineId: id });
    for (const call of [
      () => plane.caller.machines.reset({ mac }),
      () => plane.caller.machines.delete({ mac }),
      () => plane.caller.machines.update({ mac, export: 'alpine' }),
    ]) {
      expect(await refusal(call)).toMatchObject({ status: 409, error: { message: expect.stringContaining('attached') } });
    }
    expect(fs.existsSync(plane.stateFiles.pathOf(mac))).toBe(true);
    plane.dataPlane.liveConnections.length = 0;
    await plane.caller.machines.create({ mac: '52:54:00:00:00:02', name: 'b' });
    expect(await refusal(() => plane.caller.machines.reset({ mac: '52:54:00:00:00:02' }))).toMatchObject({
      status: 409,
      error: { message: expect.stringContaining('not persistent') },
    });
    expect(machine.attached).toBe(false);
  });

  it("serves a persistent machine's state only to the address its current boot came from", async () => {
    const { boots } = plane;
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian', persistent: true, stateSize: '64M' });
    expect(plane.dataPlane.appliedStates.at(-1) ?? []).toEqual([]);
    boots.scriptFetched(mac, '10.1.0.7');
    expect(plane.dataPlane.appliedStates.at(-1)).toEqual([
      expect.objectContaining({ name: '__state-525400123456', machine: 'a', client: '10.1.0.7' }),
    ]);
    boots.scriptFetched(mac, '10.1.0.8');
    expect(plane.dataPlane.appliedStates.at(-1)).toEqual([expect.objectContaining({ client: '10.1.0.8' })]);
    expect(boots.scriptFetched('52:54:00:99:99:99', '10.1.0.9')).toBeUndefined();
    boots.scriptFetched('52:54:00:99:99:99', '10.1.0.9');
    expect(await plane.caller.machines.discovered()).toEqual([
      expect.objectContaining({ mac: '52:54:00:99:99:99', address: '10.1.0.9', requests: 2 }),
    ]);
    expect(plane.events.recent(10).filter((event) => event.type === 'machine.discovered')).toHaveLength(1);
  });

  it('never closes a state descriptor the data plane still names: a reused number could serve another file', async () => {
    const { boots } = plane;
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian', persistent: true, stateSize: '64M' });
    boots.scriptFetched(mac, '10.1.0.7');
    // Which file a descriptor holds: a closed number reopened for another file holds another (inode, birth time).
    const fileOf = (fd: number) => {
      try {
        const stat = fs.fstatSync(fd, { bigint: true });
        return `${stat.ino}:${stat.birthtimeNs}`;
      } catch {
        return 'closed';
      }
    };
    let named = new Map<number, string>();
    const stillOpenWhenReplaced: boolean[] = [];
    const record = plane.dataPlane.applyMachines.bind(plane.dataPlane);
    plane.dataPlane.applyMachines = (machines) => {
      stillOpenWhenReplaced.push([...named].every(([fd, file]) => fileOf(fd) === file));
      record(machines);
      named = new Map(machines.states.map((state) => [state.fd, fileOf(state.fd)]));
    };
    named = new Map(plane.dataPlane.appliedStates.at(-1)!.map((state) => [state.fd, fileOf(state.fd)]));
    await plane.caller.machines.reset({ mac });
    await plane.caller.machines.update({ mac, export: 'alpine' });
    await plane.caller.machines.update({ mac, persistent: false });
    expect(stillOpenWhenReplaced).toEqual(Array(6).fill(true)); // each change withholds the state first, then hands over the new set
    expect(plane.dataPlane.appliedStates.at(-1)).toEqual([]);
    // And what is handed over is the current file, never a deleted one.
    await plane.caller.machines.update({ mac, persistent: true });
    const [state] = plane.dataPlane.appliedStates.at(-1)!;
    expect(fs.readlinkSync(`/proc/self/fd/${state!.fd}`)).toBe(plane.stateFiles.pathOf(mac));
  });

  it('moves through the stages from what it sees, refusing reports from elsewhere and repeated ones', async () => {
    const { boots } = plane;
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian' });
    boots.scriptFetched(mac, '10.1.0.7');
    boots.fileFetched('10.1.0.99', 'debian', 'kernel'); // another address: not this machine's
    expect((await plane.caller.machines.get({ mac })).stage).toBe('script');
    boots.fileFetched('10.1.0.7', 'debian', 'kernel');
    boots.fileFetched('10.1.0.7', 'debian', 'initrd');
    plane.events.record('connection.negotiated', 'debian', { connection: 41, client: '10.1.0.7' });
    expect((await plane.caller.machines.get({ mac })).stage).toBe('attached');
    expect(boots.report(mac, '10.1.0.8', 'root', 'x')).toMatchObject({ ok: false, status: 403 });
    expect(boots.report('52:54:00:99:99:99', '10.1.0.7', 'root', 'x')).toMatchObject({ ok: false, status: 403 });
    expect(boots.report(mac, '10.1.0.7', 'root', 'ramboot: [2.10] root mounted\x1b[0m\n')).toEqual({ ok: true });
    expect(boots.report(mac, '10.1.0.7', 'root', 'again')).toMatchObject({ ok: false, status: 409 });
    expect(boots.report(mac, '10.1.0.7', 'up', '')).toEqual({ ok: true });
    plane.events.record('connection.closed', 'debian', { connection: 41, client: '10.1.0.7', outcome: 'closed', bytesSent: 1 });
    const machine = await plane.caller.machines.get({ mac });
    expect(machine.stage).toBe('off');
    expect(Object.keys(machine.timeline)).toEqual(['script', 'kernel', 'initrd', 'attached', 'root', 'up', 'off']);
    expect(
      plane.events
        .recent(20)
        .filter((event) => event.type === 'machine.stage')
        .map((event) => event.details),
    ).toContainEqual(expect.objectContaining({ stage: 'root', detail: 'ramboot: [2.10] root mounted?[0m' }));

    // A boot whose connection closes before it is up is off, and says when; only a report makes it failed.
    boots.scriptFetched(mac, '10.1.0.7');
    plane.events.record('connection.negotiated', 'debian', { connection: 42, client: '10.1.0.7' });
    plane.events.record('connection.closed', 'debian', { connection: 42, client: '10.1.0.7', outcome: 'closed', bytesSent: 1 });
    expect(await plane.caller.machines.get({ mac })).toMatchObject({
      stage: 'off',
      stageDetail: "its root's NBD connection closed at stage attached, before the system reported up",
    });
  });

  it('keeps the stages of two machines behind one address apart: their files name them, and an NBD connection goes to the first', async () => {
    const { boots } = plane;
    const other = '52:54:00:00:00:b2';
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian' });
    await plane.caller.machines.create({ mac: other, name: 'b', export: 'debian' });
    boots.scriptFetched(mac, '10.1.0.7');
    boots.scriptFetched(other, '10.1.0.7');
    // b fetches its files first, then a; a MAC from another address than its machine's boot counts for nothing.
    boots.fileFetched('10.1.0.7', 'debian', 'kernel', other);
    boots.fileFetched('10.1.0.7', 'debian', 'initrd', other);
    boots.fileFetched('10.1.0.8', 'debian', 'kernel', mac);
    expect((await plane.caller.machines.get({ mac })).stage).toBe('script');
    boots.fileFetched('10.1.0.7', 'debian', 'kernel', mac);
    boots.fileFetched('10.1.0.7', 'debian', 'initrd', mac);
    plane.events.record('connection.negotiated', 'debian', { connection: 51, client: '10.1.0.7' });
    plane.events.record('connection.negotiated', 'debian', { connection: 52, client: '10.1.0.7' });
    const [a, b] = [await plane.caller.machines.get({ mac }), await plane.caller.machines.get({ mac: other })];
    expect(Object.keys(a.timeline)).toEqual(['script', 'kernel', 'initrd', 'attached']);
    expect(Object.keys(b.timeline)).toEqual(['script', 'kernel', 'initrd', 'attached']);
    // b reached initrd first, so the first connection is b's.
    expect(Date.parse(b.timeline.attached!)).toBeLessThanOrEqual(Date.parse(a.timeline.attached!));
    const attachedNewestFirst = plane.events
      .recent(30)
      .flatMap((event) => (event.type === 'machine.stage' && event.details.stage === 'attached' ? [event.details.name] : []));
    expect(attachedNewestFirst).toEqual(['a', 'b']);
  });
});
