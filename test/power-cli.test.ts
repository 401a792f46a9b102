import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, type NbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { runText } from '../testkit/process.js';
import { startSimulatedBmc, type SimulatedBmc } from './helpers/ipmi-sim.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));
const mac = '52:54:00:00:04:01';

/** `nbdmux machines bmc`, `power` and `reimage`, and their REST routes, against the built daemon and a real ipmi_sim. */
describe('power from the CLI and REST', () => {
  let daemon: RunningDaemon;
  let client: NbdmuxClient;
  let bmc: SimulatedBmc;

  beforeAll(async () => {
    [daemon, bmc] = await Promise.all([startDaemon(), startSimulatedBmc()]);
    client = createNbdmuxClient({ url: daemon.url });
    await client.exports.create.mutate({ name: 'deb', file: makeImage(tempDir('nbdmux-images-'), 'deb.img', 1024 * 1024) });
    await client.machines.create.mutate({ mac, name: 'node1' });
  });
  afterAll(() => {
    killEverything([daemon.dataDir]);
    bmc.stop();
  });

  const nbdmux = (args: string[], extra: Record<string, string> = {}) => {
    const { NBDMUX_ADMIN_PASSWORD: _password, NBDMUX_BMC_PASSWORD: _bmc, ...env } = process.env;
    return runText(process.execPath, [cli, ...args], { env: { ...env, NBDMUX_URL: daemon.url, ...extra }, timeoutMs: 30_000 });
  };

  it('sets the BMC with the password from the environment, shows it as "set", and powers the machine on and off', async () => {
    const set = await nbdmux(['machines', 'bmc', mac, '--address', '127.0.0.1', '--port', String(bmc.port), '--user', bmc.user], {
      NBDMUX_BMC_PASSWORD: bmc.password,
    });
    expect(set).toMatchObject({ code: 0, stdout: `BMC of ${mac}: admin@127.0.0.1:${bmc.port}, password set\n` });
    expect(await nbdmux(['power', mac, 'on'])).toMatchObject({ code: 0, stdout: `${mac} on: Chassis Power Control: Up/On\n` });
    expect(await nbdmux(['power', mac, 'status'])).toMatchObject({ code: 0, stdout: `${mac} status: on\n` });
    expect(bmc.processRunning()).toBe(true);

    const off = await api(daemon, 'POST', `/machines/${mac}/power`, { action: 'off' });
    expect([off.status, off.json]).toMatchObject([200, { ok: true, action: 'off' }]);
    expect(bmc.processRunning()).toBe(false);
    const shown = await nbdmux(['machines', 'show', mac]);
    expect(shown.stdout).toMatch(new RegExp(`\\nbmc +admin@127\\.0\\.0\\.1:${bmc.port}, password set\\n`));
    expect((await api(daemon, 'GET', `/machines/${mac}`)).text).not.toContain(bmc.password);

    expect(await nbdmux(['power', mac, 'sideways'])).toMatchObject({ code: 2 });
  });

  it('reimages in one command, each step shown; a wrong password is a 502 saying so, and exit 1 from the CLI', async () => {
    const reimaged = await nbdmux(['reimage', mac, '--export', 'deb']);
    expect(reimaged.code).toBe(0);
    expect(reimaged.stdout.split('\n').map((line) => line.split(/ +/).slice(0, 2).join(' '))).toEqual([
      'ok status',
      'ok export',
      'ok pxe',
      'ok on',
      `${mac} is`,
      '',
    ]);
    expect(bmc.bootDevice()).toBe('pxe');

    const wrong = await api(daemon, 'PUT', `/machines/${mac}/bmc`, {
      address: '127.0.0.1',
      port: bmc.port,
      user: 'admin',
      password: 'nope',
    });
    expect(wrong).toMatchObject({ status: 200, json: { password: 'set' } });
    const refused = await api(daemon, 'POST', `/machines/${mac}/power`, { action: 'off' });
    expect(refused.status).toBe(502);
    expect(refused.json.error.message).toMatch(/refused the user name or password \(> RAKP 2 HMAC is invalid/);
    const cliRefused = await nbdmux(['power', mac, 'off']);
    expect(cliRefused.code).toBe(1);
    expect(cliRefused.stderr).toMatch(/^nbdmux power: the BMC of node1 .* refused the user name or password/);
    expect(bmc.processRunning()).toBe(true);

    expect((await api(daemon, 'DELETE', `/machines/${mac}/bmc`)).status).toBe(204);
    expect((await api(daemon, 'POST', `/machines/${mac}/power`, { action: 'status' })).status).toBe(412);
  });

  it('a profile: its credentials from the CLI, then power and reimage of all its machines, one line per machine, from the CLI and REST', async () => {
    const [m2, m3] = ['52:54:00:00:04:02', '52:54:00:00:04:03'];
    expect((await api(daemon, 'POST', '/profiles', { name: 'rack3' })).status).toBe(201);
    await client.machines.create.mutate({ mac: m2, name: 'rack3-a', profile: 'rack3' });
    await client.machines.create.mutate({ mac: m3, name: 'rack3-b', profile: 'rack3' });
    expect(await nbdmux(['profiles', 'bmc', 'rack3', '--user', bmc.user], { NBDMUX_BMC_PASSWORD: bmc.password })).toMatchObject({
      code: 0,
      stdout: 'BMC credentials of profile rack3: user admin, password set\n',
    });
    expect(await nbdmux(['machines', 'bmc', m2, '--address', '127.0.0.1', '--port', String(bmc.port)])).toMatchObject({
      code: 0,
      stdout: `BMC of ${m2}: admin@127.0.0.1:${bmc.port}, password set (user and password from its profile)\n`,
    });

    const power = await nbdmux(['profiles', 'power', 'rack3', 'status']);
    expect(power.code).toBe(1);
    expect(power.stdout).toMatch(
      new RegExp(`^ok +rack3-a \\(${m2}\\) status: (on|off)\nFAILED rack3-b \\(${m3}\\) status: rack3-b .* has no BMC set`),
    );
    const rest = await api(daemon, 'POST', '/profiles/rack3/power', { action: 'status' });
    expect([rest.status, rest.json.results.map((r: { name: string; ok: boolean }) => [r.name, r.ok])]).toEqual([
      200,
      [
        ['rack3-a', true],
        ['rack3-b', false],
      ],
    ]);

    const reimaged = await nbdmux(['profiles', 'reimage', 'rack3', '--export', 'deb']);
    expect(reimaged.code).toBe(1);
    // On, or cycled when the earlier tests left the one simulated machine running.
    expect(
      reimaged.stdout
        .replace(/\) (on|cycle):/, ') POWERED:')
        .split('\n')
        .map((line) => line.split(/ +/).slice(0, 4).join(' ')),
    ).toEqual([`ok rack3-a (${m2}) POWERED:`, `FAILED rack3-b (${m3}) status:`, 'profile rack3 boots deb:', '']);
    expect(reimaged.stdout).toContain('1 of 2 machine(s) rebooting now, the others at their next boot');
    const byRest = await api(daemon, 'POST', '/profiles/rack3/reimage', { export: 'nope' });
    expect([byRest.status, byRest.json.error.message]).toEqual([400, 'export: no export "nope"; GET /exports lists them']);
    expect((await api(daemon, 'GET', '/profiles/rack3')).json.bmc).toMatchObject({ user: 'admin', password: 'set' });
    expect((await api(daemon, 'DELETE', '/profiles/rack3/bmc')).status).toBe(204);
    expect((await api(daemon, 'POST', `/machines/${m2}/power`, { action: 'status' })).status).toBe(412);
  });
});
