import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { listExports, makeImage, nbdsh } from '../testkit/nbd.js';
import { httpRequest } from '../testkit/raw-http.js';
import { startRelay } from './helpers/relay.js';

/**
 * The open boot routes as a hostile client on the lab network uses them, against the real
 * daemon and real NBD clients: each client is a loopback address of its own (127.0.0.x), the
 * NBD side through a relay that connects from that address.
 */
const mac = '52:54:00:00:00:33';
const stateName = '__state-525400000033';

function request(daemon: RunningDaemon, route: string, from: string, method = 'GET'): Promise<{ status: number; text: string }> {
  return httpRequest(daemon.httpPort, { method, path: route, localAddress: from, headers: { host: `127.0.0.1:${daemon.httpPort}` } });
}

/** What the machine shows of its current boot. */
async function bootOf(daemon: RunningDaemon): Promise<{ address: string | null; stage: string | null; lastSeenAt: string | null }> {
  const { address, stage, lastSeenAt } = (await api(daemon, 'GET', `/machines/${mac}`)).json;
  return { address, stage, lastSeenAt };
}

/** Whether `name` can be attached through the NBD port from `from`; nbdsh's error otherwise. */
async function attach(daemon: RunningDaemon, name: string, from: string): Promise<string> {
  const relay = await startRelay(daemon.nbdPort, from);
  try {
    const result = await nbdsh(['-u', `nbd://127.0.0.1:${relay.port}/${name}`, '-c', 'print(h.get_size())']);
    return result.code === 0 ? 'attached' : result.stderr.toString();
  } finally {
    await relay.close();
  }
}

async function listFrom(daemon: RunningDaemon, from: string): Promise<string[]> {
  const relay = await startRelay(daemon.nbdPort, from);
  try {
    return await listExports(`nbd://127.0.0.1:${relay.port}`);
  } finally {
    await relay.close();
  }
}

describe('a machine whose export has an allow list', () => {
  const dirs: string[] = [];
  let daemon: RunningDaemon;

  beforeAll(async () => {
    const images = tempDir('nbdmux-images-');
    dirs.push(images);
    // 127.0.0.8 and up are outside --nbd-allow; .3 alone is in the export's allow list.
    daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(Buffer.from('kernel')), '--nbd-allow', '127.0.0.0/29'] });
    dirs.push(daemon.dataDir);
    expect(
      (
        await api(daemon, 'POST', '/exports', {
          name: 'secret',
          file: makeImage(images, 'secret.img', 1024 * 1024),
          allow: ['127.0.0.3/32'],
        })
      ).status,
    ).toBe(201);
    await inspectedBoots(daemon);
    expect(
      (await api(daemon, 'POST', '/machines', { mac, name: 'vault', export: 'secret', persistent: true, stateSize: '64M' })).status,
    ).toBe(201);
  });
  afterAll(() => {
    killEverything([daemon.dataDir]);
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("boots from an address the export admits, and from any other gets an unknown MAC's answer that changes nothing", async () => {
    const booted = await request(daemon, `/boot.ipxe?mac=${mac}`, '127.0.0.3');
    expect(booted.status).toBe(200);
    expect(booted.text).toContain(`nbdroot.state=127.0.0.1:${daemon.nbdPort}/${stateName}`);
    const before = await bootOf(daemon);
    expect(before).toMatchObject({ address: '127.0.0.3', stage: 'script' });
    expect(await attach(daemon, stateName, '127.0.0.3')).toBe('attached');

    // From .2 (in --nbd-allow, outside the export's list): exactly what a MAC nobody registered gets.
    const refused = await request(daemon, `/boot.ipxe?mac=${mac}`, '127.0.0.2');
    const unknown = await request(daemon, '/boot.ipxe?mac=52:54:00:00:00:99', '127.0.0.2');
    expect(refused).toEqual(unknown);
    expect(refused.text).not.toContain('vault');
    expect(await bootOf(daemon)).toEqual(before);
    // Its state is neither listed to .2 nor attachable from it; the address of the boot still has it.
    expect(await listFrom(daemon, '127.0.0.2')).toEqual([]);
    expect(await attach(daemon, stateName, '127.0.0.2')).toMatch(/server reported: .*|No such|not found|unknown/i);
    expect(await listFrom(daemon, '127.0.0.3')).toEqual(['secret', 'secret@v1', stateName]);
    // Not recorded as discovered either: it is a known machine.
    expect((await api(daemon, 'GET', '/machines/discovered')).json.map((found: { mac: string }) => found.mac)).toEqual([
      '52:54:00:00:00:99',
    ]);
  });

  it('changes nothing for a HEAD or an address outside --nbd-allow, and serves no state while the machine has no export', async () => {
    const before = await bootOf(daemon);
    expect((await request(daemon, `/boot.ipxe?mac=${mac}`, '127.0.0.2', 'HEAD')).status).toBe(200);
    expect((await request(daemon, `/boot.ipxe?mac=${mac}`, '127.0.0.3', 'HEAD')).status).toBe(200);
    expect((await request(daemon, `/boot.ipxe?mac=${mac}`, '127.0.0.9')).status).toBe(403);
    expect(await bootOf(daemon)).toEqual(before);
    // With no export it cannot boot: its script says why, and its state is served to no one, not even its boot's address.
    expect((await api(daemon, 'PATCH', `/machines/${mac}`, { export: null })).status).toBe(200);
    const cannot = await request(daemon, `/boot.ipxe?mac=${mac}`, '127.0.0.2');
    expect(cannot.text).toContain('machine vault cannot boot: no export is set for it');
    expect(await bootOf(daemon)).toMatchObject({ address: '127.0.0.2', stage: 'script' });
    expect(await listFrom(daemon, '127.0.0.2')).toEqual([]);
    expect(await listFrom(daemon, '127.0.0.3')).toEqual(['secret']);
    // Given its export again, the address outside the export's list still gets nothing of it.
    expect((await api(daemon, 'PATCH', `/machines/${mac}`, { export: 'secret', keepState: true })).status).toBe(200);
    expect(await listFrom(daemon, '127.0.0.2')).toEqual([]);
    expect(await attach(daemon, stateName, '127.0.0.2')).not.toBe('attached');
  });
});

describe('boot requests in a flood', () => {
  let daemon: RunningDaemon;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(Buffer.from('kernel'))] });
  });
  afterAll(() => {
    killEverything([daemon.dataDir]);
    fs.rmSync(daemon.dataDir, { recursive: true, force: true });
  });

  it('records a few summarised events, not one per request, and counts every request', async () => {
    const requests = 60;
    for (let i = 0; i < requests; i++) {
      expect((await request(daemon, '/boot.ipxe', '127.0.0.4')).status).toBe(200);
      // A made-up MAC each time: each is discovered, but the events say so once an interval per address.
      expect((await request(daemon, `/boot.ipxe?mac=52:54:01:00:00:${i.toString(16).padStart(2, '0')}`, '127.0.0.4')).status).toBe(200);
    }
    const client = createNbdmuxClient({ url: daemon.url });
    const live = await client.events.list.query({ limit: 1000 });
    expect(live.filter((event) => event.type === 'boot.script')).toHaveLength(1);
    expect(live.filter((event) => event.type === 'machine.discovered')).toHaveLength(1);
    expect((await api(daemon, 'GET', '/machines/discovered')).json).toHaveLength(requests);

    // Stopping records the counts still open; the next run shows them.
    expect(await daemon.stop()).toBe(0);
    daemon = await startDaemon({ dataDir: daemon.dataDir, args: ['--ramboot-kit', fakeKit(Buffer.from('kernel'))] });
    const after = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 1000 });
    const scripts = after
      .filter((event) => event.type === 'boot.script')
      .map((event) => event.details as { client: string; count?: number });
    const discovered = after
      .filter((event) => event.type === 'machine.discovered')
      .map((event) => event.details as { client: string; count?: number });
    expect(scripts.reduce((sum, details) => sum + (details.count ?? 1), 0)).toBe(2 * requests);
    expect(scripts).toHaveLength(2);
    expect(discovered.reduce((sum, details) => sum + (details.count ?? 1), 0)).toBe(requests);
    expect(discovered).toHaveLength(2);
  });
});

describe('a dual-stack NBD port beside an IPv4 HTTP port', () => {
  let daemon: RunningDaemon;
  const dirs: string[] = [];
  beforeAll(async () => {
    const images = tempDir('nbdmux-images-');
    dirs.push(images);
    daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(Buffer.from('kernel')), '--nbd-bind', '::ffff:127.0.0.1'] });
    dirs.push(daemon.dataDir);
    expect(
      (await api(daemon, 'POST', '/exports', { name: 'img', file: makeImage(images, 'img.img', 1024 * 1024), allow: ['127.0.0.7'] }))
        .status,
    ).toBe(201);
    await inspectedBoots(daemon);
    expect((await api(daemon, 'POST', '/machines', { mac, name: 'dual', export: 'img', persistent: true, stateSize: '64M' })).status).toBe(
      201,
    );
  });
  afterAll(() => {
    killEverything([daemon.dataDir]);
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('sees one client: its script fetch and its NBD connection match, so it attaches, and its state is served to it', async () => {
    expect((await request(daemon, `/boot.ipxe?mac=${mac}`, '127.0.0.7')).status).toBe(200);
    expect(await attach(daemon, 'img', '127.0.0.7')).toBe('attached');
    // The connection ended as nbdsh did: attached, then off (once the daemon has seen it close).
    const machine = await waitFor('the machine off', async () => {
      const shown = (await api(daemon, 'GET', `/machines/${mac}`)).json;
      return shown.stage === 'off' ? shown : undefined;
    });
    expect(machine).toMatchObject({
      address: '127.0.0.7',
      stage: 'off',
      stageDetail: "its root's NBD connection closed at stage attached, before the system reported up",
    });
    expect(Object.keys(machine.timeline)).toEqual(['script', 'attached', 'off']);
    expect(await attach(daemon, stateName, '127.0.0.7')).toBe('attached');
    const connections = await createNbdmuxClient({ url: daemon.url }).connections.list.query({});
    expect(new Set(connections.map((conn) => conn.clientAddress))).toEqual(new Set(['127.0.0.7']));
  });
});
