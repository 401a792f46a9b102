import { expect, it } from 'vitest';
import { launchBrowser } from './helpers/browser.js';
import { killEverything, startDaemon } from '../testkit/daemon.js';
import { skipWithout } from './helpers/tools.js';

const password = 'a long admin password';

// The daemon closes a logged-out session's sockets; the page learns of it only through the
// client's link callback, so this is the one place that path is seen end to end.
it.skipIf(skipWithout('/usr/bin/chromium'))('sends every tab of a session back to the login form when one of them logs out', async () => {
  const daemon = await startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password } });
  const browser = await launchBrowser();
  try {
    const watching = await browser.context.newPage();
    await watching.goto(daemon.url);
    await watching.fill('input[name=password]', password);
    await watching.click('button[type=submit]');
    await watching.waitForSelector('body[data-link="up"]');
    const other = await browser.context.newPage();
    await other.goto(daemon.url);
    await other.waitForSelector('body[data-link="up"]');

    await other.click('#logout button');
    await watching.waitForSelector('input[name=password]', { timeout: 5000 });
    expect(await watching.locator('#exports').count()).toBe(0);
  } finally {
    await browser.close();
    killEverything([daemon.dataDir]);
  }
});
