import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { rawRequest } from '../testkit/raw-http.js';

const password = 'correct horse battery staple';
const twoMegabytes = 2 * 1024 * 1024;

/**
 * Sends the head with `Expect: 100-continue` and, like curl, the body only once told to continue;
 * resolves with everything the daemon sent until it closed (each request asks it to) or `waitMs` passed.
 */
function sendExpectingContinue(port: number, head: string, body: string, waitMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(received);
    };
    const timer = setTimeout(done, waitMs);
    socket.on('connect', () => socket.write(head));
    socket.on('data', (chunk: Buffer) => {
      const before = received;
      received += chunk.toString('latin1');
      if (!before.startsWith('HTTP/1.1 100 ') && received.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) socket.write(body);
    });
    socket.on('error', () => {});
    socket.on('close', done);
  });
}

describe('Expect: 100-continue', () => {
  let daemon: RunningDaemon;
  let image: string;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--http-request-timeout', '2'], env: { NBDMUX_ADMIN_PASSWORD: password } });
    image = makeImage(tempDir('nbdmux-images-'), 'expect.img', 64 * 1024);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  const head = (path: string, length: number, type = 'application/json') =>
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${daemon.httpPort}\r\nAuthorization: Bearer ${password}\r\nOrigin: http://127.0.0.1:${daemon.httpPort}\r\n` +
    `Content-Type: ${type}\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;

  it.each([
    ['REST', '/exports', 'application/json', '{"error":{"code":"PAYLOAD_TOO_LARGE","message":"the body is larger than 262144 bytes"}}\n'],
    [
      'login',
      '/login',
      'application/x-www-form-urlencoded',
      '{"error":{"code":"PAYLOAD_TOO_LARGE","message":"the body is larger than 262144 bytes"}}\n',
    ],
    // The typed client's error envelope, as for any other tRPC refusal.
    [
      'tRPC',
      '/trpc/exports.create',
      'application/json',
      '{"error":{"message":"the body is larger than 262144 bytes","code":-32013,"data":{"code":"PAYLOAD_TOO_LARGE","httpStatus":413}}}\n',
    ],
  ])('answers an oversized %s body with 413 before any 100 Continue, and closes', async (_route, path, type, body) => {
    // Sent over and over on a busy machine, it must be 413 every time (the issue saw a lost connection in 1 of 12).
    for (let attempt = 0; attempt < 12; attempt++) {
      const reply = await rawRequest(daemon.httpPort, head(path, twoMegabytes, type), { waitMs: 3000 });
      expect(reply.text).not.toContain('100 Continue');
      expect(reply.status).toBe(413);
      expect(reply.text).toMatch(/\r\nconnection: close\r\n/i);
    }
    const whole = await sendExpectingContinue(daemon.httpPort, head(path, twoMegabytes, type), 'x'.repeat(twoMegabytes));
    expect(whole).toMatch(/^HTTP\/1\.1 413 /);
    expect(whole).toContain(body);
  });

  it('tells a body within the limit to continue, and serves the request', async () => {
    const body = JSON.stringify({ name: 'expect', file: image });
    const reply = await sendExpectingContinue(daemon.httpPort, head('/exports', Buffer.byteLength(body)), body);
    expect(reply).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 /);
    expect(reply).toContain('"name":"expect"');
  });

  it('still times out a body that stalls after 100 Continue', async () => {
    const started = Date.now();
    const reply = await sendExpectingContinue(daemon.httpPort, head('/exports', 100), '{"name":', 6000);
    expect(reply).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 408 /);
    expect(Date.now() - started).toBeLessThan(3500);
  });
});
