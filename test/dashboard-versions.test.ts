import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, openDashboard } from './helpers/browser.js';
import { api, killEverything, startDaemon, tempDir, within, type RunningDaemon } from '../testkit/daemon.js';
import { makeTestImage, startImageServer, type ImageServer, type Route } from '../testkit/image-fixtures.js';
import { makeImage, startSlowReader } from '../testkit/nbd.js';
import { skipWithout } from './helpers/tools.js';

const artifacts = path.resolve('test-artifacts');

/** Sends `file` in 64 KiB pieces every 100 ms: an import slow enough for its progress to be seen. */
function serveSlowly(file: string): Route {
  return (_req, res) => {
    const bytes = fs.readFileSync(file);
    res.writeHead(200, { 'content-length': bytes.length });
    let offset = 0;
    const timer = setInterval(() => {
      res.write(bytes.subarray(offset, offset + 65536));
      offset += 65536;
      if (offset >= bytes.length) {
        clearInterval(timer);
        res.end();
      }
    }, 100);
    res.on('close', () => clearInterval(timer));
  };
}

describe.skipIf(skipWithout('/usr/bin/chromium'))('the dashboard with imports and versions, in a real browser', () => {
  let daemon: RunningDaemon;
  let server: ImageServer;
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  let page: Page;
  let images: string;

  beforeAll(async () => {
    images = fs.realpathSync(tempDir('nbdmux-dashboard-versions-'));
    server = await startImageServer({ '/lab.img': serveSlowly(makeTestImage(images, 'lab.img', 2)) });
    daemon = await startDaemon();
    browser = await launchBrowser();
    page = await openDashboard(browser.context, daemon.url);
  });
  afterAll(async () => {
    await browser?.close();
    killEverything([daemon.dataDir]);
    await server?.close();
    fs.rmSync(images, { recursive: true, force: true });
  });

  const exportRow = (name: string) => page.locator(`#exports tr[data-export="${name}"]`);

  it('imports from the form, with a progress bar, rate and time left, until the export serves', async () => {
    await page.fill('#import-image input[name=name]', 'lab');
    await page.fill('#import-image input[name=url]', server.url('/lab.img'));
    await page.fill('#import-image input[name=sha256]', 'not-a-hash');
    await page.click('#import-image button[type=submit]');
    await expect
      .poll(() => page.locator('#import-image [data-error-for="sha256"]').textContent())
      .toBe('must be 64 hexadecimal digits (a sha256)');

    await page.fill('#import-image input[name=sha256]', '');
    await page.click('#import-image button[type=submit]');
    const progress = exportRow('lab').locator('.import[data-import-version="1"]');
    await progress.locator('progress[value]').waitFor({ timeout: 5000 });
    await expect
      .poll(() => progress.locator('small').textContent(), { timeout: 5000 })
      .toMatch(/^downloading [\d.]+ KiB of 2\.0 MiB \(\d+%\), [\d.]+ KiB\/s, \d+s left$/);
    await expect(exportRow('lab').locator('td[data-label="State"] .state').textContent()).resolves.toBe('importing');
    fs.mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'dashboard-import.png'), fullPage: true });

    await exportRow('lab').locator('td[data-label="State"] .state.serving').waitFor({ timeout: 20_000 });
    await expect(exportRow('lab').locator('small.version').textContent()).resolves.toBe('version 1');
    expect(await exportRow('lab').locator('.import').count()).toBe(0);
  });

  it('shows versions with their live connections, and rolls back with a button', async () => {
    const put = api(daemon, 'PUT', '/exports/lab', { file: makeImage(images, 'lab-2.img', 1 << 20) });
    expect((await within('PUT /exports/lab', 15_000, put)).status).toBe(200);
    const reader = startSlowReader(daemon.nbdUri('lab'), path.join(images, 'stop-reader'));
    await within('the reader attaching lab', 15_000, reader.connected);

    // The export's page, reached from its row, has its versions.
    await exportRow('lab').getByRole('link', { name: 'lab' }).click();
    const version = (n: number) => page.locator(`#versions tr[data-version="${n}"]`);
    await expect.poll(() => version(2).locator('td.connections').textContent(), { timeout: 3000 }).toBe('1');
    await expect(version(2).locator('td').first().textContent()).resolves.toBe('2 (current)');
    expect(await version(2).locator('button').count()).toBe(0);

    page.once('dialog', (dialog) => void dialog.accept());
    await version(1).locator('button', { hasText: 'Roll back' }).click();
    await expect.poll(() => version(1).locator('td').first().textContent(), { timeout: 3000 }).toBe('1 (current)');
    await expect.poll(() => exportRow('lab').locator('small.version').textContent()).toBe('version 1');
    // The reader stays on version 2, which the panel still counts.
    await expect(version(2).locator('td.connections').textContent()).resolves.toBe('1');
    await page.screenshot({ path: path.join(artifacts, 'dashboard-versions.png'), fullPage: true });
    await within('the reader reading lab to its end', 15_000, reader.finish());
  });
});
