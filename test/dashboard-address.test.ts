import http from 'node:http';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient } from '../src/client.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, startSlowReader } from '../testkit/nbd.js';

/** A GET with the Host header a browser would send for `host`. */
function getWithHost(daemon: RunningDaemon, route: string, host: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${daemon.url}${route}`, { headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(body) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the addresses the dashboard shows and offers to copy', () => {
  const dataDirs: string[] = [];
  afterAll(() => killEverything(dataDirs));

  it('system.info gives the address the boot scripts write, whatever name the page was opened by', async () => {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    // The initramfs resolves no names: a page opened as localhost still gets the IPv4 address.
    const byName = await getWithHost(daemon, '/trpc/system.info', `localhost:${daemon.httpPort}`);
    expect(byName.status).toBe(200);
    expect(byName.json.result.data.boot).toEqual({
      httpBase: `http://localhost:${daemon.httpPort}`,
      nbdHost: '127.0.0.1',
      nbdPort: daemon.nbdPort,
    });
    const byAddress = await createNbdmuxClient({ url: daemon.url }).system.info.query();
    expect(byAddress.boot).toEqual({ httpBase: daemon.url, nbdHost: '127.0.0.1', nbdPort: daemon.nbdPort });
  });

  it('a dual-stack daemon shows an IPv4 client as plain IPv4 in machines, connections and events', async () => {
    // Listening on ::, Node reports an IPv4 peer as ::ffff:127.0.0.1: every view must say 127.0.0.1.
    const daemon = await startDaemon({ args: ['--bind', '::'] });
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-address-');
    expect((await api(daemon, 'POST', '/exports', { name: 'lab', file: makeImage(images, 'lab.img', 1 << 20) })).status).toBe(201);
    const mac = '52:54:00:20:00:01';
    expect((await api(daemon, 'POST', '/machines', { mac, name: 'node-1', export: 'lab' })).status).toBe(201);
    expect((await api(daemon, 'GET', `/boot.ipxe?mac=${mac}`)).status).toBe(200);
    const reader = startSlowReader(daemon.nbdUri('lab'), path.join(images, 'stop'));
    await reader.connected;
    try {
      const client = createNbdmuxClient({ url: daemon.url });
      expect((await client.machines.get.query({ mac })).address).toBe('127.0.0.1');
      const live = await client.connections.list.query({ live: true });
      expect(live.map((c) => c.clientAddress)).toEqual(['127.0.0.1']);
      expect((await api(daemon, 'GET', `/machines/${mac}`)).json.address).toBe('127.0.0.1');
      const events = await client.events.list.query({ limit: 100 });
      expect(JSON.stringify(events)).not.toContain('::ffff:');
    } finally {
      await reader.finish();
    }
  });
});
