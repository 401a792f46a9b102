import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, type NbdmuxClient } from '../src/client.js';
import { launchBrowser, openDashboard } from './helpers/browser.js';
import { startSimulatedBmc, type SimulatedBmc } from './helpers/ipmi-sim.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { skipWithout } from './helpers/tools.js';

const artifacts = path.resolve('test-artifacts');
const [mac1, mac2] = ['52:54:00:07:00:02', '52:54:00:07:00:01'];
/** ipmitool takes about a second an action against ipmi_sim, and a reimage is three of them. */
const bmcTime = { timeout: 15_000 };

/** The lab's workflow in the dashboard alone, in a real Chromium, against a real daemon and ipmi_sim. */
describe.skipIf(skipWithout('/usr/bin/chromium'))('the fleet workflow in the dashboard: adopt, profile, BMC, power, reimage', () => {
  let daemon: RunningDaemon;
  let client: NbdmuxClient;
  let bmc: SimulatedBmc;
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  let page: Page;

  beforeAll(async () => {
    [daemon, bmc] = await Promise.all([startDaemon(), startSimulatedBmc()]);
    client = createNbdmuxClient({ url: daemon.url });
    const images = tempDir('nbdmux-images-');
    for (const name of ['debian', 'alpine'])
      expect((await api(daemon, 'POST', '/exports', { name, file: makeImage(images, `${name}.img`, 1024 * 1024) })).status).toBe(201);
    // Two machines ask to boot, mac1 first: they are discovered in that order.
    for (const mac of [mac1, mac2]) expect((await api(daemon, 'GET', `/boot.ipxe?mac=${mac}`)).status).toBe(200);
    browser = await launchBrowser();
    page = await openDashboard(browser.context, daemon.url);
    fs.mkdirSync(artifacts, { recursive: true });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    killEverything(daemon ? [daemon.dataDir] : []);
    bmc?.stop();
  });

  const profileForm = () => page.locator('#profile-form');

  const userData = '## template: jinja\n#cloud-config\nruncmd:\n  - echo {{ v1.local_hostname }} > /dev/console\n';

  it('adds a profile with its export, kernel args, cloud-config and BMC credentials, showing a refusal beside its field', async () => {
    const form = profileForm();
    await form.locator('select[name=export] option[value="debian"]').waitFor({ state: 'attached', timeout: 3000 });
    await form.locator('input[name=name]').fill('rack3');
    await form.locator('select[name=export]').selectOption('debian');
    await form.locator('input[name=cmdline]').fill('quiet');
    await form.locator('input[name=stateSize]').fill('4X');
    await form.locator('button[type=submit]').click();
    await expect.poll(() => form.locator('[data-error-for="stateSize"]').textContent()).toMatch(/\S/);
    expect((await api(daemon, 'GET', '/profiles')).json).toEqual([]);

    await form.locator('input[name=stateSize]').fill('');
    await form.locator('textarea[name=userData]').fill(userData);
    await form.locator('input[name=user]').fill(bmc.user);
    await form.locator('input[name=password]').fill(bmc.password);
    await form.locator('button[type=submit]').click();
    await page.locator('#profiles tr[data-profile="rack3"]').waitFor({ timeout: 3000 });
    expect((await api(daemon, 'GET', '/profiles/rack3')).json).toMatchObject({
      export: 'debian',
      cmdline: 'quiet',
      persistent: null,
      // The form trims what is typed, as every field's text.
      userData: userData.trim(),
      bmc: { user: 'admin', password: 'set' },
    });
    expect(await page.content()).not.toContain(bmc.password);
  });

  it('adopts both discovered machines into the profile, named from a pattern in their order of discovery', async () => {
    const form = page.locator('#adopt-machines');
    await form.locator('select[name=name] option[value="rack3"]').waitFor({ state: 'attached', timeout: 3000 });
    await form.locator('input[name=names]').fill('rack3-node{1..1}');
    await form.locator('button[type=submit]').click();
    await expect.poll(() => form.locator('[data-error-for="names"]').textContent()).toMatch(/gives 1 name\(s\) for 2 machines/);
    await form.locator('input[name=names]').fill('rack3-node{1..2}');
    await form.locator('button[type=submit]').click();
    await expect.poll(() => form.locator('.form-result').textContent()).toBe(`Adopted rack3-node1 (${mac1}), rack3-node2 (${mac2}).`);
    const machines = await client.machines.list.query();
    expect(machines.map((m) => [m.name, m.mac, m.profile, m.export])).toEqual([
      ['rack3-node1', mac1, 'rack3', 'debian'],
      ['rack3-node2', mac2, 'rack3', 'debian'],
    ]);
  });

  it('changes the profile from its Edit button, sending only what changed', async () => {
    await page.locator('#profiles tr[data-profile="rack3"]').getByRole('button', { name: 'Edit' }).click();
    const form = profileForm();
    // Filled from the profile read in full: a list has no cloud-init documents.
    await expect.poll(() => form.locator('input[name=name]').inputValue()).toBe('rack3');
    await expect(form.locator('input[name=cmdline]').inputValue()).resolves.toBe('quiet');
    await expect(form.locator('textarea[name=userData]').inputValue()).resolves.toBe(userData.trim());
    await form.locator('input[name=cmdline]').fill('quiet loglevel=3');
    await form.locator('button[type=submit]').click();
    await expect.poll(async () => (await client.profiles.get.query({ name: 'rack3' })).cmdline).toBe('quiet loglevel=3');
    const updated = (await client.events.list.query({ limit: 10 })).find((e) => e.type === 'profile.updated');
    expect(updated?.details).toMatchObject({ name: 'rack3', changed: ['cmdline'] });
  });

  it("sets a machine's BMC address on its page, and shows each power action's result; the one without a BMC says so", async () => {
    await page.evaluate(`location.hash = '#/machines/${mac1}'`);
    const form = page.locator('#machine-bmc');
    await form.locator('input[name=address]').waitFor();
    await form.locator('input[name=address]').fill('127.0.0.1:623');
    await form.locator('button[type=submit]').click();
    await expect.poll(() => form.locator('[data-error-for="address"]').textContent()).toMatch(/^must be the BMC's host name/);
    await form.locator('input[name=address]').fill('127.0.0.1');
    await form.locator('input[name=port]').fill(String(bmc.port));
    await form.locator('button[type=submit]').click();
    await expect
      .poll(() => page.locator('#machine-power-facts [data-bmc]').textContent())
      .toBe(`BMC 127.0.0.1:${bmc.port}, user admin (its profile's), password set (its profile's).`);

    const button = (name: string) => page.locator('#machine-power-actions').getByRole('button', { name, exact: true });
    const result = page.locator('#machine-power-result li');
    await button('Status').click();
    await expect.poll(() => result.first().textContent(), bmcTime).toBe('ok status: off');
    await button('On').click();
    await expect.poll(() => result.first().textContent(), bmcTime).toBe('ok on: Chassis Power Control: Up/On');
    expect(bmc.processRunning()).toBe(true);
    await button('Network boot next').click();
    await expect.poll(() => result.first().textContent(), bmcTime).toBe('ok pxe: Set Boot Device to pxe');

    const reimage = page.locator('#machine-reimage');
    await reimage.locator('select[name=export]').selectOption('alpine');
    await reimage.locator('button[type=submit]').click();
    await expect
      .poll(() => result.allTextContents(), bmcTime)
      .toEqual([
        'ok status: Chassis Power is on',
        'ok export: boots alpine from its next boot',
        'ok pxe: Set Boot Device to pxe',
        expect.stringMatching(/^ok cycle: /),
      ]);

    await page.evaluate(`location.hash = '#/machines/${mac2}'`);
    await expect.poll(() => page.locator('#machine-power-facts [data-bmc]').getAttribute('data-bmc')).toBe('none');
    await button('Status').click();
    await expect
      .poll(() => result.first().textContent(), bmcTime)
      .toBe(
        `failed status: rack3-node2 (${mac2}) has no BMC set: give it its BMC's address, and a user and password (its own or its profile's)`,
      );
  });

  it('powers and reimages the whole profile, one row per machine, and fits 1280 and 390 px', async () => {
    await page.evaluate(`location.hash = '#/'`);
    const form = page.locator('#profile-power');
    await form.locator('select[name=name]').selectOption('rack3');
    await form.locator('[data-actions]').getByRole('button', { name: 'Status', exact: true }).click();
    const rows = () =>
      form.locator('tr[data-result]').evaluateAll((trs) => trs.map((tr) => [tr.getAttribute('data-result'), tr.getAttribute('data-ok')]));
    await expect.poll(rows, bmcTime).toEqual([
      [mac1, 'true'],
      [mac2, 'false'],
    ]);

    await form.locator('select[name=export]').selectOption('alpine');
    await form.locator('button[type=submit]').click();
    // Cycled if ipmi_sim's machine still runs after the cycle above, else powered on: its chassis program decides.
    await expect
      .poll(() => form.locator(`tr[data-result="${mac1}"] td.detail`).textContent(), bmcTime)
      .toMatch(/^export ok → status ok → pxe ok → (cycle|on) ok: /);
    await expect
      .poll(() => form.locator(`tr[data-result="${mac2}"] td.detail`).textContent(), bmcTime)
      .toMatch(/^export ok → status failed: rack3-node2 .* has no BMC set/);
    expect((await client.machines.list.query()).map((m) => [m.export, m.sources.export])).toEqual([
      ['alpine', 'profile'],
      ['alpine', 'profile'],
    ]);

    for (const width of [1280, 390]) {
      await page.setViewportSize({ width, height: 900 });
      for (const [name, hash] of [
        ['fleet-overview', '#/'],
        ['fleet-machine', `#/machines/${mac1}`],
      ] as const) {
        await page.evaluate(`location.hash = '${hash}'`);
        await page.waitForTimeout(300);
        const { scrollWidth, innerWidth } = await page.evaluate<{ scrollWidth: number; innerWidth: number }>(
          '({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth })',
        );
        expect(scrollWidth, `${name} at ${width} px`).toBeLessThanOrEqual(innerWidth);
        const target =
          name === 'fleet-overview' ? page.locator('section[aria-labelledby="profiles-title"]') : page.locator('#page-machine');
        await target.screenshot({ path: path.join(artifacts, `${name}-${width}.png`) });
      }
    }
  });
});
