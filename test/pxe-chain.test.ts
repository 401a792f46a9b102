import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { bootFailureReport, bootGuest, guestHttpHost, guestNbdAddress, rambootKit, type Guest, type RambootKit } from './helpers/qemu.js';
import { skipWithout } from './helpers/tools.js';

/**
 * A machine boots from qemu's own PXE ROM (Debian ipxe-qemu), the way a lab machine starts:
 * qemu's DHCP and TFTP hand it chain.ipxe, which loads the ramboot kit's kernel and initrd over
 * HTTP and boots the export with them. The HTTP server here is a stand-in for nbdmux's future
 * /boot routes (a few lines serving two files from 127.0.0.1); everything else is real.
 */
const bootTimeoutSeconds = 240;

describe.skipIf(skipWithout('qemu-system-x86_64'))('pxe-chain: a machine boots an export from qemu PXE ROM through an iPXE script', () => {
  let kit: RambootKit;
  let daemon: RunningDaemon;
  let server: http.Server;
  let guest: Guest | undefined;
  const requests: Array<{ url: string; atMs: number; doneMs?: number }> = [];
  let bootStarted = 0;
  const tftpDir = tempDir('nbdmux-pxe-tftp-');
  const logs = path.resolve('test-artifacts', 'pxe-chain');

  beforeAll(async () => {
    kit = await rambootKit(540_000);
    fs.mkdirSync(logs, { recursive: true });
    daemon = await startDaemon();
    const image = path.join(tempDir('nbdmux-pxe-image-'), 'test-gpt.img');
    fs.copyFileSync(kit.images.gpt, image);
    const reply = await api(daemon, 'POST', '/exports', { name: 'root', file: image });
    if (reply.status !== 201) throw new Error(`registering the image failed (${reply.status}): ${reply.text}`);

    const files: Record<string, string> = { '/vmlinuz': kit.vmlinuz, '/initrd.img': kit.initrd };
    server = http.createServer((req, res) => {
      const file = files[req.url ?? ''];
      const request: { url: string; atMs: number; doneMs?: number } = { url: req.url ?? '', atMs: Date.now() - bootStarted };
      requests.push(request);
      if (!file) return res.writeHead(404).end();
      res.writeHead(200, { 'Content-Length': fs.statSync(file).size });
      fs.createReadStream(file)
        .pipe(res)
        .on('finish', () => (request.doneMs = Date.now() - bootStarted));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    fs.writeFileSync(
      path.join(tftpDir, 'chain.ipxe'),
      [
        '#!ipxe',
        `kernel http://${guestHttpHost}/vmlinuz initrd=initrd.img console=ttyS0 panic=-1 nbdroot=${guestNbdAddress}/root`,
        `initrd http://${guestHttpHost}/initrd.img`,
        'boot',
        '',
      ].join('\n'),
    );
  }, 600_000);

  afterAll(() => {
    guest?.kill();
    server?.close();
    killEverything([daemon.dataDir]);
  });

  it(
    'fetches chain.ipxe over TFTP, kernel and initrd over HTTP, attaches the export and runs the image',
    async () => {
      bootStarted = Date.now();
      guest = bootGuest({
        kit,
        kernel: 'vmlinuz',
        nbdPort: daemon.nbdPort,
        append: '',
        pxe: { tftpDir, bootfile: 'chain.ipxe', httpPort: (server.address() as AddressInfo).port },
        serialLog: path.join(logs, 'pxe.log'),
        timeoutSeconds: bootTimeoutSeconds,
      });
      const { code, atMs: exitedMs } = await guest.exited;
      const lines = guest.lines();
      const text = lines.map((line) => line.text);
      expect(code, `qemu did not power off by itself (null: killed at the time limit)\n${bootFailureReport(lines)}`).toBe(0);
      expect(requests.map((request) => request.url)).toEqual(['/vmlinuz', '/initrd.img']);
      expect(text.filter((line) => line.startsWith('ramboot: FAILED'))).toEqual([]);
      // The kernel iPXE loaded ran the kit's initramfs, which booted the export's own init.
      expect(text.some((line) => /^ramboot: \[[\d.]+\] root mounted: \/dev\/nbd0p3 \(ext4\)/.test(line))).toBe(true);
      expect(text.find((line) => line.startsWith('ramtest: init '))).toMatch(new RegExp(`^ramtest: init pid 1 image ${kit.imageId} `));

      const rootMounted = lines.find((line) => /^ramboot: \[[\d.]+\] root mounted/.test(line.text))?.atMs;
      const [kernel, initrd] = requests;
      const seconds = (ms: number | undefined) => (ms === undefined ? '?' : (ms / 1000).toFixed(1));
      console.log(
        `pxe-chain (host clock from qemu start): first HTTP request at ${seconds(kernel!.atMs)} s, ` +
          `kernel and initrd downloaded by ${seconds(initrd!.doneMs)} s, root mounted at ${seconds(rootMounted)} s, powered off at ${seconds(exitedMs)} s`,
      );
    },
    (bootTimeoutSeconds + 30) * 1000,
  );
});
