import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { refusal, sharedImage, testControlPlane, type TestControlPlane } from './helpers/context.js';

/**
 * What the hostile review found in the machines' rules, through createCaller on a migrated
 * in-memory database with real state files (mkfs.ext4, e2fsck, resize2fs): a state attachable
 * while it is rewritten, a failed grow that left the file larger than its record, kernel
 * arguments that override a machine's own or overflow the kernel's line, reports out of order.
 */
const mac = '52:54:00:12:34:56';
const stateName = '__state-525400123456';

describe('machines under hostile input', () => {
  const images = sharedImage();
  let plane: TestControlPlane;
  beforeEach(async () => {
    plane = testControlPlane({ imageRoots: [images.root] });
    await plane.caller.exports.create({ name: 'debian', file: images.file });
  });
  afterEach(() => plane.close());

  /** The state exports the data plane serves now. */
  const served = () => plane.dataPlane.appliedStates.at(-1)!.map((state) => state.name);

  it('serves a state to no one while it is reset or grown: the config drops it before the change starts', async () => {
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian', persistent: true, stateSize: '64M' });
    plane.boots.scriptFetched(mac, '10.1.0.7');
    expect(served()).toEqual([stateName]);
    // What the data plane serves at the moment the state file is being rewritten (mkfs or resize2fs running).
    const servedMidway: string[][] = [];
    const { stateFiles } = plane;
    const create = stateFiles.create.bind(stateFiles);
    const grow = stateFiles.grow.bind(stateFiles);
    stateFiles.create = (...args) => (servedMidway.push(served()), create(...args));
    stateFiles.grow = (...args) => (servedMidway.push(served()), grow(...args));
    await plane.caller.machines.reset({ mac });
    await plane.caller.machines.update({ mac, stateSize: '128M' });
    expect(servedMidway).toEqual([[], []]);
    // Served again once each change is done.
    expect(served()).toEqual([stateName]);
  });

  it('puts a state file back at its recorded size when growing it fails', async () => {
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian', persistent: true, stateSize: '64M' });
    const file = plane.stateFiles.pathOf(mac);
    // A broken superblock (ext4's magic at byte 1080 zeroed): e2fsck cannot check it, so it cannot grow.
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(2), 0, 2, 1080);
    fs.closeSync(fd);
    const { status, error } = await refusal(() => plane.caller.machines.update({ mac, stateSize: '128M' }));
    expect(status).toBe(503);
    expect(error.message).toMatch(/cannot grow the state filesystem .*keeps its state at the size it had/);
    expect(fs.statSync(file).size).toBe(64 * 1024 * 1024);
    expect((await plane.caller.machines.get({ mac })).stateSize).toBe(64 * 1024 * 1024);
  });

  it.each([
    ['nbdroot.state=10.9.9.9:10809/__state-525400123456', 'nbdroot.state', 'machine'],
    ['nbdmux.mac=52:54:00:00:00:01', 'nbdmux.mac', 'machine'],
    ['nbdmux.report=http://10.9.9.9/boot/report', 'nbdmux.report', 'machine'],
    ['systemd.machine_id=0123456789abcdef0123456789abcdef', 'systemd.machine_id', 'machine'],
    ['systemd.machine-id=0123456789abcdef0123456789abcdef', 'systemd.machine-id', 'machine'],
    ['quiet systemd.hostname=web1', 'systemd.hostname', 'machine'],
    ['initrd=evil.img', 'initrd', 'export'],
  ])("refuses %s in an export's cmdline, which would override every machine's own", async (cmdline, name, writtenFor) => {
    const { status, error } = await refusal(() => plane.caller.exports.create({ name: 'other', file: images.file, cmdline }));
    expect(status).toBe(400);
    expect(error.issues).toEqual([
      {
        field: 'cmdline',
        message: `must not set ${name}=: nbdmux writes it for each ${writtenFor} (remove "${cmdline.split(' ').pop()}")`,
      },
    ]);
  });

  it.each(['systemd.machine-id=0123456789abcdef0123456789abcdef', 'nbdmux.report=http://10.9.9.9/r', 'nbdroot.state=x'])(
    "refuses %s in a machine's cmdline, with - and _ alike as systemd reads them",
    async (cmdline) => {
      const { status, error } = await refusal(() => plane.caller.machines.create({ mac, name: 'a', export: 'debian', cmdline }));
      expect(status).toBe(400);
      expect(error.issues).toEqual([
        { field: 'cmdline', message: expect.stringMatching(/^must not set .*=: nbdmux writes it for each machine/) },
      ]);
    },
  );

  it("refuses a machine's arguments that, after its export's, would pass the kernel's bound", async () => {
    const exportArgs = `console=ttyS0,115200 ${'a'.repeat(700)}`;
    await plane.caller.exports.create({ name: 'long', file: images.file, cmdline: exportArgs });
    const machineArgs = `x=${'b'.repeat(400)}`;
    const created = await refusal(() => plane.caller.machines.create({ mac, name: 'a', export: 'long', cmdline: machineArgs }));
    expect(created.status).toBe(400);
    expect(created.error.issues).toEqual([
      {
        field: 'cmdline',
        message: `with its export's ${exportArgs.length} characters, the kernel would get ${exportArgs.length + 1 + machineArgs.length} of arguments; the two together must be at most 1024 (the kernel's whole command line is 2048): shorten this one`,
      },
    ]);
    // The same machine on a short export is fine, and moving it to the long one is refused alike.
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian', cmdline: machineArgs });
    expect((await refusal(() => plane.caller.machines.update({ mac, export: 'long' }))).status).toBe(400);
    expect((await plane.caller.machines.get({ mac })).export).toBe('debian');
    // Within the bound together: accepted.
    await plane.caller.machines.update({ mac, export: 'long', cmdline: 'x=short' });
  });

  it('accepts reports that move a boot forward only, and none once it failed', async () => {
    const { boots } = plane;
    await plane.caller.machines.create({ mac, name: 'a', export: 'debian' });
    boots.scriptFetched(mac, '10.1.0.7');
    expect(boots.report(mac, '10.1.0.7', 'up', '')).toEqual({ ok: true });
    expect(boots.report(mac, '10.1.0.7', 'root', '')).toEqual({
      ok: false,
      status: 409,
      message: 'machine a is at stage up: a report of root would move its boot backwards',
    });
    expect(boots.report(mac, '10.1.0.7', 'failed', 'late')).toEqual({ ok: true });
    expect(boots.report(mac, '10.1.0.7', 'root', '')).toMatchObject({
      ok: false,
      status: 409,
      message: expect.stringMatching(/has ended \(failed\)/),
    });
    expect((await plane.caller.machines.get({ mac })).stage).toBe('failed');

    // A boot whose root's connection closed may still be alive (reconnecting): its report is taken,
    // in order, from the address of its boot.
    boots.scriptFetched(mac, '10.1.0.7');
    plane.events.record('connection.negotiated', 'debian', { connection: 7, client: '10.1.0.7' });
    plane.events.record('connection.closed', 'debian', { connection: 7, client: '10.1.0.7', outcome: 'closed', bytesSent: 1 });
    expect((await plane.caller.machines.get({ mac })).stage).toBe('off');
    expect(boots.report(mac, '10.1.0.9', 'up', '')).toMatchObject({ ok: false, status: 403 });
    expect(boots.report(mac, '10.1.0.7', 'up', '')).toEqual({ ok: true });
    expect(boots.report(mac, '10.1.0.7', 'root', '')).toEqual({
      ok: false,
      status: 409,
      message: 'machine a is at stage up: a report of root would move its boot backwards',
    });
    expect((await plane.caller.machines.get({ mac })).stage).toBe('up');
  });
});
