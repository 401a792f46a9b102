import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import {
  bootGuest,
  debianImage,
  guestHttpHost,
  rambootKit,
  type Guest,
  type RambootKit,
  type SerialLine,
  textAfter,
  registerImageCopy,
} from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * The cloud-init proof of issue 21, from qemu's own PXE ROM: a Debian 12 image with cloud-init
 * boots as two machines of one profile; ramboot writes each its NoCloud seed, and cloud-init
 * renders the profile's jinja user-data with each machine's own meta-data. One machine adds its
 * own user-data, which cloud-init merges after the profile's. A changed profile shows at the next
 * boot. (The plain Debian image, without cloud-init, is machines-boot.test.ts's.)
 */
const timeoutSeconds = 900;
const nodeA = { mac: '52:54:00:00:21:0a', name: 'ci-node-a', from: '127.0.0.2' };
const nodeB = { mac: '52:54:00:00:21:0b', name: 'ci-node-b', from: '127.0.0.3' };

/** A runcmd line that writes `marker` and the machine's own meta-data, as cloud-init renders them, to the console. */
const profileUserData = (marker: string) =>
  `## template: jinja\n#cloud-config\nruncmd:\n  - echo "nbdmux-cloud-init ${marker} {{ v1.local_hostname }} {{ ds.meta_data.instance_id }}" >/dev/console\n`;
const ownUserData = '#cloud-config\nruncmd:\n  - echo "nbdmux-cloud-init own-part" >/dev/console\n';

interface MachineJson {
  timeline: Record<string, string>;
  stage: string | null;
}

describe.skipIf(skipWithout('qemu-system-x86_64'))('cloud-init: per-machine configuration from the NoCloud seed, under qemu', () => {
  const dir = tempDir('nbdmux-cloud-init-boot-');
  const logs = path.resolve('test-artifacts', 'cloud-init-boot');
  let kit: RambootKit;
  let daemon: RunningDaemon;
  const guests: Guest[] = [];

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    // mmdebstrap with cloud-init's Python took 38 minutes on this 2-core machine under load.
    const image = await debianImage(3_000_000, 'cloud-init');
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon({ args: ['--ramboot-kit', kit.dir, '--nbd-public-port', '10809', '--allowed-host', guestHttpHost] });
    await registerImageCopy(daemon, dir, 'debian-ci', image.file);
    fs.writeFileSync(path.join(dir, 'by-mac.ipxe'), `#!ipxe\nchain http://${guestHttpHost}/boot.ipxe?mac=\${net0/mac}\n`);
    const profile = await api(daemon, 'POST', '/profiles', { name: 'rack', export: 'debian-ci', userData: profileUserData('v1') });
    if (profile.status !== 201) throw new Error(`creating the profile failed (${profile.status}): ${profile.text}`);
    for (const [node, own] of [
      [nodeA, { userData: ownUserData }],
      [nodeB, {}],
    ] as const) {
      const reply = await api(daemon, 'POST', '/machines', { mac: node.mac, name: node.name, profile: 'rack', ...own });
      if (reply.status !== 201) throw new Error(`adding ${node.name} failed (${reply.status}): ${reply.text}`);
    }
    await inspectedBoots(daemon, 30_000);
  }, 3_600_000);

  afterAll(() => {
    for (const guest of guests) guest.kill();
    killEverything([daemon.dataDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const boot = (node: typeof nodeA, log: string): Guest => {
    const guest = bootGuest({
      kit,
      kernel: 'vmlinuz',
      nbdPort: daemon.nbdPort,
      append: '',
      pxe: { tftpDir: dir, bootfile: 'by-mac.ipxe', httpPort: daemon.httpPort },
      serialLog: path.join(logs, `${log}.log`),
      timeoutSeconds,
      sourceAddress: node.from,
      memoryMiB: 1024,
      // PCI slot 2: the slot the image's /etc/network/interfaces (ens2) was written for.
      nicOptions: `mac=${node.mac},addr=2`,
    });
    guests.push(guest);
    return guest;
  };
  const consoleText = (lines: SerialLine[]) => lines.map((line) => line.text).join('\n');

  /** Seconds from the script to `up`, and what the seed cost ramboot, as the test reports them. */
  const figures = async (node: typeof nodeA, lines: SerialLine[]) => {
    const row = await waitFor(`${node.name} off`, async () => {
      const current = (await api(daemon, 'GET', `/machines/${node.mac}`)).json as MachineJson;
      return current.stage === 'off' ? current : undefined;
    });
    const up = (Date.parse(row.timeline.up!) - Date.parse(row.timeline.script!)) / 1000;
    const seed = /cloud-init seed: wrote (.*)in ([\d.]+)s/.exec(consoleText(lines));
    console.log(`cloud-init-boot: ${node.name}: script to up ${up.toFixed(1)} s; seed ${seed?.[1]?.trim()} fetched in ${seed?.[2]} s`);
    return { up, seed };
  };

  it(
    "boots two machines of one profile, each with its own host name and the profile's rendered user-data, one with its own merged in",
    async () => {
      const a = boot(nodeA, 'node-a');
      const b = boot(nodeB, 'node-b');
      const [endA, endB] = await Promise.all([a.exited, b.exited]);
      for (const [guest, end, node] of [
        [a, endA, nodeA],
        [b, endB, nodeB],
      ] as const) {
        const lines = guest.lines();
        const text = consoleText(lines);
        expect(end.code, `${node.name}: qemu did not power off by itself\n${text.slice(-4000)}`).toBe(0);
        expect(text).not.toContain('ramboot: FAILED');
        expect(textAfter(lines, 'nbdmux-boot-check: hostname')).toBe(node.name);
        // Rendered by cloud-init from this machine's meta-data: its host name and instance-id.
        expect(text).toMatch(new RegExp(`nbdmux-cloud-init v1 ${node.name} nbdmux-[0-9a-f]{20}`));
        expect(text.includes('nbdmux-cloud-init own-part')).toBe(node === nodeA);
        const { seed } = await figures(node, lines);
        expect(seed?.[1]).toBe('meta-data user-data ');
      }
    },
    (timeoutSeconds + 120) * 1000,
  );

  it(
    "shows a changed profile's user-data at the machine's next boot",
    async () => {
      expect((await api(daemon, 'PATCH', '/profiles/rack', { userData: profileUserData('v2') })).status).toBe(200);
      const b = boot(nodeB, 'node-b-again');
      const end = await b.exited;
      const lines = b.lines();
      const text = consoleText(lines);
      expect(end.code, text.slice(-4000)).toBe(0);
      expect(text).toMatch(new RegExp(`nbdmux-cloud-init v2 ${nodeB.name} nbdmux-[0-9a-f]{20}`));
      expect(text).not.toContain('nbdmux-cloud-init v1');
      await figures(nodeB, lines);
    },
    (timeoutSeconds + 120) * 1000,
  );

  it(
    'boots the same image without a seed as before: nothing written, cloud-init finds no data source, systemd running',
    async () => {
      // The profile's document gone, nodeB has none: its seed answers 404 and ramboot writes nothing.
      expect((await api(daemon, 'PATCH', '/profiles/rack', { userData: null })).status).toBe(200);
      const b = boot(nodeB, 'node-b-no-seed');
      const end = await b.exited;
      const lines = b.lines();
      const text = consoleText(lines);
      expect(end.code, text.slice(-4000)).toBe(0);
      expect(text).not.toContain('ramboot: FAILED');
      expect(text).not.toContain('cloud-init seed: wrote');
      expect(text).not.toContain('nbdmux-cloud-init');
      expect(textAfter(lines, 'nbdmux-boot-check: hostname')).toBe(nodeB.name);
      expect(textAfter(lines, 'nbdmux-boot-check: system')).toBe('running');
    },
    (timeoutSeconds + 120) * 1000,
  );
});
