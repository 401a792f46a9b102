import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, type NbdmuxClient } from '../src/client.js';
import { formatBytes, formatDuration } from '../src/units.js';
import { launchBrowser, openDashboard } from './helpers/browser.js';
import { makeFleet, macOf, type Fleet } from './helpers/fleet.js';
import { killEverything, startDaemon, type RunningDaemon } from '../testkit/daemon.js';
import { readExport, startSlowReader, type SlowReader } from '../testkit/nbd.js';
import { skipWithout } from './helpers/tools.js';

const axeScript = path.resolve('node_modules/axe-core/axe.min.js');
const artifacts = path.resolve('test-artifacts');
/** With NBDMUX_SCREENSHOTS=1 the pictures go where the docs show them. */
const screenshots = process.env.NBDMUX_SCREENSHOTS === '1' ? path.resolve('docs/screenshots') : artifacts;

/** The machine the tests read: persistent, booted up from this host's address, with a live connection. */
const shownMac = macOf(7);
const shownExport = 'arch-rolling';

const pages = [
  { name: 'overview', hash: '#/', ready: '#machines tr[data-machine]' },
  { name: 'machine', hash: `#/machines/${shownMac}`, ready: '#timeline tr[data-stage]' },
  { name: 'export', hash: `#/exports/${shownExport}`, ready: '#versions tr[data-version]' },
] as const;

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: string[] }>;
}

describe.skipIf(skipWithout('/usr/bin/chromium'))(
  'the dashboard with 12 exports and 40 machines, at 1280 and 390 px, light and dark',
  () => {
    let daemon: RunningDaemon;
    let client: NbdmuxClient;
    let fleet: Fleet;
    let reader: SlowReader;
    let browser: Awaited<ReturnType<typeof launchBrowser>>;
    let page: Page;

    beforeAll(async () => {
      daemon = await startDaemon();
      client = createNbdmuxClient({ url: daemon.url });
      fleet = await makeFleet(daemon);
      reader = startSlowReader(daemon.nbdUri(shownExport), path.join(fleet.images, 'stop-reader'));
      await reader.connected;
      browser = await launchBrowser();
      page = await openDashboard(browser.context, daemon.url);
      fs.mkdirSync(screenshots, { recursive: true });
    }, 60_000);
    afterAll(async () => {
      await reader?.finish();
      await browser?.close();
      killEverything(daemon ? [daemon.dataDir] : []);
    });

    async function show(hash: string, ready: string, width: number, scheme: 'light' | 'dark'): Promise<void> {
      await page.setViewportSize({ width, height: 900 });
      await page.emulateMedia({ colorScheme: scheme });
      await page.goto(`${daemon.url}/${hash}`);
      await page.waitForSelector('body[data-link="up"]');
      await page.locator(ready).first().waitFor({ timeout: 5000 });
    }

    for (const width of [1280, 390]) {
      for (const scheme of ['light', 'dark'] as const) {
        for (const { name, hash, ready } of pages) {
          it(`${name} at ${width} px, ${scheme}: no sideways scroll, every action in reach, no serious accessibility violation`, async () => {
            await show(hash, ready, width, scheme);
            // Charts fill as snapshots come: give the page a few.
            await page.waitForTimeout(2500);
            // What opens in place is checked open: the export's attach lines, the machine's edit form.
            // (The page changes by its hash, so a disclosure opened on an earlier visit is still open.)
            if (name === 'export' && (await page.locator('#attach[open]').count()) === 0) await page.locator('#attach summary').click();
            if (name === 'machine') await page.locator('#machine-actions').getByRole('button', { name: 'Edit' }).click();
            const { scrollWidth, innerWidth } = await page.evaluate<{ scrollWidth: number; innerWidth: number }>(
              '({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth })',
            );
            expect(scrollWidth).toBeLessThanOrEqual(innerWidth);

            // Every button of the page (actions, sort headers, copy) lies inside the window's width.
            const buttons = await page.locator('main button:visible').evaluateAll((nodes) =>
              nodes.map((node) => {
                const box = node.getBoundingClientRect();
                return { text: node.textContent, left: box.left, right: box.right };
              }),
            );
            expect(buttons.length).toBeGreaterThan(5);
            for (const button of buttons) {
              expect(button.left, button.text ?? '').toBeGreaterThanOrEqual(0);
              expect(button.right, button.text ?? '').toBeLessThanOrEqual(innerWidth);
            }
            const expected =
              name === 'overview'
                ? ['Remove', 'Add', 'Import', 'Name', 'Stage']
                : name === 'machine'
                  ? ['Edit', 'Reset state', 'Remove', 'Save', 'Cancel']
                  : ['Remove', 'Cut', 'Roll back', 'Version', 'Copy'];
            for (const text of expected)
              await expect(page.locator('main button:visible', { hasText: text }).first().isVisible(), text).resolves.toBe(true);

            await page.addScriptTag({ path: axeScript });
            const violations = await page.evaluate<AxeViolation[]>(
              'axe.run().then((r) => r.violations.map(({ id, impact, help, nodes }) => ({ id, impact, help, nodes: nodes.map((n) => ({ target: n.target })) })))',
            );
            const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
            console.log(
              `${name} ${width} ${scheme}: axe ${serious.length} serious or critical; others: ${violations.map((v) => `${v.id} (${v.impact})`).join(', ') || 'none'}`,
            );
            expect(serious.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual(
              [],
            );

            if (name === 'machine') await page.locator('#edit-machine').getByRole('button', { name: 'Cancel' }).click();
            await page.evaluate('scrollTo(0, 0)');
            const file = path.join(screenshots, `${name}-${width}${scheme === 'dark' ? '-dark' : ''}.png`);
            await page.screenshot({
              path: file,
              fullPage: true,
              clip: { x: 0, y: 0, width, height: name === 'overview' && width === 1280 ? 1350 : 2400 },
            });
          });
        }
      }
    }

    it("shows the machine's boot timeline exactly as machines.get returns it, with the time after its script", async () => {
      await show(`#/machines/${shownMac}`, '#timeline tr[data-stage]', 1280, 'light');
      const machine = await client.machines.get.query({ mac: shownMac });
      const steps = Object.entries(machine.timeline).sort(([, a], [, b]) => a.localeCompare(b));
      expect(steps.map(([stage]) => stage)).toEqual(['script', 'root', 'up']);
      const rows = await page
        .locator('#timeline tr[data-stage]')
        .evaluateAll((trs) =>
          trs.map((tr) => [tr.getAttribute('data-stage'), tr.getAttribute('data-at'), tr.querySelector('td.after')?.textContent]),
        );
      expect(rows).toEqual(steps.map(([stage, at]) => [stage, at, formatDuration(steps[0]![1], at)]));
      // Its live connection is listed under it, with bytes, and its recent boot from the event log.
      await page.locator('#machine-connections tr[data-connection]').first().waitFor({ timeout: 3000 });
      await expect(page.locator('#machine-connections td.sent').first().textContent()).resolves.toMatch(/^\d+(\.\d)? (B|KiB|MiB)$/);
      await page.locator('#boots tr[data-boot]').first().waitFor({ timeout: 3000 });
      // Its throughput over the last minutes, fed by the status stream: the reader's 4 KiB every 50 ms.
      await expect
        .poll(() => page.locator('#machine-chart figcaption').textContent())
        .toMatch(/^Now [\d.]+ KiB\/s, peak [\d.]+ KiB\/s over the last \d+ min\.$/);
      expect(await page.locator('#machine-chart svg polyline').count()).toBe(1);
      // A connection from its address that ended is listed with what it sent, as connections.list counts it.
      await readExport(daemon.nbdUri(shownExport));
      // The daemon records the close a moment after the client is done.
      const endedFromHere = async () =>
        (await client.connections.list.query({ limit: 10 })).filter((c) => !c.live && c.clientAddress === '127.0.0.1');
      await expect.poll(async () => (await endedFromHere()).length, { timeout: 3000 }).toBeGreaterThan(0);
      const ended = await endedFromHere();
      for (const conn of ended) {
        const row = page.locator(`#machine-ended tr[data-connection="${conn.id}"]`);
        await row.waitFor({ timeout: 3000 });
        await expect(row.locator('td.sent').textContent()).resolves.toBe(formatBytes(conn.bytesSent));
      }
      // Its boot from the event log, each stage with the time it took: the same steps as the timeline.
      const [script, root, up] = steps.map(([, at]) => at);
      await expect(page.locator('#boots tr[data-boot] td').nth(1).textContent()).resolves.toBe(
        `script → root (${formatDuration(script!, root!)}) → up (${formatDuration(root!, up!)})`,
      );
    });

    it('gives attach and boot lines with the address the boot scripts use, not the name the page was opened by', async () => {
      // Opened as http://localhost:PORT, the lines still name 127.0.0.1: the initramfs resolves no names.
      const byName = daemon.url.replace('127.0.0.1', 'localhost');
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(`${byName}/#/exports/${shownExport}`);
      await page.waitForSelector('body[data-link="up"]');
      await page.locator('#attach summary').click();
      await page.locator('#attach .attach code').first().waitFor();
      await expect(page.locator('#attach .attach code').allTextContents()).resolves.toEqual([
        `nbd-client 127.0.0.1 ${daemon.nbdPort} -N ${shownExport} /dev/nbd0`,
        `nbdroot=127.0.0.1:${daemon.nbdPort}/${shownExport}`,
        `chain ${byName}/boot/${shownExport}.ipxe`,
      ]);
    });

    it('filters and sorts a table from the keyboard', async () => {
      await show('#/', '#machines tr[data-machine]', 1280, 'light');
      const names = () => page.locator('#machines tr[data-machine] td.name').allTextContents();
      await expect.poll(async () => (await names()).length).toBe(40);
      await page.getByRole('searchbox', { name: 'Search machines' }).fill('rack2');
      await expect.poll(names).toEqual(fleet.machines.filter((m) => m.name.startsWith('rack2')).map((m) => m.name));
      const sortByName = page.locator('#machines-table th button.sort', { hasText: 'Name' });
      await sortByName.focus();
      await page.keyboard.press('Enter');
      await page.keyboard.press('Enter');
      await expect(page.locator('#machines-table th[aria-sort="descending"]').textContent()).resolves.toMatch(/^Name/);
      const expected = fleet.machines
        .filter((m) => m.name.startsWith('rack2'))
        .map((m) => m.name)
        .reverse();
      await expect.poll(names).toEqual(expected);
    });
  },
);
