import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, openDashboard } from './helpers/browser.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, startSlowReader } from '../testkit/nbd.js';
import { skipWithout } from './helpers/tools.js';

const artifacts = path.resolve('test-artifacts');

describe.skipIf(skipWithout('/usr/bin/chromium'))('the dashboard in a real browser', () => {
  let daemon: RunningDaemon;
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  let page: Page;
  let images: string;
  const dataDirs: string[] = [];

  beforeAll(async () => {
    daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    images = tempDir('nbdmux-images-');
    browser = await launchBrowser();
    page = await openDashboard(browser.context, daemon.url);
    // No admin password in this daemon: the page must say that anyone can change exports.
    await page.locator('#open-banner').waitFor({ state: 'visible' });
    expect(await page.locator('#logout').isVisible()).toBe(false);
  });
  afterAll(async () => {
    await browser?.close();
    killEverything(dataDirs);
  });

  const exportRow = (name: string) => page.locator(`#exports tr[data-export="${name}"]`);
  /** Follows a link as a reader would: the page changes without a reload, its live connection stays. */
  const go = (hash: string) => page.evaluate(`location.hash = ${JSON.stringify(hash)}`);

  it('shows an export created through REST within a second, without a reload', async () => {
    const image = makeImage(images, 'debian.img', 3 * 1024 * 1024);
    const sent = Date.now();
    expect((await api(daemon, 'POST', '/exports', { name: 'debian', file: image })).status).toBe(201);
    await exportRow('debian').waitFor({ timeout: 1000 });
    console.log(`REST create to row in the page: ${Date.now() - sent} ms`);
    await expect(exportRow('debian').locator('td').nth(2).textContent()).resolves.toBe('3.0 MiB');
    // The row says the export cannot boot; its page, reached from the row, says why and gives the attach lines.
    await expect(exportRow('debian').locator('td[data-label="Boot"]').textContent()).resolves.toBe('not ready');
    await exportRow('debian').getByRole('link', { name: 'debian' }).click();
    await page.locator('#attach summary').click();
    await expect(page.locator('#attach .attach code').allTextContents()).resolves.toEqual([
      `nbd-client 127.0.0.1 ${daemon.nbdPort} -N debian /dev/nbd0`,
      `nbdroot=127.0.0.1:${daemon.nbdPort}/debian`,
      `chain ${daemon.url}/boot/debian.ipxe`,
    ]);
    // This daemon has no ramboot kit: the export's page says it cannot boot, and why, in full.
    await expect(page.locator('#export-facts dd.boot').textContent()).resolves.toMatch(
      /^not ready \(no kernel to boot: .*--ramboot-kit DIR \(a directory ramboot\/cached-build printed\)\)$/,
    );
    await expect(page.locator('#export-facts dd.cmdline').textContent()).resolves.toBe('console=tty0 console=ttyS0,115200');
    await go('#/');
    // A machine asking for the boot menu shows in the event log in words.
    expect((await api(daemon, 'GET', '/boot.ipxe')).status).toBe(200);
    const menuFetched = page.locator('#events li[data-type="boot.script"] .what').first();
    await menuFetched.waitFor({ timeout: 2000 });
    await expect(menuFetched.textContent()).resolves.toBe('127.0.0.1 fetched the boot menu (no export ready)');
    await page.locator('#events li[data-type="export.created"]').first().waitFor({ timeout: 1000 });
    await expect(page.locator('#events li[data-type="export.created"] .what').first().textContent()).resolves.toBe(
      `debian → ${fs.realpathSync(image)} (3.0 MiB, read-only) by open from 127.0.0.1`,
    );
  });

  it('shows a connected client in the connections table and drops it when it ends', async () => {
    const reader = startSlowReader(daemon.nbdUri('debian'), path.join(images, 'stop-dashboard-reader'));
    await reader.connected;
    const row = page.locator('#connections tr[data-connection]');
    await row.filter({ hasText: 'debian' }).waitFor({ timeout: 3000 });
    await expect(row.first().locator('td.client').textContent()).resolves.toMatch(/^127\.0\.0\.1:\d+$/);
    await expect(exportRow('debian').locator('td.connections').textContent()).resolves.toBe('1');

    fs.mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'dashboard.png'), fullPage: true });

    await reader.finish();
    await row.first().waitFor({ state: 'detached', timeout: 3000 });
  });

  it('adds an export from the form, showing the API message beside a bad field', async () => {
    await page.fill('#add-export input[name=name]', 'from-page');
    await page.fill('#add-export input[name=file]', 'relative.img');
    await page.click('#add-export button[type=submit]');
    await expect.poll(() => page.locator('[data-error-for="file"]').textContent()).toBe('must be an absolute path (starting with /)');

    await page.fill('#add-export input[name=file]', makeImage(images, 'page.img', 1024 * 1024));
    await page.click('#add-export button[type=submit]');
    await exportRow('from-page').waitFor({ timeout: 2000 });
    await expect.poll(() => page.locator('[data-error-for="file"]').textContent()).toBe('');
  });

  it('removes an export from the page after asking', async () => {
    const questions: string[] = [];
    page.once('dialog', (dialog) => (questions.push(dialog.message()), void dialog.accept()));
    await exportRow('from-page').getByRole('button', { name: 'Remove', exact: true }).click();
    await exportRow('from-page').waitFor({ state: 'detached', timeout: 2000 });
    expect(questions[0]).toMatch(/Remove "from-page"\?/);
    expect((await api(daemon, 'GET', '/exports')).json.map((e: { name: string }) => e.name)).toEqual(['debian']);
  });

  it('shows the outage when the daemon dies and recovers by itself when it is back', async () => {
    await daemon.stop('SIGKILL');
    await page.waitForSelector('body[data-link="down"]', { timeout: 5000 });
    expect(await page.locator('#outage').isVisible()).toBe(true);

    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--port', String(daemon.httpPort)] });
    await page.waitForSelector('body[data-link="up"]', { timeout: 10_000 });
    expect(await page.locator('#outage').isVisible()).toBe(false);

    // Events from the new run arrive through the resumed stream.
    expect(
      (await api(daemon, 'POST', '/exports', { name: 'after-restart', file: makeImage(images, 'after.img', 1024 * 1024) })).status,
    ).toBe(201);
    await exportRow('after-restart').waitFor({ timeout: 2000 });
    await page.locator('#events li[data-type="daemon.started"]').first().waitFor({ timeout: 2000 });
    const created = await page.locator('#events li[data-type="export.created"]').count();
    expect(created).toBe(3);
  });

  it('stays usable in a narrow window', async () => {
    await page.setViewportSize({ width: 390, height: 800 });
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    expect(overflow).toBeLessThanOrEqual(0);
    await page.screenshot({ path: path.join(artifacts, 'dashboard-narrow.png'), fullPage: true });
  });
});
