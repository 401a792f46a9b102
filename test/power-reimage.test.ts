import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { runText } from '../testkit/process.js';
import { startSimulatedBmc, type SimulatedBmc } from './helpers/ipmi-sim.js';
import { debianImage, guestCommand, guestHttpHost, rambootKit } from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

const cli = fileURLToPath(new URL('../dist/src/operator-cli/main.js', import.meta.url));
const node = { mac: '52:54:00:00:05:01', name: 'rack3-node01', from: '127.0.0.5' };
const timeoutSeconds = 600;

/**
 * Issue 21's power proof: a qemu guest behind ipmi_sim (power on starts it, power off kills it),
 * reimaged with one `nbdmux reimage` into a Debian export it PXE-boots from nbdmux until its stage is `up`.
 */
describe.skipIf(skipWithout('qemu-system-x86_64') || skipWithout('ipmi_sim'))('reimage a machine behind a real BMC simulator', () => {
  const dir = tempDir('nbdmux-power-reimage-');
  const logs = path.resolve('test-artifacts', 'power-reimage');
  let daemon: RunningDaemon;
  let bmc: SimulatedBmc;

  beforeAll(async () => {
    const kit = await rambootKit(540_000);
    const debian = await debianImage(1_200_000);
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon({ args: ['--ramboot-kit', kit.dir, '--nbd-public-port', '10809', '--allowed-host', guestHttpHost] });
    const copy = path.join(dir, 'debian.img');
    execFileSync('cp', ['--sparse=always', debian.file, copy]);
    const reply = await api(daemon, 'POST', '/exports', { name: 'debian', file: copy, cmdline: 'console=ttyS0,115200 panic=-1' });
    if (reply.status !== 201) throw new Error(`registering debian failed (${reply.status}): ${reply.text}`);
    fs.writeFileSync(path.join(dir, 'by-mac.ipxe'), `#!ipxe\nchain http://${guestHttpHost}/boot.ipxe?mac=\${net0/mac}\n`);
    await inspectedBoots(daemon, 60_000);
    const machine = guestCommand({
      kit,
      kernel: 'vmlinuz',
      nbdPort: daemon.nbdPort,
      append: '',
      pxe: { tftpDir: dir, bootfile: 'by-mac.ipxe', httpPort: daemon.httpPort },
      serialLog: path.join(logs, 'guest.log'),
      timeoutSeconds,
      sourceAddress: node.from,
      memoryMiB: 1024,
      // PCI slot 2: the slot the image's /etc/network/interfaces (ens2) was written for.
      nicOptions: `mac=${node.mac},addr=2`,
    });
    bmc = await startSimulatedBmc({ machine });
    await api(daemon, 'POST', '/machines', { mac: node.mac, name: node.name });
  }, 1_800_000);

  afterAll(() => {
    bmc?.stop();
    killEverything([daemon.dataDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const nbdmux = (args: string[], extra: Record<string, string> = {}) => {
    const { NBDMUX_ADMIN_PASSWORD: _password, NBDMUX_BMC_PASSWORD: _bmc, ...env } = process.env;
    return runText(process.execPath, [cli, ...args], { env: { ...env, NBDMUX_URL: daemon.url, ...extra }, timeoutMs: 60_000 });
  };

  it(
    'reimage powers the guest on, it PXE-boots the export to `up`; wrong credentials change nothing; power off turns it off',
    async () => {
      const set = ['machines', 'bmc', node.mac, '--address', '127.0.0.1', '--port', String(bmc.port), '--user', bmc.user];
      expect((await nbdmux(set, { NBDMUX_BMC_PASSWORD: 'wrong' })).code).toBe(0);
      const refused = await nbdmux(['reimage', node.mac, '--export', 'debian']);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toMatch(/^FAILED status +the BMC of rack3-node01 .* refused the user name or password/);
      expect(bmc.processRunning()).toBe(false);
      expect((await api(daemon, 'GET', `/machines/${node.mac}`)).json.export).toBeNull();

      expect((await nbdmux(set, { NBDMUX_BMC_PASSWORD: bmc.password })).code).toBe(0);
      const started = Date.now();
      const reimaged = await nbdmux(['reimage', node.mac, '--export', 'debian']);
      expect(reimaged).toMatchObject({ code: 0 });
      expect(bmc.processRunning()).toBe(true);
      let last: { stage: string | null; timeline: Record<string, string> } = { stage: null, timeline: {} };
      const up = await waitFor(
        () => `stage up (last: ${JSON.stringify(last)})`,
        async () => {
          last = (await api(daemon, 'GET', `/machines/${node.mac}`)).json;
          return last.stage === 'up' ? last : undefined;
        },
        timeoutSeconds * 1000,
        1000,
      );
      const seconds = (Date.now() - started) / 1000;
      console.log(`reimage to up: ${seconds.toFixed(1)} s under TCG; timeline ${JSON.stringify(up.timeline)}`);
      expect(Object.keys(up.timeline)).toEqual(['script', 'kernel', 'initrd', 'attached', 'root', 'up']);

      expect(await nbdmux(['power', node.mac, 'off'])).toMatchObject({ code: 0 });
      expect(await nbdmux(['power', node.mac, 'status'])).toMatchObject({ code: 0, stdout: `${node.mac} status: off\n` });
      expect(bmc.processRunning()).toBe(false);
    },
    timeoutSeconds * 1000 + 120_000,
  );
});
