import fs from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { machineBmcsTable } from '../src/db/schema.js';
import { refusal, sharedImage, testControlPlane, type TestControlPlane } from './helpers/context.js';
import { freeUdpPort, startSimulatedBmc, type SimulatedBmc } from './helpers/ipmi-sim.js';

const node1 = '52:54:00:00:01:01';
const node2 = '52:54:00:00:01:02';

/** Every ipmitool process running now, with its argv: what any user's `ps` shows. */
function ipmitoolArgvs(): string[][] {
  return fs.readdirSync('/proc').flatMap((pid) => {
    if (!/^\d+$/.test(pid)) return [];
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      return argv[0] === 'ipmitool' ? [argv] : [];
    } catch {
      return [];
    }
  });
}

describe('BMC settings', () => {
  let plane: TestControlPlane;
  beforeAll(async () => {
    plane = testControlPlane();
    await plane.caller.machines.create({ mac: node1, name: 'node1' });
  });
  afterAll(() => plane.close());

  it.each([
    ['', 'empty'],
    ['10.0.0.256', 'an IPv4 octet over 255'],
    ['10.0.0', 'a short IPv4 address'],
    ['010.0.0.1', 'an octal-looking IPv4 address'],
    ['[fd00::1]', 'brackets'],
    ['fe80::1%eth0', 'a zone'],
    ['-oProxyCommand=x', 'an option'],
    ['bmc rack3', 'a space'],
    ['bmc_3.lab', 'an underscore'],
    ['bmc..lab', 'an empty label'],
    [`${'a'.repeat(64)}.lab`, 'a 64-character label'],
    ['bmc.lab\n', 'a newline'],
    ['http://bmc.lab', 'a URL'],
  ])('refuses %j as a BMC address (%s)', async (address) => {
    const { status, error } = await refusal(() => plane.caller.machines.setBmc({ mac: node1, address, user: 'admin', password: 'x' }));
    expect(status).toBe(400);
    expect(error.issues?.map((issue) => issue.field)).toEqual(['address']);
  });

  it.each(['10.0.3.21', 'fd00::21', '::1', 'bmc-rack3-01.lab', 'BMC7.Lab'])('takes %j as a BMC address', async (address) => {
    const bmc = await plane.caller.machines.setBmc({ mac: node1, address, user: 'admin', password: 'pw' });
    expect(bmc.address).toBe(address.toLowerCase());
  });

  it('refuses a long password, a user with a space, a port out of range, and a first setting without a password', async () => {
    const bad = { mac: node1, address: '10.0.3.21', user: 'admin' };
    expect((await refusal(() => plane.caller.machines.setBmc({ ...bad, password: 'x'.repeat(21) }))).error.issues?.[0]?.field).toBe(
      'password',
    );
    expect((await refusal(() => plane.caller.machines.setBmc({ ...bad, user: 'ad min' }))).error.issues?.[0]?.field).toBe('user');
    expect((await refusal(() => plane.caller.machines.setBmc({ ...bad, port: 70000 }))).error.issues?.[0]?.field).toBe('port');
    await plane.caller.machines.create({ mac: node2, name: 'node2' });
    const { status, error } = await refusal(() => plane.caller.machines.setBmc({ ...bad, mac: node2 }));
    expect([status, error.message]).toEqual([400, 'password: node2 has no BMC password yet: give one, or put it in a profile']);
  });

  it('never shows the password: views say "set", events say whether it changed, and it goes with the machine', async () => {
    const secret = 'never-shown-42';
    await plane.caller.machines.setBmc({ mac: node1, address: '10.0.3.21', port: 6230, user: 'admin', password: secret });
    // A change without a password keeps the one set.
    const kept = await plane.caller.machines.setBmc({ mac: node1, address: '10.0.3.22', user: 'root' });
    expect(kept).toMatchObject({ address: '10.0.3.22', port: 623, user: 'root', password: 'set' });
    const shown = [
      await plane.caller.machines.get({ mac: node1 }),
      await plane.caller.machines.list(),
      await plane.caller.events.list({ limit: 100 }),
    ];
    expect(JSON.stringify(shown)).not.toContain(secret);
    expect(shown[0]).toMatchObject({ bmc: { address: '10.0.3.22', user: 'root', password: 'set' }, power: null });
    const events = (await plane.caller.events.list({ limit: 10 })).filter((e) => e.type === 'machine.bmc-set');
    expect(events.slice(0, 2).map((e) => e.details)).toMatchObject([
      { mac: node1, address: '10.0.3.22', user: 'root', passwordChanged: false, actor: 'open', client: '127.0.0.1' },
      { mac: node1, address: '10.0.3.21', port: 6230, passwordChanged: true },
    ]);

    await plane.caller.machines.delete({ mac: node1 });
    expect(
      plane.db
        .select()
        .from(machineBmcsTable)
        .all()
        .map((row) => row.machineId),
    ).not.toContain(undefined);
    expect(plane.db.select().from(machineBmcsTable).all()).toHaveLength(0);
  });
});

describe('power over IPMI against ipmi_sim', () => {
  const image = sharedImage();
  let plane: TestControlPlane;
  let bmc: SimulatedBmc;
  beforeAll(async () => {
    bmc = await startSimulatedBmc();
    plane = testControlPlane({ imageRoots: [image.root] });
    await plane.caller.exports.create({ name: 'deb', file: image.file });
    await plane.caller.machines.create({ mac: node1, name: 'node1' });
    await plane.caller.machines.create({ mac: node2, name: 'node2' });
    await plane.caller.machines.setBmc({ mac: node1, address: '127.0.0.1', port: bmc.port, user: bmc.user, password: bmc.password });
  });
  afterAll(() => {
    plane.close();
    bmc.stop();
  });

  const lastPower = async () => (await plane.caller.events.list({ limit: 5 })).find((e) => e.type === 'machine.power')?.details;

  it('reads the status, powers the machine on and off, and asks for a network boot next, each an event with its actor', async () => {
    expect(await plane.caller.machines.power({ mac: node1, action: 'status' })).toMatchObject({ ok: true, state: 'off' });
    expect(bmc.processRunning()).toBe(false);

    expect(await plane.caller.machines.power({ mac: node1, action: 'on' })).toMatchObject({
      ok: true,
      answer: 'Chassis Power Control: Up/On',
    });
    expect(bmc.processRunning()).toBe(true);
    expect(await plane.caller.machines.power({ mac: node1, action: 'status' })).toMatchObject({ state: 'on' });

    expect(await plane.caller.machines.power({ mac: node1, action: 'pxe' })).toMatchObject({ ok: true, answer: 'Set Boot Device to pxe' });
    expect(bmc.bootDevice()).toBe('pxe');
    expect(await plane.caller.machines.power({ mac: node1, action: 'reset' })).toMatchObject({ ok: true });

    expect(await plane.caller.machines.power({ mac: node1, action: 'off' })).toMatchObject({ ok: true });
    expect(bmc.processRunning()).toBe(false);
    expect(await plane.caller.machines.power({ mac: node1, action: 'status' })).toMatchObject({ state: 'off' });
    expect(await lastPower()).toEqual({
      mac: node1,
      name: 'node1',
      action: 'status',
      outcome: 'done',
      state: 'off',
      actor: 'open',
      client: '127.0.0.1',
    });
    expect(bmc.commands()).toEqual(['set power 1', 'set boot pxe', 'set reset 1', 'set power 0']);
  });

  it('a wrong password is a credentials error quoting the BMC, and changes nothing', async () => {
    await plane.caller.machines.setBmc({ mac: node2, address: '127.0.0.1', port: bmc.port, user: bmc.user, password: 'wrong' });
    const before = bmc.commands();
    const { status, error } = await refusal(() => plane.caller.machines.power({ mac: node2, action: 'on' }));
    expect(status).toBe(502);
    expect(error.message).toMatch(/^the BMC of node2 \(127\.0\.0\.1:\d+\) refused the user name or password \(> RAKP 2 HMAC is invalid; /);
    expect(bmc.commands()).toEqual(before);
    expect(bmc.processRunning()).toBe(false);
    expect(await lastPower()).toMatchObject({
      mac: node2,
      action: 'on',
      outcome: 'credentials',
      error: expect.stringContaining('RAKP 2 HMAC is invalid'),
    });

    // A reimage through that BMC stops before it sets the export.
    const reimage = await plane.caller.machines.reimage({ mac: node2, export: 'deb' });
    expect(reimage).toMatchObject({ ok: false, steps: [{ step: 'status', ok: false }] });
    expect((await plane.caller.machines.get({ mac: node2 })).export).toBeNull();
  });

  it('a BMC that does not answer is unreachable within the bound, and no ipmitool ever has the password in its argv', async () => {
    const silent = await freeUdpPort();
    await plane.caller.machines.setBmc({ mac: node2, address: '127.0.0.1', port: silent, user: 'admin', password: 'argv-secret-9' });
    const started = Date.now();
    const pending = refusal(() => plane.caller.machines.power({ mac: node2, action: 'status' }));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const argvs = ipmitoolArgvs().filter((argv) => argv.includes(String(silent)));
    expect(argvs).toHaveLength(1);
    expect(argvs[0]!.join(' ')).not.toContain('argv-secret-9');
    const { status, error } = await pending;
    const took = Date.now() - started;
    expect(status).toBe(504);
    expect(error.message).toMatch(/did not answer \(Get Auth Capabilities error; .*\): check its address and port/);
    // ipmitool's own retries end it in about 6 s; the kill would at 10 s.
    expect(took).toBeLessThan(10_500);
    console.log(`unreachable BMC answered as such in ${took} ms`);
  });

  it('reimage sets the export, asks for a network boot, and powers the machine on (it was off), reporting each step', async () => {
    const result = await plane.caller.machines.reimage({ mac: node1, export: 'deb' });
    expect(result).toMatchObject({
      ok: true,
      steps: [
        { step: 'status', ok: true, detail: 'Chassis Power is off' },
        { step: 'export', ok: true, detail: 'boots deb from its next boot' },
        { step: 'pxe', ok: true },
        { step: 'on', ok: true },
      ],
    });
    expect((await plane.caller.machines.get({ mac: node1 })).export).toBe('deb');
    expect(bmc.processRunning()).toBe(true);
    // Running: the next reimage cycles it.
    expect((await plane.caller.machines.reimage({ mac: node1, export: 'deb' })).steps.at(-1)).toMatchObject({ step: 'cycle', ok: true });
    expect(bmc.commands().slice(-4)).toEqual(['set boot pxe', 'set power 1', 'set boot pxe', 'set power 0']);
  });

  it('the view shows the polled state with its time; a machine without a BMC is not polled; a poll never blocks a view', async () => {
    await plane.caller.machines.power({ mac: node1, action: 'on' });
    const before = bmc.commands().length;
    await plane.caller.machines.removeBmc({ mac: node2 });
    await plane.caller.machines.create({ mac: '52:54:00:00:01:03', name: 'node3' });
    await plane.power.poller.pollOnce();
    const [m1, m2, m3] = await plane.caller.machines.list();
    expect(m1).toMatchObject({ name: 'node1', power: { state: 'on', error: null } });
    expect(Date.now() - Date.parse(m1!.power!.at)).toBeLessThan(5000);
    expect([m2!.power, m3!.power, m2!.bmc]).toEqual([null, null, null]);
    expect(bmc.commands()).toHaveLength(before);

    // A silent BMC: its poll takes seconds, a view meanwhile takes none of them.
    await plane.caller.machines.setBmc({ mac: node2, address: '127.0.0.1', port: await freeUdpPort(), user: 'admin', password: 'x' });
    const polling = plane.power.poller.pollOnce();
    const started = Date.now();
    const viewed = await plane.caller.machines.get({ mac: node2 });
    expect(Date.now() - started).toBeLessThan(200);
    expect(viewed.power).toBeNull();
    await polling;
    expect((await plane.caller.machines.get({ mac: node2 })).power).toMatchObject({
      state: null,
      error: expect.stringMatching(/did not answer/),
    });
  });
});

describe('powerMany: 100 machines at once', () => {
  let plane: TestControlPlane;
  let bmc: SimulatedBmc;
  const parallel = 25;
  const bounds = { perTrySeconds: 1, tries: 1, killAfterMs: 4000 };
  beforeAll(async () => {
    bmc = await startSimulatedBmc();
    plane = testControlPlane({ power: { parallel, bounds, pollIntervalMs: 60_000 } });
  });
  afterAll(() => {
    plane.close();
    bmc.stop();
  });
  afterEach(() => expect(ipmitoolArgvs().filter((argv) => argv.includes('bulk-pw'))).toEqual([]));

  it('runs at most `parallel` ipmitool at once, in bounded time, with one result per machine in the order asked', async () => {
    const silentPorts = await Promise.all(Array.from({ length: 5 }, () => freeUdpPort()));
    const macs: string[] = [];
    for (let i = 0; i < 100; i++) {
      const mac = `52:54:00:00:02:${i.toString(16).padStart(2, '0')}`;
      macs.push(mac);
      await plane.caller.machines.create({ mac, name: `rack3-node${String(i).padStart(3, '0')}` });
      // Every tenth answers (ipmi_sim); the rest point at loopback ports where nothing listens.
      const answers = i % 10 === 0;
      await plane.caller.machines.setBmc({
        mac,
        address: '127.0.0.1',
        port: answers ? bmc.port : silentPorts[i % 5]!,
        user: bmc.user,
        password: answers ? bmc.password : 'bulk-pw',
      });
    }
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, ipmitoolArgvs().length)), 100);
    const started = Date.now();
    const results = await plane.power.control.powerMany([...macs, '52:54:00:00:03:00'], 'status', { actor: 'open', client: '127.0.0.1' });
    const took = Date.now() - started;
    clearInterval(sampler);

    expect(results.map((r) => r.mac)).toEqual([...macs, '52:54:00:00:03:00']);
    expect(results.filter((r) => r.ok)).toHaveLength(10);
    expect(results.filter((r) => !r.ok && r.failure === 'unreachable')).toHaveLength(90);
    expect(results.at(-1)).toMatchObject({ ok: false, failure: 'unknown-machine' });
    expect(most).toBeLessThanOrEqual(parallel);
    // 90 silent BMCs, `parallel` at a time, each ended by ipmitool (about 2 s) or the kill (4 s).
    expect(took).toBeLessThan(Math.ceil(90 / parallel) * bounds.killAfterMs + 3000);
    console.log(`powerMany status of 100 machines (90 silent), ${parallel} at once: ${took} ms, at most ${most} ipmitool at once`);
    expect((await plane.caller.events.list({ limit: 200 })).filter((e) => e.type === 'machine.power')).toHaveLength(100);
  });
});
