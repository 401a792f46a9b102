import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, type NbdmuxClient } from '../src/client.js';
import { launchBrowser, openDashboard } from './helpers/browser.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { skipWithout } from './helpers/tools.js';

const artifacts = path.resolve('test-artifacts');

const node1 = '52:54:00:12:34:56';
const node2 = '52:54:00:12:34:57';
const unknown = '52:54:00:aa:bb:cc';

describe.skipIf(skipWithout('/usr/bin/chromium'))('the dashboard with machines, in a real browser', () => {
  let daemon: RunningDaemon;
  let client: NbdmuxClient;
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  let page: Page;

  beforeAll(async () => {
    daemon = await startDaemon();
    client = createNbdmuxClient({ url: daemon.url });
    const images = tempDir('nbdmux-images-');
    for (const name of ['debian', 'alpine'])
      expect((await api(daemon, 'POST', '/exports', { name, file: makeImage(images, `${name}.img`, 1024 * 1024) })).status).toBe(201);
    browser = await launchBrowser();
    page = await openDashboard(browser.context, daemon.url);
  });
  afterAll(async () => {
    await browser?.close();
    killEverything([daemon.dataDir]);
  });

  const machineRow = (mac: string) => page.locator(`#machines tr[data-machine="${mac}"]`);
  /** A machine's page, reached from its row on the overview: its actions and forms are there. */
  const openMachine = async (mac: string) => {
    await page.evaluate(`location.hash = '#/'`);
    await machineRow(mac).locator('td.name a').click();
    await page.locator('#machine-actions button').first().waitFor();
  };
  const action = (name: string) => page.locator('#machine-actions').getByRole('button', { name, exact: true });
  const cell = (mac: string, column: 'name' | 'export' | 'persistent' | 'stage') => machineRow(mac).locator(`td.${column}`);
  const lastEvent = async (type: string) => (await client.events.list.query({ limit: 20 })).find((event) => event.type === type);
  /** Answers the next confirm() and returns its question. */
  const nextQuestion = (accept: boolean) =>
    new Promise<string>((resolve) =>
      page.once('dialog', (dialog) => (resolve(dialog.message()), void (accept ? dialog.accept() : dialog.dismiss()))),
    );

  it('adds a machine from the form, showing the API message beside a bad MAC', async () => {
    const form = page.locator('#add-machine');
    // The export choices come with the first snapshot.
    await form.locator('select[name=export] option[value="debian"]').waitFor({ state: 'attached', timeout: 2000 });
    await form.locator('input[name=mac]').fill('52:54:00:12:34');
    await form.locator('input[name=name]').fill('node-1');
    await form.locator('select[name=export]').selectOption('debian');
    await form.locator('button[type=submit]').click();
    await expect
      .poll(() => form.locator('[data-error-for="mac"]').textContent())
      .toMatch(/^must be a MAC address: six pairs of hex digits/);

    await form.locator('input[name=mac]').fill(node1.toUpperCase());
    await form.locator('button[type=submit]').click();
    await machineRow(node1).waitFor({ timeout: 2000 });
    await expect(cell(node1, 'name').textContent()).resolves.toBe('node-1');
    await expect(cell(node1, 'export').textContent()).resolves.toBe('debian');
    await expect(cell(node1, 'persistent').textContent()).resolves.toBe('no');
    await expect(cell(node1, 'stage').textContent()).resolves.toBe('never booted');
    await expect(form.locator('[data-error-for="mac"]').textContent()).resolves.toBe('');
    expect((await api(daemon, 'GET', `/machines/${node1}`)).json).toMatchObject({ name: 'node-1', export: 'debian', persistent: false });
  });

  it('shows a stage change live, counting the time at it, and a failure with its reason in full', async () => {
    const sent = Date.now();
    expect((await api(daemon, 'GET', `/boot.ipxe?mac=${node1}`)).status).toBe(200);
    await page.locator(`#machines tr[data-machine="${node1}"][data-stage="script"]`).waitFor({ timeout: 2000 });
    console.log(`script fetched to stage in the page: ${Date.now() - sent} ms`);
    await expect(cell(node1, 'stage').locator('.state').textContent()).resolves.toBe('script');
    await expect(machineRow(node1).locator('td').nth(5).textContent()).resolves.toBe('127.0.0.1');
    // No event comes while a machine sits at a stage: the page's own clock moves the duration.
    const since = cell(node1, 'stage').locator('small.since');
    const first = await since.textContent();
    expect(first).toMatch(/^for \d+s$/);
    await expect.poll(() => since.textContent(), { timeout: 3000 }).not.toBe(first);

    const reason = 'FAILED: no root device appeared\nnbd0: the server refused the export';
    expect((await fetch(`${daemon.url}/boot/report?mac=${node1}&stage=failed`, { method: 'POST', body: reason })).status).toBe(204);
    await page.locator(`#machines tr[data-machine="${node1}"][data-stage="failed"]`).waitFor({ timeout: 2000 });
    await expect(cell(node1, 'stage').locator('small.stage-detail').textContent()).resolves.toBe(reason);
    fs.mkdirSync(artifacts, { recursive: true });
    await page.locator('section', { has: page.locator('#machines') }).screenshot({ path: path.join(artifacts, 'dashboard-machines.png') });
  });

  it('edits a machine: its export, and for a persistent one whether it keeps its state', async () => {
    const form = page.locator('#edit-machine');
    await openMachine(node1);
    await action('Edit').click();
    await form.waitFor({ state: 'visible' });
    await expect(form.locator('input[name=name]').inputValue()).resolves.toBe('node-1');
    await expect(form.locator('select[name=export]').inputValue()).resolves.toBe('debian');
    await form.locator('select[name=export]').selectOption('alpine');
    // A machine without state has none to keep.
    expect(await form.locator('[data-keep-state]').isVisible()).toBe(false);
    await form.locator('button[type=submit]').click();
    await form.waitFor({ state: 'hidden', timeout: 2000 });
    await expect.poll(() => cell(node1, 'export').textContent()).toBe('alpine');
    expect((await lastEvent('machine.updated'))?.details).toMatchObject({ mac: node1, changed: ['export'] });

    expect(
      (await api(daemon, 'POST', '/machines', { mac: node2, name: 'node-2', export: 'debian', persistent: true, stateSize: '64M' })).status,
    ).toBe(201);
    await expect.poll(() => cell(node2, 'persistent').textContent()).toBe('64.0 MiB of state');
    await openMachine(node2);
    for (const keep of [true, false]) {
      await action('Edit').click();
      await expect(form.locator('input[name=stateSize]').inputValue()).resolves.toBe('64M');
      expect(await form.locator('[data-keep-state]').isVisible()).toBe(false);
      await form.locator('select[name=export]').selectOption(keep ? 'alpine' : 'debian');
      expect(await form.locator('[data-keep-state]').isVisible()).toBe(true);
      await form.locator('input[name=keepState]').setChecked(keep);
      await form.locator('button[type=submit]').click();
      await form.waitFor({ state: 'hidden', timeout: 2000 });
      expect((await lastEvent('machine.updated'))?.details).toMatchObject({ mac: node2, changed: ['export'], stateDiscarded: !keep });
      // The next Edit opens the machine as its row shows it: wait for the row to show this change.
      await expect.poll(() => cell(node2, 'export').textContent()).toBe(keep ? 'alpine' : 'debian');
    }

    // A refused edit keeps the form open, with the API's message beside the field.
    await action('Edit').click();
    await form.locator('input[name=name]').fill('Node_2');
    await form.locator('button[type=submit]').click();
    await expect.poll(() => form.locator('[data-error-for="name"]').textContent()).toMatch(/^must be a host name/);
    await form.getByRole('button', { name: 'Cancel' }).click();
    expect(await form.isVisible()).toBe(false);
    expect((await api(daemon, 'GET', `/machines/${node2}`)).json).toMatchObject({ name: 'node-2', export: 'debian' });
  });

  it('lists a MAC that asked to boot under Discovered; its add fills in the MAC', async () => {
    await page.evaluate(`location.hash = '#/'`);
    expect((await api(daemon, 'GET', `/boot.ipxe?mac=${unknown}`)).status).toBe(200);
    const discovered = page.locator(`#discovered tr[data-discovered="${unknown}"]`);
    await discovered.waitFor({ timeout: 2000 });
    await expect(discovered.locator('td').allTextContents()).resolves.toEqual([
      unknown,
      '127.0.0.1',
      expect.any(String),
      expect.any(String),
      '1',
      'Add',
    ]);

    const form = page.locator('#add-machine');
    await discovered.getByRole('button', { name: 'Add' }).click();
    await expect(form.locator('input[name=mac]').inputValue()).resolves.toBe(unknown);
    await expect(page.evaluate<string>('document.activeElement.name')).resolves.toBe('name');
    await form.locator('input[name=name]').fill('node-3');
    await form.locator('button[type=submit]').click();
    await machineRow(unknown).waitFor({ timeout: 2000 });
    // A machine is no longer unknown.
    await discovered.waitFor({ state: 'detached', timeout: 2000 });
    await expect(cell(unknown, 'export').textContent()).resolves.toBe('none');
  });

  it('resets a persistent machine and removes one, each after asking', async () => {
    await openMachine(node1);
    expect(await action('Reset state').count()).toBe(0);
    await openMachine(node2);
    const resetAsked = nextQuestion(true);
    await action('Reset state').click();
    expect(await resetAsked).toBe('Discard what "node-2" wrote? Its next boot starts from the image as it is.');
    await expect.poll(async () => (await lastEvent('machine.reset'))?.details).toMatchObject({ mac: node2 });

    await openMachine(node1);
    const declined = nextQuestion(false);
    await action('Remove').click();
    expect(await declined).toMatch(/^Remove machine "node-1" \(52:54:00:12:34:56\)\?/);
    expect((await api(daemon, 'GET', `/machines/${node1}`)).status).toBe(200);
    const removeAsked = nextQuestion(true);
    await action('Remove').click();
    await removeAsked;
    // Its page is gone with it: the overview shows.
    await page.locator('#page-overview').waitFor({ state: 'visible', timeout: 2000 });
    await machineRow(node1).waitFor({ state: 'detached', timeout: 2000 });
    expect((await api(daemon, 'GET', '/machines')).json.map((m: { name: string }) => m.name)).toEqual(['node-2', 'node-3']);
    await expect(page.locator('#machine-count').textContent()).resolves.toBe('2');
  });

  it('lists the profiles with their machines; a machine’s page says where each value came from', async () => {
    await client.profiles.create.mutate({ name: 'rack3', export: 'alpine', cmdline: 'quiet' });
    const mac = '52:54:00:00:03:01';
    await client.machines.create.mutate({ mac, name: 'rack3-node01', profile: 'rack3', persistent: false });
    const row = page.locator('#profiles tr[data-profile="rack3"]');
    await page.evaluate(`location.hash = '#/'`);
    await row.waitFor({ timeout: 2000 });
    await expect(row.locator('td.export').textContent()).resolves.toBe('alpine');
    await expect(row.locator('td.machines').textContent()).resolves.toBe('rack3-node01');
    await row.locator('td.machines a').click();
    const facts = page.locator('#machine-facts');
    await facts.locator('dd.profile').waitFor({ timeout: 2000 });
    await expect(facts.locator('dd.export').textContent()).resolves.toBe('alpine (from profile rack3)');
    await expect(facts.locator('dd.persistent').textContent()).resolves.toBe('no: each boot starts from the image (its own)');
    await expect(facts.locator('dt:text-is("Kernel args") + dd').textContent()).resolves.toBe('quiet (from profile rack3)');
    await expect(
      facts.locator('[data-source]').evaluateAll((nodes) => nodes.map((node) => node.getAttribute('data-source'))),
    ).resolves.toEqual(['profile', 'machine', 'profile']);
  });
});
