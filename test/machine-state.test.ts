import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { listExports, makeImage, nbdsh, sha256, startNbdshSession, startSlowReader } from '../testkit/nbd.js';
import { httpRequest } from '../testkit/raw-http.js';
import { startRelay, type Relay } from './helpers/relay.js';

/**
 * A persistent machine's state export through the real daemon and real NBD clients: served only
 * to the address that fetched the machine's script, never twice at once, gone after a reset.
 * The machine is played by requests from 127.0.0.2 (its script) and nbdsh/nbdinfo through a
 * relay that connects from 127.0.0.2; 127.0.0.1 and 127.0.0.3 are the other clients.
 */
const mac = '52:54:00:12:34:56';
const stateName = '__state-525400123456';

function request(
  daemon: RunningDaemon,
  method: string,
  route: string,
  from: string,
  body?: string,
): Promise<{ status: number; text: string }> {
  return httpRequest(daemon.httpPort, { method, path: route, localAddress: from, headers: { host: `127.0.0.1:${daemon.httpPort}` }, body });
}

/** Reads 8 bytes at `offset` of an export as hex, or throws with nbdsh's error. */
async function peek(uri: string, offset: number): Promise<string> {
  const result = await nbdsh(['-u', uri, '-c', `print(h.pread(8, ${offset}).hex())`]);
  if (result.code !== 0) throw new Error(result.stderr.toString());
  return result.stdout.toString().trim();
}

describe('machine state exports', () => {
  const dirs: string[] = [];
  let daemon: RunningDaemon;
  let daemonArgs: string[];
  let machineRelay: Relay;
  let machineUri: string;
  const marker = Buffer.from('persists').toString('hex');
  const markerOffset = 32 * 1024 * 1024;

  beforeAll(async () => {
    const images = tempDir('nbdmux-images-');
    dirs.push(images);
    daemonArgs = ['--ramboot-kit', fakeKit(Buffer.from('kernel')), '--nbd-allow', '127.0.0.0/8'];
    daemon = await startDaemon({ args: daemonArgs });
    dirs.push(daemon.dataDir);
    expect((await api(daemon, 'POST', '/exports', { name: 'img', file: makeImage(images, 'img.img', 1024 * 1024) })).status).toBe(201);
    await inspectedBoots(daemon);
    expect(
      (await api(daemon, 'POST', '/machines', { mac: mac.toUpperCase(), name: 'node7', export: 'img', persistent: true, stateSize: '64M' }))
        .status,
    ).toBe(201);
    machineRelay = await startRelay(daemon.nbdPort, '127.0.0.2');
    machineUri = `nbd://127.0.0.1:${machineRelay.port}/${stateName}`;
  });
  afterAll(async () => {
    await machineRelay?.close();
    killEverything([daemon.dataDir]);
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("gives the machine's script its identity, its state and where to report", async () => {
    // A HEAD is no boot: the headers of the machine's script, and no stage.
    const head = await request(daemon, 'HEAD', `/boot.ipxe?mac=${mac}`, '127.0.0.2');
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json.stage).toBeNull();
    const script = await request(daemon, 'GET', `/boot.ipxe?mac=${mac}`, '127.0.0.2');
    expect(head.status).toBe(200);
    expect(script.status).toBe(200);
    const machine = (await api(daemon, 'GET', `/machines/${mac}`)).json;
    const nbd = `127.0.0.1:${daemon.nbdPort}`;
    expect(script.text).toContain(`echo nbdmux: node7 (${mac}) boots img\n`);
    expect(script.text).toContain(
      ` nbdroot=${nbd}/img@v1 nbdmux.mac=${mac} nbdmux.report=http://127.0.0.1:${daemon.httpPort}/boot/report nbdroot.state=${nbd}/${stateName} nbdroot.reconnect=300 systemd.hostname=node7 systemd.machine_id=${machine.machineId} console=tty0 console=ttyS0,115200\n`,
    );
    expect(machine).toMatchObject({ stage: 'script', address: '127.0.0.2', stateExport: stateName });
  });

  it('shows and serves the state to that address alone', async () => {
    expect(await listExports(`nbd://127.0.0.1:${machineRelay.port}`)).toEqual(['img', 'img@v1', stateName]);
    // ext4's magic, 0xEF53 little-endian, at byte 1080: the state file nbdmux made.
    expect((await peek(machineUri, 1080)).slice(0, 4)).toBe('53ef');
    expect(await listExports(`nbd://127.0.0.1:${daemon.nbdPort}`)).toEqual(['img']);
    const other = await startRelay(daemon.nbdPort, '127.0.0.3');
    try {
      expect(await listExports(`nbd://127.0.0.1:${other.port}`)).toEqual(['img']);
      // Refused exactly as a name never registered is: another client cannot even learn it exists.
      const failure = (name: string) =>
        peek(`nbd://127.0.0.1:${other.port}/${name}`, 0).then(
          () => 'served',
          (err: Error) => err.message.replaceAll(name, 'NAME'),
        );
      expect(await failure(stateName)).toBe(await failure('never-registered'));
      expect(await failure(stateName)).not.toBe('served');
    } finally {
      await other.close();
    }
  });

  it('keeps what the machine writes across connections, attaches it once at a time, and discards it on reset', async () => {
    const write = await nbdsh(['-u', machineUri, '-c', `h.pwrite(bytes.fromhex(${JSON.stringify(marker)}), ${markerOffset}); h.flush()`]);
    expect(write.code, write.stderr.toString()).toBe(0);
    expect(await peek(machineUri, markerOffset)).toBe(marker);

    const stopFile = path.join(tempDir('nbdmux-stop-'), 'stop');
    const holder = startNbdshSession(
      machineUri,
      'import os, time\nprint("held", flush=True)\nwhile not os.path.exists(' + JSON.stringify(stopFile) + '): time.sleep(0.05)',
      'held',
      stopFile,
    );
    await holder.ready;
    await expect(peek(machineUri, markerOffset)).rejects.toThrow();
    const refused = await waitFor('the second attach refused', async () => {
      const events = await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 200 });
      return events.find(
        (event) => event.type === 'connection.refused' && /state of machine node7 is already attached/.test(event.details.reason),
      );
    });
    expect(refused.details).toMatchObject({ client: '127.0.0.2' });
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json.attached).toBe(true);
    expect((await api(daemon, 'POST', `/machines/${mac}/reset`)).status).toBe(409);
    expect((await api(daemon, 'DELETE', `/machines/${mac}`)).status).toBe(409);
    expect((await holder.finish()).code).toBe(0);

    const detached = () =>
      waitFor('the state detached', async () => (await api(daemon, 'GET', `/machines/${mac}`)).json.attached === false || undefined);
    await detached();
    expect(await peek(machineUri, markerOffset)).toBe(marker);
    await detached();
    expect((await api(daemon, 'POST', `/machines/${mac}/reset`)).status).toBe(204);
    expect(await peek(machineUri, markerOffset)).toBe('0000000000000000');
  });

  it("keeps the machine's state connection through a restart of nbdmux, still attached once only", async () => {
    const reader = startSlowReader(machineUri, path.join(tempDir('nbdmux-stop-'), 'stop'));
    await reader.connected;
    expect(await daemon.stop()).toBe(0);
    daemon = await startDaemon({ dataDir: daemon.dataDir, nbdPort: daemon.nbdPort, args: daemonArgs });
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json.attached).toBe(true);
    await expect(peek(machineUri, 0)).rejects.toThrow();
    expect((await api(daemon, 'POST', `/machines/${mac}/reset`)).status).toBe(409);
    const { code, sha256: read } = await reader.finish();
    expect(code).toBe(0);
    expect(read).toBe(sha256(path.join(daemon.dataDir, 'machines', '525400123456.ext4')));
  });

  it('stops serving the state to the old address once the machine boots from another', async () => {
    expect((await request(daemon, 'GET', `/boot.ipxe?mac=${mac}`, '127.0.0.3')).status).toBe(200);
    expect(await listExports(`nbd://127.0.0.1:${machineRelay.port}`)).toEqual(['img']);
  });

  it('takes reports only from the address of the current boot, and records unknown MACs as discovered', async () => {
    expect((await request(daemon, 'POST', `/boot/report?mac=${mac}&stage=root`, '127.0.0.2', 'x')).status).toBe(403);
    expect((await request(daemon, 'POST', `/boot/report?mac=52:54:00:00:00:99&stage=root`, '127.0.0.3', 'x')).status).toBe(403);
    expect((await request(daemon, 'POST', `/boot/report?mac=${mac}&stage=bogus`, '127.0.0.3', 'x')).status).toBe(400);
    expect((await request(daemon, 'GET', `/boot/report?mac=${mac}&stage=root`, '127.0.0.3')).status).toBe(405);
    expect((await request(daemon, 'POST', `/boot/report?mac=${mac}&stage=root`, '127.0.0.3', 'x'.repeat(5000))).status).toBe(413);
    expect(
      (await request(daemon, 'POST', `/boot/report?mac=${mac}&stage=failed`, '127.0.0.3', 'cannot attach export img: no such export'))
        .status,
    ).toBe(204);
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json).toMatchObject({
      stage: 'failed',
      stageDetail: 'cannot attach export img: no such export',
    });

    const menu = await request(daemon, 'GET', '/boot.ipxe?mac=52:54:00:ab:cd:ef', '127.0.0.4');
    expect(menu.text).toMatch(/^#!ipxe\nmenu nbdmux: choose an export to boot\n/);
    expect((await api(daemon, 'GET', '/machines/discovered')).json).toEqual([
      expect.objectContaining({ mac: '52:54:00:ab:cd:ef', address: '127.0.0.4', requests: 1 }),
    ]);
    expect((await request(daemon, 'GET', '/boot.ipxe?mac=not-a-mac', '127.0.0.4')).status).toBe(400);
  });

  it('answers bad machine input over REST with the precise status, on the field at fault', async () => {
    const post = (body: unknown) => api(daemon, 'POST', '/machines', body);
    const field = (name: string) => ({ error: { code: 'BAD_REQUEST', issues: [expect.objectContaining({ field: name })] } });
    expect(await post({ mac: 'nope', name: 'x' })).toMatchObject({ status: 400, json: field('mac') });
    expect(await post({ mac: '52:54:00:00:00:31', name: 'x', export: 'nope' })).toMatchObject({ status: 400, json: field('export') });
    expect(await post({ mac: mac.toUpperCase(), name: 'other' })).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT' } } });
    expect(await post({ mac: '52:54:00:00:00:31', name: 'node7' })).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT' } } });
    expect(await api(daemon, 'PATCH', `/machines/${mac}`, { mac })).toMatchObject({ status: 400, json: field('mac') });
    expect(await api(daemon, 'PATCH', `/machines/${mac}`, { stateSize: '1M' })).toMatchObject({ status: 400, json: field('stateSize') });
    expect((await api(daemon, 'GET', '/machines/52:54:00:00:00:99')).status).toBe(404);
    expect(await api(daemon, 'GET', '/machines/zz')).toMatchObject({ status: 400, json: field('mac') });
    expect((await api(daemon, 'PUT', `/machines/${mac}`, {})).status).toBe(405);
  });

  it('tells a machine with no export, or whose export was removed, why it cannot boot', async () => {
    const images = tempDir('nbdmux-images-');
    dirs.push(images);
    expect((await api(daemon, 'POST', '/exports', { name: 'gone', file: makeImage(images, 'gone.img', 1024 * 1024) })).status).toBe(201);
    expect((await api(daemon, 'POST', '/machines', { mac: '52:54:00:00:00:21', name: 'orphan', export: 'gone' })).status).toBe(201);
    expect((await api(daemon, 'POST', '/machines', { mac: '52:54:00:00:00:22', name: 'idle' })).status).toBe(201);
    expect((await api(daemon, 'DELETE', '/exports/gone')).status).toBe(204);
    expect((await api(daemon, 'GET', '/machines/52:54:00:00:00:21')).json).toMatchObject({
      export: null,
      exportProblem: expect.stringMatching(/^its export gone was removed at /),
    });
    expect((await request(daemon, 'GET', '/boot.ipxe?mac=52:54:00:00:00:21', '127.0.0.5')).text).toBe(
      '#!ipxe\necho nbdmux: machine orphan cannot boot: its export is removed, or not serving: see nbdmux machines show 52:54:00:00:00:21\nexit 1\n',
    );
    expect((await request(daemon, 'GET', '/boot.ipxe?mac=52:54:00:00:00:22', '127.0.0.5')).text).toBe(
      '#!ipxe\necho nbdmux: machine idle cannot boot: no export is set for it: give it one with nbdmux machines set 52:54:00:00:00:22 --export EXPORT\nexit 1\n',
    );
  });
});
