import http from 'node:http';
import path from 'node:path';
import fs from 'node:fs';
import { expect } from 'vitest';
import { api, tempDir, type RunningDaemon } from '../../testkit/daemon.js';
import { makeTestImage } from '../../testkit/image-fixtures.js';

/**
 * A lab the size the issue measured the dashboard at: 12 exports and 40 machines, made through the
 * API as an operator would, some booting (each from its own loopback address, as machines on a
 * lab network), some up, some failed with ramboot's own kind of reason, most never booted.
 */
export interface Fleet {
  exports: string[];
  machines: Array<{ mac: string; name: string; from: string | null }>;
  images: string;
}

const exportNames = [
  'debian-12-sysdev',
  'debian-13-testing',
  'ubuntu-24.04-lab',
  'ubuntu-22.04-ci',
  'alpine-3.20',
  'fedora-41-workstation',
  'rocky-9-hpc',
  'arch-rolling',
  'nixos-24.11',
  'opensuse-tumbleweed',
  'kali-pentest',
  'gentoo-stage3-with-a-rather-long-export-name',
];

export const macOf = (i: number) => `52:54:00:10:00:${i.toString(16).padStart(2, '0')}`;

/** A request from `from` (a loopback address of its own), as the machine at that address would send it. */
function requestFrom(daemon: RunningDaemon, from: string, method: string, route: string, body = ''): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${daemon.url}${route}`, { method, localAddress: from }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function makeFleet(daemon: RunningDaemon): Promise<Fleet> {
  // Nested deeply enough that the path has to wrap on a phone.
  const images = path.join(fs.realpathSync(tempDir('nbdmux-fleet-')), 'srv', 'images', 'lab-netboot', 'golden');
  fs.mkdirSync(images, { recursive: true });
  for (const [i, name] of exportNames.entries()) {
    const file = makeTestImage(images, `${name}.img`, 1 + (i % 3));
    const body = { name, file, ...(i % 4 === 1 && { allow: ['127.0.0.0/8', '10.20.0.0/16'] }), ...(i % 5 === 2 && { cow: true }) };
    const created = await api(daemon, 'POST', '/exports', body);
    expect(created.status, created.text).toBe(201);
  }
  // One export with a second version, so its page has a version to roll back to.
  const next = await api(daemon, 'PUT', '/exports/arch-rolling', { file: makeTestImage(images, 'arch-rolling-2.img', 2) });
  expect(next.status, next.text).toBe(200);
  const machines: Fleet['machines'] = [];
  for (let i = 1; i <= 40; i++) {
    const rack = Math.ceil(i / 10);
    const machine = {
      mac: macOf(i),
      name: `rack${rack}-node${String(i).padStart(2, '0')}`,
      export: exportNames[i % exportNames.length]!,
      persistent: i % 7 === 0,
      ...(i % 7 === 0 && { stateSize: '2G' }),
    };
    const created = await api(daemon, 'POST', '/machines', machine);
    expect(created.status, created.text).toBe(201);
    // Machines 1..18 have booted, each from an address of its own (machine 7 from this host's, where
    // the tests' NBD reader connects from, so a connection is its); the rest never asked.
    const from = i === 7 ? '127.0.0.1' : i <= 18 ? `127.0.0.${10 + i}` : null;
    machines.push({ mac: machine.mac, name: machine.name, from });
  }
  for (const [i, m] of machines.entries()) {
    if (m.from === null) continue;
    expect(await requestFrom(daemon, m.from, 'GET', `/boot.ipxe?mac=${m.mac}`)).toBe(200);
    const report = (stage: string, text: string) => requestFrom(daemon, m.from!, 'POST', `/boot/report?mac=${m.mac}&stage=${stage}`, text);
    if (i >= 6 && i < 13) {
      // Machine 7's stages come a second or more apart, so its timeline has durations to show.
      const pause = () => new Promise((resolve) => setTimeout(resolve, i === 6 ? 1200 : 0));
      await pause();
      expect(await report('root', 'root mounted after 2.1 s')).toBe(204);
      await pause();
      expect(await report('up', '')).toBe(204);
    } else if (i >= 13) {
      const reason = `FAILED: no root device appeared within 30 s\nnbd0: the server refused the export ${exportNames[(i + 1) % exportNames.length]} for this address (not in its allow list)`;
      expect(await report('failed', reason)).toBe(204);
    }
  }
  return { exports: exportNames, machines, images };
}
