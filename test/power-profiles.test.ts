import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusal, sharedImage, testControlPlane, type TestControlPlane } from './helpers/context.js';
import { freeUdpPort, startSimulatedBmc, type SimulatedBmc } from './helpers/ipmi-sim.js';

const open = { actor: 'open', client: '127.0.0.1' } as const;
const macOf = (group: number, i: number) => `52:54:00:00:${group.toString(16).padStart(2, '0')}:${i.toString(16).padStart(2, '0')}`;

/** How many ipmitool processes run now. */
function ipmitoolCount(): number {
  return fs.readdirSync('/proc').filter((pid) => {
    if (!/^\d+$/.test(pid)) return false;
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('ipmitool\0');
    } catch {
      return false;
    }
  }).length;
}

describe("a profile's BMC credentials and its power, against ipmi_sim", () => {
  const image = sharedImage();
  let plane: TestControlPlane;
  let bmc: SimulatedBmc;
  const [node1, node2, node3] = [macOf(5, 1), macOf(5, 2), macOf(5, 3)];

  beforeAll(async () => {
    bmc = await startSimulatedBmc();
    plane = testControlPlane({ imageRoots: [image.root] });
    await plane.caller.exports.create({ name: 'deb', file: image.file });
    await plane.caller.exports.create({ name: 'old', file: image.file });
    await plane.caller.profiles.create({ name: 'rack3' });
    for (const [mac, name] of [
      [node1, 'rack3-node1'],
      [node2, 'rack3-node2'],
      [node3, 'rack3-node3'],
    ] as const)
      await plane.caller.machines.create({ mac, name, profile: 'rack3', export: 'old' });
  });
  afterAll(() => {
    plane.close();
    bmc.stop();
  });

  it("takes the profile's user and password where a machine gives only its address; its own win field by field; never shows a password", async () => {
    // In a profile, a machine may give its address alone, before the profile has credentials: its actions say what is missing.
    await plane.caller.machines.setBmc({ mac: node1, address: '127.0.0.1', port: bmc.port });
    const missing = await refusal(() => plane.caller.machines.power({ mac: node1, action: 'status' }));
    expect([missing.status, missing.error.message]).toEqual([
      412,
      `rack3-node1 (${node1}) has a BMC address but no user or password: set it on the machine's BMC or on its profile's`,
    ]);

    const first = await refusal(() => plane.caller.profiles.setBmc({ name: 'rack3', user: bmc.user }));
    expect([first.status, first.error.message]).toEqual([400, 'password: profile rack3 has no BMC password yet: give one']);
    expect(await plane.caller.profiles.setBmc({ name: 'rack3', user: bmc.user, password: bmc.password })).toMatchObject({
      user: bmc.user,
      password: 'set',
    });
    expect((await plane.caller.machines.get({ mac: node1 })).bmc).toMatchObject({
      address: '127.0.0.1',
      user: bmc.user,
      password: 'set',
      sources: { user: 'profile', password: 'profile' },
    });
    expect(await plane.caller.machines.power({ mac: node1, action: 'status' })).toMatchObject({ ok: true, state: 'off' });

    // Its own password wins over the profile's, and is what the BMC judges.
    await plane.caller.machines.setBmc({ mac: node2, address: '127.0.0.1', port: bmc.port, password: 'own-wrong-1' });
    expect((await plane.caller.machines.get({ mac: node2 })).bmc).toMatchObject({ sources: { user: 'profile', password: 'machine' } });
    expect((await refusal(() => plane.caller.machines.power({ mac: node2, action: 'status' }))).status).toBe(502);
    // null hands the password back to the profile.
    await plane.caller.machines.setBmc({ mac: node2, address: '127.0.0.1', port: bmc.port, password: null });
    expect(await plane.caller.machines.power({ mac: node2, action: 'status' })).toMatchObject({ ok: true });

    // A change without a password keeps the profile's; events say only whether it changed.
    await plane.caller.profiles.setBmc({ name: 'rack3', user: bmc.user });
    const shown = JSON.stringify([
      await plane.caller.profiles.list(),
      await plane.caller.profiles.get({ name: 'rack3' }),
      await plane.caller.machines.list(),
      await plane.caller.events.list({ limit: 100 }),
    ]);
    expect(shown).not.toContain(bmc.password);
    expect(shown).not.toContain('own-wrong-1');
    const events = (await plane.caller.events.list({ limit: 100 })).filter((e) => e.type === 'profile.bmc-set').map((e) => e.details);
    expect(events).toEqual([
      { name: 'rack3', user: bmc.user, passwordChanged: false, ...open },
      { name: 'rack3', user: bmc.user, passwordChanged: true, ...open },
    ]);
  });

  it('powers every machine of the profile, one result per machine with its name, the one without a BMC listed as such', async () => {
    const { results } = await plane.caller.profiles.power({ name: 'rack3', action: 'status' });
    expect(results).toMatchObject([
      { mac: node1, name: 'rack3-node1', ok: true, state: 'off' },
      { mac: node2, name: 'rack3-node2', ok: true, state: 'off' },
      { mac: node3, name: 'rack3-node3', ok: false, failure: 'no-bmc', reason: expect.stringMatching(/has no BMC set/) },
    ]);
    const powerEvents = (await plane.caller.events.list({ limit: 10 })).filter((e) => e.type === 'machine.power');
    expect(powerEvents.slice(0, 2).map((e) => e.details)).toMatchObject([
      { action: 'status', outcome: 'done', ...open },
      { action: 'status', outcome: 'done', ...open },
    ]);
    expect((await refusal(() => plane.caller.profiles.power({ name: 'rack9', action: 'status' }))).status).toBe(404);
    expect((await refusal(() => plane.caller.profiles.power({ name: 'rack3', action: 'sideways' as never }))).status).toBe(400);
  });

  it("reimage sets the profile's export for all its machines, then boots each with a BMC from the network", async () => {
    const unknown = await refusal(() => plane.caller.profiles.reimage({ name: 'rack3', export: 'nope' }));
    expect(unknown.status).toBe(400);
    expect(bmc.commands()).toEqual([]);

    const result = await plane.caller.profiles.reimage({ name: 'rack3', export: 'deb' });
    expect(result).toMatchObject({ profile: 'rack3', export: 'deb' });
    expect(result.results.map((r) => [r.name, r.ok, r.failure ?? null, r.steps.map((s) => `${s.step}:${s.ok}`).join(' ')])).toEqual([
      ['rack3-node1', true, null, 'export:true status:true pxe:true on:true'],
      ['rack3-node2', true, null, 'export:true status:true pxe:true on:true'],
      ['rack3-node3', false, 'no-bmc', 'export:true status:false'],
    ]);
    // Their own export cleared: each boots the profile's, the one without a BMC at its next boot.
    for (const m of await plane.caller.machines.list()) expect([m.name, m.export, m.sources.export]).toEqual([m.name, 'deb', 'profile']);
    expect((await plane.caller.profiles.get({ name: 'rack3' })).export).toBe('deb');
    expect(bmc.bootDevice()).toBe('pxe');
    expect(bmc.processRunning()).toBe(true);
  });
});

describe('a profile of 100 machines reimaged at once', () => {
  const image = sharedImage();
  let plane: TestControlPlane;
  let bmc: SimulatedBmc;
  const parallel = 25;
  const bounds = { perTrySeconds: 1, tries: 1, killAfterMs: 4000 };
  beforeAll(async () => {
    bmc = await startSimulatedBmc();
    plane = testControlPlane({ imageRoots: [image.root], power: { parallel, bounds, pollIntervalMs: 60_000 } });
    await plane.caller.exports.create({ name: 'deb', file: image.file });
  });
  afterAll(() => {
    plane.close();
    bmc.stop();
  });

  it('runs at most `parallel` ipmitool at once, in bounded time, and reports every machine: rebooted, silent BMC, or no BMC', async () => {
    await plane.caller.profiles.create({ name: 'rack4' });
    await plane.caller.profiles.setBmc({ name: 'rack4', user: bmc.user, password: bmc.password });
    const silentPorts = await Promise.all(Array.from({ length: 5 }, () => freeUdpPort()));
    for (let i = 0; i < 100; i++) {
      const mac = macOf(6, i);
      await plane.caller.machines.create({ mac, name: `rack4-node${String(i).padStart(3, '0')}`, profile: 'rack4' });
      // Every tenth answers (ipmi_sim), every twentieth-but-one has no BMC, the rest point where nothing listens.
      if (i % 20 === 1) continue;
      await plane.caller.machines.setBmc({ mac, address: '127.0.0.1', port: i % 10 === 0 ? bmc.port : silentPorts[i % 5]! });
    }
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, ipmitoolCount())), 100);
    const started = Date.now();
    const { results } = await plane.caller.profiles.reimage({ name: 'rack4', export: 'deb' });
    const took = Date.now() - started;
    clearInterval(sampler);

    expect(results).toHaveLength(100);
    expect(results.map((r) => r.name)).toEqual(Array.from({ length: 100 }, (_, i) => `rack4-node${String(i).padStart(3, '0')}`));
    const count = (failure: string | null) => results.filter((r) => (r.failure ?? null) === failure).length;
    expect([count(null), count('no-bmc'), count('unreachable')]).toEqual([10, 5, 85]);
    expect(results.filter((r) => r.ok)).toHaveLength(10);
    expect(most).toBeLessThanOrEqual(parallel);
    // 85 silent BMCs, `parallel` at a time, each ended by ipmitool (about 2 s) or the kill (4 s); the 10 answering take three steps.
    expect(took).toBeLessThan(Math.ceil(85 / parallel) * bounds.killAfterMs + 10_000);
    console.log(
      `profile reimage of 100 machines (85 silent, 5 without a BMC), ${parallel} at once: ${took} ms, at most ${most} ipmitool at once`,
    );
    // Every machine boots the new export at its next boot, whatever its BMC did.
    expect((await plane.caller.machines.list()).filter((m) => m.export === 'deb')).toHaveLength(100);
  }, 60_000);
});
