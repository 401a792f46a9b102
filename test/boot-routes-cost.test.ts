import { MachineSeeds } from '../src/machines/seeds.js';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { noKitArtifacts, type BootArtifacts, type BootInfo } from '../src/boot/artifacts.js';
import { bootRoutes } from '../src/http/boot-routes.js';
import { SummarisedEvents } from '../src/events/summarised-events.js';
import { AllowList } from '../src/rules/allow-list.js';
import { BootableExports } from '../src/exports/bootable.js';
import { createLogger } from '../src/log.js';
import { testControlPlane, type TestControlPlane } from './helpers/context.js';
import { tempDir } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { httpRequest } from '../testkit/raw-http.js';

/**
 * What one open boot request reads, whatever the number of exports: the boot routes as the
 * daemon wires them, over the real control plane (in-memory database) and a real HTTP server on
 * loopback. Boot facts come from a stand-in that counts how often it is asked: looking inside an
 * image is the boot-files tests' job, and the count is what shows the cost.
 */
describe('the cost of a boot request', () => {
  const exportCount = 300;
  const ready: BootInfo = {
    ready: true,
    os: 'Debian GNU/Linux 12 (bookworm)',
    kernel: '6.1.0-40-amd64',
    partition: null,
    fstype: 'ext4',
    layout: 'disk ext4',
    lv: null,
    subvol: null,
    reason: null,
  };
  let images: string;
  let plane: TestControlPlane;
  let server: http.Server;
  let port: number;
  let summarised: SummarisedEvents;
  const asked: number[] = [];
  const artifacts: BootArtifacts = { ...noKitArtifacts, bootInfo: (exp) => (asked.push(exp.id), ready) };

  beforeAll(async () => {
    images = fs.realpathSync(tempDir('nbdmux-images-'));
    const image = makeImage(images, 'disk.img', 8192);
    plane = testControlPlane({ imageRoots: [images] });
    for (let i = 0; i < exportCount; i++)
      await plane.caller.exports.create({ name: `vm-${i}`, file: image, ...(i === 7 && { allow: ['10.9.0.0/16'] }) });
    await plane.caller.machines.create({ mac: '52:54:00:00:00:01', name: 'node1', export: 'vm-150' });
    summarised = new SummarisedEvents(plane.events);
    const routes = bootRoutes({
      exports: new BootableExports(plane.db),
      artifacts,
      events: summarised,
      machines: plane.boots,
      seeds: new MachineSeeds(plane.db, new BootableExports(plane.db)),
      nbdAllow: new AllowList([]),
      nbdPublicPort: 10809,
      bootDefault: null,
      menuTimeoutMs: 5000,
      log: createLogger('error', () => {}),
    });
    server = http.createServer((req, res) => void routes(req, res, new URL(req.url!, 'http://127.0.0.1')));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    summarised.stop();
    plane.close();
    fs.rmSync(images, { recursive: true, force: true });
  });

  /** A GET as a machine sends it, and which exports' boot facts it read. */
  async function get(path: string): Promise<{ status: number; read: number[] }> {
    asked.length = 0;
    const { status } = await httpRequest(port, { path, headers: { host: `127.0.0.1:${port}` } });
    return { status, read: [...asked] };
  }

  it(`reads no export's boot facts for a name that does not exist or is not for this address, among ${exportCount}`, async () => {
    expect(await get('/boot/nope.ipxe')).toEqual({ status: 403, read: [] });
    expect(await get('/boot/nope/vmlinuz')).toEqual({ status: 403, read: [] });
    expect(await get('/boot/vm-7.ipxe')).toEqual({ status: 403, read: [] });
    expect(await get('/boot/%ff.ipxe')).toEqual({ status: 403, read: [] });
  });

  it("reads only the export asked for, or the machine's own", async () => {
    const vm42 = (await plane.caller.exports.get({ name: 'vm-42' })).id;
    const vm150 = (await plane.caller.exports.get({ name: 'vm-150' })).id;
    expect(await get('/boot/vm-42.ipxe')).toEqual({ status: 200, read: [vm42] });
    expect(await get('/boot.ipxe?mac=52:54:00:00:00:01')).toEqual({ status: 200, read: [vm150] });
  });

  it('reads every export this address may boot for the menu, and only then', async () => {
    const menu = await get('/boot.ipxe');
    expect(menu.status).toBe(200);
    expect(menu.read).toHaveLength(exportCount - 1);
  });
});
