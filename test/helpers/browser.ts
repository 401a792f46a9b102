import fs from 'node:fs';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { tempDir } from '../../testkit/daemon.js';

/** Debian's Chromium, headless, with a fresh profile and nothing that reaches beyond this machine. */
export async function launchBrowser(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  // Playwright passes the profile as --user-data-dir itself.
  const profile = tempDir('nbdmux-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A new page on the dashboard at `url`, once its live connection to the daemon is up. */
export async function openDashboard(context: BrowserContext, url: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForSelector('body[data-link="up"]');
  return page;
}
