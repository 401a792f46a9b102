import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon, inspectedBoots } from '../testkit/daemon.js';
import { fakeKit } from './helpers/fake-kit.js';
import { listExports, makeImage } from '../testkit/nbd.js';
import { fillUp, isRoot, mountTmpfs, unmountTmpfs } from './helpers/tmpfs.js';

if (!isRoot) console.warn('full-disk machine tests skipped: mounting a small tmpfs as the data dir needs root (CI runs as root)');

describe.skipIf(!isRoot)('machines on a data dir that fills up', () => {
  let mount: string;
  let dataDir: string;
  let daemon: RunningDaemon;
  beforeAll(() => {
    mount = mountTmpfs('8m');
    dataDir = path.join(mount, 'data');
  });
  afterAll(() => {
    killEverything(daemon ? [dataDir] : []);
    unmountTmpfs(mount);
  });

  it('still gives a known machine its script and its state, and refuses a new state with 503 saying why', async () => {
    daemon = await startDaemon({ dataDir, args: ['--ramboot-kit', fakeKit(Buffer.from('kernel'))] });
    const image = makeImage(tempDir('nbdmux-images-'), 'disk.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);
    await inspectedBoots(daemon);
    expect(
      (
        await api(daemon, 'POST', '/machines', {
          mac: '52:54:00:00:00:01',
          name: 'node1',
          export: 'disk',
          persistent: true,
          stateSize: '64M',
        })
      ).status,
    ).toBe(201);
    expect((await api(daemon, 'GET', '/boot.ipxe?mac=52:54:00:00:00:01')).status).toBe(200);

    const filler = path.join(mount, 'filler');
    fillUp(filler);
    const script = await api(daemon, 'GET', '/boot.ipxe?mac=52:54:00:00:00:01');
    expect(script.status).toBe(200);
    expect(script.text).toContain('systemd.hostname=node1');
    expect(await listExports(daemon.nbdUri())).toEqual(['disk', 'disk@v1', '__state-525400000001']);

    const refused = await api(daemon, 'POST', '/machines', { mac: '52:54:00:00:00:02', name: 'node2', persistent: true, stateSize: '64M' });
    expect(refused.status).toBe(503);
    expect(refused.json.error.message).toMatch(/^cannot make the state filesystem .*525400000002\.ext4, so nothing was changed: /);
    expect((await api(daemon, 'GET', '/machines')).json.map((machine: { name: string }) => machine.name)).toEqual(['node1']);
    expect(fs.readdirSync(path.join(dataDir, 'machines'))).toEqual(['525400000001.ext4']);

    fs.rmSync(filler);
    expect(
      (await api(daemon, 'POST', '/machines', { mac: '52:54:00:00:00:02', name: 'node2', persistent: true, stateSize: '64M' })).status,
    ).toBe(201);
    expect(daemon.child.exitCode).toBeNull();
  }, 60_000);
});
