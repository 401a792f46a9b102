import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AllowedHosts, hostOfHeader } from '../src/http/allowed-hosts.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { httpRequest, rawRequest } from '../testkit/raw-http.js';

const password = 'correct horse battery staple';
const upgradeHeaders =
  'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
const upgrade = (host: string, origin: string) => `GET /trpc HTTP/1.1\r\nHost: ${host}\r\nOrigin: ${origin}\r\n${upgradeHeaders}\r\n`;

describe('Host checks against DNS rebinding', () => {
  const dataDirs: string[] = [];
  let open: RunningDaemon;
  let locked: RunningDaemon;
  let image: string;

  beforeAll(async () => {
    [open, locked] = await Promise.all([
      startDaemon({ args: ['--allowed-host', 'Lab.Example'] }),
      startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password, NBDMUX_ALLOWED_HOSTS: 'nbdmux.lab, 10.9.8.7' } }),
    ]);
    dataDirs.push(open.dataDir, locked.dataDir);
    image = makeImage(tempDir('nbdmux-images-'), 'host.img', 64 * 1024);
  });
  afterAll(() => killEverything(dataDirs));

  it('refuses, with 421 and the flag to fix it, a page on another site driving the daemon through the browser', async () => {
    // What a rebinding page does: its own name resolves to us, so Host and Origin agree with each other.
    const attacker = `attacker.example:${open.httpPort}`;
    const created = await httpRequest(open.httpPort, {
      method: 'POST',
      path: '/exports',
      headers: { host: attacker, origin: `http://${attacker}` },
      body: { name: 'rebound', file: image },
    });
    expect(created.status).toBe(421);
    expect(JSON.parse(created.text)).toEqual({
      error: {
        code: 'FORBIDDEN',
        message:
          '"attacker.example" is not a name of this nbdmux daemon; if it is one, start nbdmux-server with --allowed-host attacker.example',
      },
    });
    expect((await api(open, 'GET', '/exports')).json).toEqual([]);

    const socket = await rawRequest(open.httpPort, upgrade(attacker, `http://${attacker}`));
    expect(socket.status, socket.text).toBe(421);
  });

  it('answers to the bind address, localhost and the host name on any port, in any case, and to --allowed-host names', async () => {
    const own = [
      '127.0.0.1',
      `127.0.0.1:${open.httpPort}`,
      '127.0.0.1:1',
      'localhost',
      `LocalHost:${open.httpPort}`,
      `${os.hostname()}:4040`,
    ];
    for (const host of [...own, 'lab.example', `LAB.example:8080`]) {
      expect(await httpRequest(open.httpPort, { path: '/healthz', headers: { host } }), host).toEqual({ status: 200, text: 'ok\n' });
    }
    for (const host of ['127.0.0.2', 'localhost.', 'lab.example.attacker.example', '[::1]', '10.9.8.7']) {
      expect((await httpRequest(open.httpPort, { path: '/healthz', headers: { host } })).status, host).toBe(421);
    }
    const socket = await rawRequest(open.httpPort, upgrade('lab.example', 'http://lab.example'));
    expect(socket.status, socket.text).toBe(101);
  });

  it('refuses a foreign Host before authentication, so it neither learns nor spends password guesses', async () => {
    const foreign = { host: 'attacker.example', authorization: 'Bearer wrong' };
    for (let i = 0; i < 8; i++) expect((await httpRequest(locked.httpPort, { path: '/exports', headers: foreign })).status).toBe(421);
    // Eight wrong passwords would have throttled this address (429) had they reached the gate.
    const right = await httpRequest(locked.httpPort, { path: '/exports', headers: { authorization: `Bearer ${password}` } });
    expect(right).toEqual({ status: 200, text: '[]\n' });
  });

  it('takes the names in NBDMUX_ALLOWED_HOSTS', async () => {
    for (const host of ['nbdmux.lab', '10.9.8.7:4040']) {
      expect((await httpRequest(locked.httpPort, { path: '/exports', headers: { host } })).status, host).toBe(401);
    }
    expect((await httpRequest(locked.httpPort, { path: '/exports', headers: { host: 'lab.example' } })).status).toBe(421);
  });
});

describe('Host checks on an IPv6 bind address', () => {
  let daemon: RunningDaemon;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--bind', '::1'] });
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('accepts the address as a bracketed literal in any spelling, and nothing bound elsewhere', async () => {
    const get = (host: string) => httpRequest(daemon.httpPort, { host: '::1', path: '/healthz', headers: { host } });
    for (const host of [`[::1]:${daemon.httpPort}`, '[::1]', '[0:0:0:0:0:0:0:1]:80', 'localhost'])
      expect((await get(host)).status, host).toBe(200);
    for (const host of ['127.0.0.1', '[::2]']) expect((await get(host)).status, host).toBe(421);
    for (const host of ['[::1', '::1']) expect((await get(host)).status, host).toBe(400);
  });
});

describe('AllowedHosts when bound to every address', () => {
  // A unit check: the daemon under test listens on loopback only, so the machine's other addresses cannot be reached here.
  const everywhere = new AllowedHosts(undefined, []);
  const machine = Object.values(os.networkInterfaces()).flatMap((list) => list ?? []);

  it('accepts each address of this machine, IPv6 in brackets', () => {
    expect(machine.length).toBeGreaterThan(0);
    for (const { address, family } of machine) {
      const header = family === 'IPv6' ? `[${address}]:4040` : `${address}:4040`;
      expect(everywhere.allows(hostOfHeader(header)!), header).toBe(true);
    }
  });

  it('still refuses names that are not its own', () => {
    for (const header of ['attacker.example', '203.0.113.9', '[2001:db8::1]'])
      expect(everywhere.allows(hostOfHeader(header)!), header).toBe(false);
  });
});
