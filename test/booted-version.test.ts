import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeTestImage, serveFile, sha256Of, startImageServer, type ImageServer } from '../testkit/image-fixtures.js';
import { nbdsh } from '../testkit/nbd.js';
import { httpRequest } from '../testkit/raw-http.js';
import { fakeKit } from './helpers/fake-kit.js';
import { startRelay } from './helpers/relay.js';

/**
 * A machine reads the version its boot was written for, whatever the export moved to since: a
 * reconnect after an outage must never switch the root filesystem under a running kernel. Real
 * daemon, real nbd-server, real imports (`--keep-versions 1`, so only a booted version's use
 * keeps the older file), and nbdsh from a loopback address of each machine's own.
 */
const mac = '52:54:00:00:00:44';
const machineAddress = '127.0.0.2';
const otherAddress = '127.0.0.3';

describe('the version a machine booted', () => {
  const work = tempDir('nbdmux-booted-');
  const images = {
    one: makeTestImage(work, 'one.img', 2),
    two: makeTestImage(work, 'two.img', 2),
    three: makeTestImage(work, 'three.img', 2),
  };
  let server: ImageServer;
  let daemon: RunningDaemon;

  beforeAll(async () => {
    server = await startImageServer({
      '/one.img': serveFile(images.one),
      '/two.img': serveFile(images.two),
      '/three.img': serveFile(images.three),
    });
    daemon = await startDaemon({ args: ['--ramboot-kit', fakeKit(Buffer.from('kernel')), '--keep-versions', '1', '--image-root', work] });
    expect((await api(daemon, 'POST', '/exports', { name: 'os', url: server.url('/one.img') })).status).toBe(202);
    await untilVersion(1);
    expect((await api(daemon, 'POST', '/machines', { mac, name: 'node1', export: 'os' })).status).toBe(201);
  }, 60_000);

  afterAll(async () => {
    killEverything([daemon.dataDir]);
    await server.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  async function untilVersion(version: number): Promise<void> {
    await waitFor(`version ${version} serving`, async () => {
      const versions = (await api(daemon, 'GET', '/exports/os/versions')).json as { version: number; current: boolean; state: string }[];
      return versions.some((entry) => entry.version === version && entry.current && entry.state === 'ready') || undefined;
    });
  }

  const boot = (from: string, which = mac) =>
    httpRequest(daemon.httpPort, {
      method: 'GET',
      path: `/boot.ipxe?mac=${which}`,
      localAddress: from,
      headers: { host: `127.0.0.1:${daemon.httpPort}` },
    });

  /** The sha256 of the whole export as a new connection from `from` reads it. */
  async function readFrom(from: string, exportName = 'os'): Promise<string> {
    const relay = await startRelay(daemon.nbdPort, from);
    try {
      const result = await nbdsh([
        '-u',
        `nbd://127.0.0.1:${relay.port}/${exportName}`,
        '-c',
        'import hashlib; print(hashlib.sha256(h.pread(h.get_size(), 0)).hexdigest())',
      ]);
      if (result.code !== 0) throw new Error(`nbdsh from ${from} failed: ${result.stderr.toString()}`);
      return result.stdout.toString().trim();
    } finally {
      await relay.close();
    }
  }

  const versionStates = async () =>
    ((await api(daemon, 'GET', '/exports/os/versions')).json as { version: number; state: string }[]).map(({ version, state }) => [
      version,
      state,
    ]);

  it('is served to its address after the export moves on, kept from collection, and given up at its next boot', async () => {
    expect((await boot(machineAddress)).status).toBe(200);
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json).toMatchObject({ address: machineAddress, bootedVersion: 1 });

    expect((await api(daemon, 'PUT', '/exports/os', { url: server.url('/two.img') })).status).toBe(202);
    await untilVersion(2);
    // The machine's address: still the bytes it booted; any other address: the new version.
    expect(await readFrom(machineAddress)).toBe(sha256Of(images.one));
    expect(await readFrom(otherAddress)).toBe(sha256Of(images.two));
    // --keep-versions 1 would have collected version 1 at the switch, but a machine still boots it.
    expect(await versionStates()).toEqual([
      [2, 'ready'],
      [1, 'ready'],
    ]);

    // A restart of nbdmux (a host reboot, as far as the machine can tell) keeps all of it.
    await daemon.stop();
    daemon = await startDaemon({
      dataDir: daemon.dataDir,
      args: ['--ramboot-kit', fakeKit(Buffer.from('kernel')), '--keep-versions', '1', '--image-root', work],
    });
    expect(await readFrom(machineAddress)).toBe(sha256Of(images.one));
    expect(await readFrom(otherAddress)).toBe(sha256Of(images.two));

    // Its next boot is written for the current version: the old one is read by no one, and goes.
    expect((await boot(machineAddress)).status).toBe(200);
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json).toMatchObject({ bootedVersion: 2 });
    expect(await readFrom(machineAddress)).toBe(sha256Of(images.two));
    expect((await api(daemon, 'PUT', '/exports/os', { url: server.url('/three.img') })).status).toBe(202);
    await untilVersion(3);
    // Collected at the switch, or at the next sweep if the close of the last connection to it is seen after.
    const collected = JSON.stringify([
      [3, 'ready'],
      [2, 'ready'],
      [1, 'deleted'],
    ]);
    await waitFor('version 1 collected', async () => (JSON.stringify(await versionStates()) === collected ? true : undefined), 15_000);
    expect(await readFrom(machineAddress)).toBe(sha256Of(images.two));
  });

  it('shows a root connection of the same boot attached again as reconnected, with how long it was gone', async () => {
    expect((await boot(machineAddress)).status).toBe(200);
    await readFrom(machineAddress);
    await waitFor('the first connection seen closed', async () =>
      (await api(daemon, 'GET', `/machines/${mac}`)).json.stage === 'off' ? true : undefined,
    );
    await readFrom(machineAddress);
    await waitFor('the second connection seen closed', async () =>
      (await api(daemon, 'GET', `/machines/${mac}`)).json.stage === 'off' ? true : undefined,
    );
    const machine = (await api(daemon, 'GET', `/machines/${mac}`)).json;
    expect(Object.keys(machine.timeline)).toEqual(['script', 'attached', 'off', 'reconnected']);
    const stages = (await createNbdmuxClient({ url: daemon.url }).events.list.query({ limit: 20 }))
      .filter((event) => event.type === 'machine.stage')
      .map((event) => ('stage' in event.details ? [event.details.stage, event.details.detail ?? null] : []))
      .reverse();
    expect(stages.slice(-4)).toEqual([
      ['attached', null],
      ['off', expect.stringMatching(/^its root's NBD connection closed at stage attached/)],
      ['reconnected', expect.stringMatching(/^its root attached again \d+\.\d s after its connection was seen closed$/)],
      ['off', expect.stringMatching(/^its root's NBD connection closed at stage reconnected/)],
    ]);
    // Another address reading the same export is no reconnect of this machine.
    await waitFor('the second connection seen closed', async () =>
      (await api(daemon, 'GET', `/machines/${mac}`)).json.stage === 'off' ? true : undefined,
    );
    await readFrom(otherAddress);
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json.stage).toBe('off');
  });

  it('follows a rollback to the very version a machine booted, from the one descriptor held for both', async () => {
    // The machine's last boot was written for version 3; a new version 4 leaves it on 3.
    expect((await api(daemon, 'GET', `/machines/${mac}`)).json).toMatchObject({ bootedVersion: 3 });
    expect((await api(daemon, 'PUT', '/exports/os', { url: server.url('/two.img') })).status).toBe(202);
    await untilVersion(4);
    expect(await readFrom(machineAddress)).toBe(sha256Of(images.three));
    expect(await readFrom(otherAddress)).toBe(sha256Of(images.two));
    // Back to 3: the version the machine holds becomes current, served from the one descriptor.
    expect((await api(daemon, 'POST', '/exports/os/rollback', { version: 3 })).status).toBe(200);
    expect(await readFrom(otherAddress)).toBe(sha256Of(images.three));
    // Deleting the machine lets go of its boot, not of the current version held by the same descriptor.
    expect((await api(daemon, 'DELETE', `/machines/${mac}`)).status).toBe(204);
    expect(await readFrom(machineAddress)).toBe(sha256Of(images.three));
    expect(await readFrom(otherAddress)).toBe(sha256Of(images.three));
  });

  it('serves two machines behind one address each the version its own boot names', async () => {
    const nat = '127.0.0.4';
    const [first, second] = ['52:54:00:00:00:45', '52:54:00:00:00:46'];
    for (const [which, name] of [
      [first, 'nat1'],
      [second, 'nat2'],
    ]) {
      expect((await api(daemon, 'POST', '/machines', { mac: which, name, export: 'os' })).status).toBe(201);
    }
    const firstScript = await boot(nat, first);
    expect(firstScript.text).toMatch(/ nbdroot=127\.0\.0\.1:\d+\/os@v3 /);
    expect((await api(daemon, 'PUT', '/exports/os', { url: server.url('/one.img') })).status).toBe(202);
    await untilVersion(5);
    // Until the new version's inspection ends, its script says it cannot boot yet.
    const secondScript = await waitFor('a script for version 5', async () => {
      const script = await boot(nat, second);
      return script.text.includes('nbdroot=') ? script : undefined;
    });
    expect(secondScript.text).toMatch(/ nbdroot=127\.0\.0\.1:\d+\/os@v5 /);

    // Behind one address, each reads the bytes its own boot was written for.
    expect(await readFrom(nat, 'os@v3')).toBe(sha256Of(images.three));
    expect(await readFrom(nat, 'os@v5')).toBe(sha256Of(images.one));
    // No other address sees a machine's version by name.
    await expect(readFrom(otherAddress, 'os@v3')).rejects.toThrow(/nbdsh from 127\.0\.0\.3 failed/);
    expect(await readFrom(otherAddress)).toBe(sha256Of(images.one));
  });
});
