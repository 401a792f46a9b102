import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { launchBrowser, openDashboard } from './helpers/browser.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import {
  bootGuest,
  debianImage,
  guestHttpHost,
  rambootKit,
  type DebianImage,
  type Guest,
  type RambootKit,
  type SerialLine,
  textAfter,
  registerImageCopy,
} from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * The proof of issue 12, from qemu's own PXE ROM with nbdmux as the whole boot server: the ROM
 * chains /boot.ipxe?mac=${net0/mac}, so each machine gets its own script. Each guest's forwarded
 * connections come from its own loopback address (127.0.0.2, .3, ...), as machines on a lab
 * network have their own: nbdmux matches a boot's connections and reports by it.
 */
const debianTimeoutSeconds = 600;
const busyboxTimeoutSeconds = 180;

const nodeA = { mac: '52:54:00:00:00:0a', name: 'node-a', from: '127.0.0.2' };
const nodeB = { mac: '52:54:00:00:00:0b', name: 'node-b', from: '127.0.0.3' };
const keeper = { mac: '52:54:00:00:00:0c', name: 'keeper', from: '127.0.0.4' };

interface MachineJson {
  name: string;
  machineId: string;
  stage: string | null;
  stageDetail: string | null;
  timeline: Record<string, string>;
}

describe.skipIf(skipWithout('qemu-system-x86_64') || skipWithout('/usr/bin/chromium'))(
  'machines: boot by MAC, identity, stages and persistent state, under qemu',
  () => {
    const dir = tempDir('nbdmux-machines-boot-');
    const logs = path.resolve('test-artifacts', 'machines-boot');
    let kit: RambootKit;
    let debian: DebianImage;
    let daemon: RunningDaemon;
    const guests: Guest[] = [];

    beforeAll(async () => {
      kit = await rambootKit(540_000);
      debian = await debianImage(1_200_000);
      fs.mkdirSync(logs, { recursive: true });
      daemon = await startDaemon({ args: ['--ramboot-kit', kit.dir, '--nbd-public-port', '10809', '--allowed-host', guestHttpHost] });
      for (const [name, image] of [
        ['debian', debian.file],
        ['busybox', kit.images.gpt],
      ] as const) {
        await registerImageCopy(daemon, dir, name, image);
      }
      // iPXE fills in ${net0/mac}: one boot file for every machine.
      fs.writeFileSync(path.join(dir, 'by-mac.ipxe'), `#!ipxe\nchain http://${guestHttpHost}/boot.ipxe?mac=\${net0/mac}\n`);
      for (const [machine, body] of [
        [nodeA, { export: 'debian' }],
        [nodeB, { export: 'debian' }],
        [keeper, { export: 'busybox', persistent: true, stateSize: '64M' }],
      ] as const) {
        const reply = await api(daemon, 'POST', '/machines', { mac: machine.mac, name: machine.name, ...body });
        if (reply.status !== 201) throw new Error(`adding ${machine.name} failed (${reply.status}): ${reply.text}`);
      }
      await inspectedBoots(daemon, 30_000);
    }, 1_800_000);

    afterAll(() => {
      for (const guest of guests) guest.kill();
      killEverything([daemon.dataDir]);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    function pxeBoot(
      machine: { mac: string; from: string },
      log: string,
      timeoutSeconds: number,
      extra: { nicOptions?: string; memoryMiB?: number } = {},
    ): Guest {
      const guest = bootGuest({
        kit,
        kernel: 'vmlinuz',
        nbdPort: daemon.nbdPort,
        append: '',
        pxe: { tftpDir: dir, bootfile: 'by-mac.ipxe', httpPort: daemon.httpPort },
        serialLog: path.join(logs, `${log}.log`),
        timeoutSeconds,
        sourceAddress: machine.from,
        memoryMiB: extra.memoryMiB,
        nicOptions: [`mac=${machine.mac}`, extra.nicOptions].filter(Boolean).join(','),
      });
      guests.push(guest);
      return guest;
    }

    const machine = async (mac: string) => (await api(daemon, 'GET', `/machines/${mac}`)).json as MachineJson;
    /** The value of the first console line `PREFIX VALUE`. */
    const consoleText = (lines: SerialLine[]) =>
      lines
        .map((line) => line.text)
        .join('\n')
        .slice(-3000);

    it(
      'boots two machines from one Debian image at once, each with its own hostname and machine-id, both reaching up',
      async () => {
        // PCI slot 2: the slot the image's /etc/network/interfaces (ens2) was written for.
        const a = pxeBoot(nodeA, 'node-a', debianTimeoutSeconds, { nicOptions: 'addr=2', memoryMiB: 1024 });
        const b = pxeBoot(nodeB, 'node-b', debianTimeoutSeconds, { nicOptions: 'addr=2', memoryMiB: 1024 });
        // What the dashboard showed, every stage each row took, recorded in the page itself.
        const browser = await launchBrowser();
        const page = await openDashboard(browser.context, daemon.url);
        await page.evaluate(`(() => {
        const seen = {};
        window.stagesSeen = seen;
        const note = () => {
          for (const row of document.querySelectorAll('#machines tr[data-machine]')) {
            const stages = (seen[row.dataset.machine] ??= []);
            if (!stages.includes(row.dataset.stage)) stages.push(row.dataset.stage);
          }
        };
        note();
        new MutationObserver(note).observe(document.querySelector('#machines'), { subtree: true, childList: true, attributes: true });
      })()`);
        // What GET /machines showed while they booted: `up` lasts only until the image's check powers it off.
        const seen = new Map<string, Set<string>>([
          [nodeA.name, new Set()],
          [nodeB.name, new Set()],
        ]);
        let booting = true;
        const watching = (async () => {
          while (booting) {
            for (const row of (await api(daemon, 'GET', '/machines')).json as MachineJson[]) seen.get(row.name)?.add(row.stage ?? 'none');
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
        })();
        const [endA, endB] = await Promise.all([a.exited, b.exited]).finally(() => (booting = false));
        await watching;
        for (const [guest, end, node] of [
          [a, endA, nodeA],
          [b, endB, nodeB],
        ] as const) {
          const lines = guest.lines();
          expect(end.code, `${node.name}: qemu did not power off by itself\n${consoleText(lines)}`).toBe(0);
          expect(textAfter(lines, 'nbdmux-boot-check: system')).toBe('running');
          expect(textAfter(lines, 'nbdmux-boot-check: hostname')).toBe(node.name);
          expect(textAfter(lines, 'nbdmux-boot-check: machine-id')).toBe((await machine(node.mac)).machineId);
        }
        expect((await machine(nodeA.mac)).machineId).not.toBe((await machine(nodeB.mac)).machineId);
        expect([...seen.get(nodeA.name)!]).toContain('up');
        expect([...seen.get(nodeB.name)!]).toContain('up');
        // The page has seen the end too once the daemon has: `off` follows the NBD connection's close, after qemu's exit.
        const dashboardSaw = await waitFor('the dashboard to show both off', async () => {
          const saw = await page.evaluate<Record<string, string[]>>('window.stagesSeen');
          return [nodeA, nodeB].every((node) => saw[node.mac]?.at(-1) === 'off') ? saw : undefined;
        });
        await browser.close();
        // In the order of a boot (a snapshot may carry two quick steps at once), up among them.
        const order = ['never', 'script', 'kernel', 'initrd', 'attached', 'root', 'up', 'off'];
        for (const node of [nodeA, nodeB]) {
          const stages = dashboardSaw[node.mac]!;
          expect(stages, `the dashboard's ${node.name} row`).toContain('up');
          expect([...stages].sort((x, y) => order.indexOf(x) - order.indexOf(y))).toEqual(stages);
        }
        for (const node of [nodeA, nodeB]) {
          const row = await waitFor(`${node.name} off`, async () => {
            const current = await machine(node.mac);
            return current.stage === 'off' ? current : undefined;
          });
          expect(Object.keys(row.timeline)).toEqual(['script', 'kernel', 'initrd', 'attached', 'root', 'up', 'off']);
          expect(row.stageDetail).toBeNull();
          const stages = Object.fromEntries(Object.entries(row.timeline).map(([stage, at]) => [stage, Date.parse(at)]));
          console.log(
            `machines-boot: ${node.name}: ${Object.entries(stages)
              .map(([stage, at]) => `${stage} +${((at - stages.script!) / 1000).toFixed(1)}s`)
              .join(', ')}`,
          );
        }
        // Both show their own boot: neither took the other's connection for its own.
        const listed = (await api(daemon, 'GET', '/machines')).json as Array<MachineJson & { address: string }>;
        expect(listed.filter((row) => row.name !== 'keeper').map((row) => [row.name, row.address])).toEqual([
          [nodeA.name, nodeA.from],
          [nodeB.name, nodeB.from],
        ]);
      },
      (debianTimeoutSeconds + 60) * 1000,
    );

    it(
      'keeps what a persistent machine writes across boots, until a reset',
      async () => {
        const boot = async (log: string) => {
          const guest = pxeBoot(keeper, log, busyboxTimeoutSeconds);
          const { code } = await guest.exited;
          const lines = guest.lines();
          expect(code, consoleText(lines)).toBe(0);
          expect(consoleText(lines)).not.toContain('ramboot: FAILED');
          // The state's connection must be gone before the next boot attaches it again.
          await waitFor(
            `${log}: detached`,
            async () => (await api(daemon, 'GET', `/machines/${keeper.mac}`)).json.attached === false || undefined,
            20_000,
          );
          return {
            persisted: textAfter(lines, 'ramtest: persisted'),
            wrote: textAfter(lines, 'ramtest: wrote-persisted'),
            mountedRw: textAfter(lines, 'ramtest: mount rw'),
          };
        };
        const first = await boot('keeper-1');
        expect(first.persisted).toBe('none');
        expect(first.mountedRw).toMatch(/^\/dev\/nbd1 ext4 rw/);
        const second = await boot('keeper-2');
        expect(second.persisted).toBe(`boot ${first.wrote}`);
        expect((await machine(keeper.mac)).timeline).toHaveProperty('root');
        expect((await api(daemon, 'POST', `/machines/${keeper.mac}/reset`)).status).toBe(204);
        const third = await boot('keeper-3');
        expect(third.persisted).toBe('none');
      },
      4 * (busyboxTimeoutSeconds + 30) * 1000,
    );

    it(
      'refuses a second boot of a machine whose state is attached, while the first boot keeps reading its disk',
      async () => {
        expect((await api(daemon, 'PATCH', `/machines/${keeper.mac}`, { cmdline: 'ramtest=hold' })).status).toBe(200);
        const first = pxeBoot(keeper, 'keeper-held', busyboxTimeoutSeconds);
        await first.waitForLine(/ramtest: read 1 /, 120_000);
        // The same MAC from another address: a second machine claiming to be this one.
        const twin = pxeBoot({ mac: keeper.mac, from: '127.0.0.6' }, 'keeper-twin', busyboxTimeoutSeconds);
        const failed = await twin.waitForLine(/ramboot: FAILED: /, 120_000);
        expect(failed.text).toMatch(/cannot attach export __state-52540000000c from 10\.0\.2\.100:10809/);
        expect((await twin.exited).code).toBe(0);
        expect(await machine(keeper.mac)).toMatchObject({
          stage: 'failed',
          stageDetail: expect.stringContaining('cannot attach export __state-52540000000c'),
        });
        const events = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 200 });
        expect(events.find((event) => event.type === 'connection.refused' && event.details.client === '127.0.0.6')?.details).toMatchObject({
          reason: expect.stringMatching(/^the state of machine keeper is already attached \(connection \d+ from 127\.0\.0\.4\)/),
        });

        const reads = () => first.lines().flatMap((line) => /ramtest: read \d+ (\S+)/.exec(line.text)?.[1] ?? []);
        const readsBefore = reads().length;
        await waitFor('the first boot reading on', () => reads().length >= readsBefore + 4 || undefined, 60_000, 200);
        expect(new Set(reads())).toEqual(new Set([kit.payloadSha256]));
        first.kill();
      },
      2 * (busyboxTimeoutSeconds + 30) * 1000,
    );

    it(
      'records an unknown MAC as discovered and offers it the menu',
      async () => {
        const stranger = { mac: '52:54:00:00:00:0d', from: '127.0.0.5' };
        const guest = pxeBoot(stranger, 'stranger', busyboxTimeoutSeconds);
        const found = await waitFor(
          'the stranger discovered',
          async () =>
            ((await api(daemon, 'GET', '/machines/discovered')).json as Array<{ mac: string; address: string }>).find(
              (row) => row.mac === stranger.mac,
            ),
          120_000,
          500,
        );
        expect(found.address).toBe(stranger.from);
        // It was answered with the menu (shown on its screen, not its serial console), which waits for a choice nobody makes here.
        const events = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 100 });
        const answered = events.find((event) => event.type === 'boot.script' && event.details.client === stranger.from);
        expect(answered?.details).toMatchObject({ status: 200, menu: 'busybox,debian' });
        guest.kill();
      },
      (busyboxTimeoutSeconds + 30) * 1000,
    );
  },
);
