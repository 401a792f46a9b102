import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, openDashboard } from './helpers/browser.js';
import { killEverything, startDaemon, type RunningDaemon } from '../testkit/daemon.js';
import { skipWithout } from './helpers/tools.js';

describe.skipIf(skipWithout('/usr/bin/chromium'))('the dashboard event log under floods and long gaps', () => {
  let daemon: RunningDaemon;
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  let page: Page;

  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--nbd-allow', '127.0.0.1/32'] });
    browser = await launchBrowser();
    page = await openDashboard(browser.context, daemon.url);
  });
  afterAll(async () => {
    await browser?.close();
    killEverything(daemon ? [daemon.dataDir] : []);
  });

  const refusals = () => page.locator('#events li[data-type="connection.refused"] .what').allTextContents();

  it('shows the first refusal live, then the repeats as one count', async () => {
    for (let i = 0; i < 20; i++) {
      await new Promise<void>((resolve) => {
        const socket = net.connect({ host: '127.0.0.1', port: daemon.nbdPort, localAddress: '127.0.0.2' });
        socket.on('error', () => {});
        socket.on('close', () => resolve());
      });
    }
    await page.locator('#events li[data-type="connection.refused"]').first().waitFor({ timeout: 2000 });
    expect(await refusals()).toEqual(['127.0.0.2: 127.0.0.2 is not in --nbd-allow']);
    // The 10 s interval ends, and its count arrives as one more event.
    await page.locator('#events li[data-type="connection.refused"]').nth(1).waitFor({ timeout: 15_000 });
    expect((await refusals())[0]).toMatch(/^127\.0\.0\.2: 127\.0\.0\.2 is not in --nbd-allow \(19 times since \d{1,2}:\d\d:\d\d/);
  }, 30_000);

  it('after a gap too long to replay, says how many it missed and shows the newest', async () => {
    await daemon.stop();
    await page.waitForSelector('body[data-link="down"]', { timeout: 5000 });
    const db = new Database(path.join(daemon.dataDir, 'state.db'));
    const insert = db.prepare("INSERT INTO events (at, type, export_name, details) VALUES (?, 'connection.opened', NULL, ?)");
    db.transaction(() => {
      for (let i = 0; i < 12_000; i++)
        insert.run(new Date().toISOString(), JSON.stringify({ connection: i, client: '127.0.0.3', port: 40000 }));
    })();
    const newest = (db.prepare('SELECT max(id) AS id FROM events').get() as { id: number }).id;
    db.close();

    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--nbd-allow', '127.0.0.1/32', '--port', String(daemon.httpPort)] });
    await page.waitForSelector('body[data-link="up"]', { timeout: 10_000 });
    await page.locator(`#events li[data-event="${newest}"]`).waitFor({ timeout: 5000 });
    expect(await page.locator('#notice').textContent()).toMatch(
      /^1200\d events happened while this page was disconnected; the newest are shown, the rest are in events\.list$/,
    );
    expect(await page.locator('#events li').count()).toBeLessThanOrEqual(200);
  }, 30_000);
});
