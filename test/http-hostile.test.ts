import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { rawRequest } from '../testkit/raw-http.js';

const upgradeHeaders =
  'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';

/** Targets that once reached `new URL()` outside any try, or are otherwise not what a client sends. */
const badTargets: Array<[target: string, status: number]> = [
  ['http://[', 400],
  ['http://[::1', 400],
  ['http://127.0.0.1:99999/healthz', 400],
  ['http://127.0.0.1:-1/healthz', 400],
  ['*', 400],
  ['%', 400],
  ['//', 404],
  ['/%zz', 404],
  ['/exports/%E0%A4%A', 400],
  ['/exports/%zz?force=maybe', 400],
];

/** Bytes on the wire, and the status the daemon (or Node's parser in front of it) must answer. */
const hostileRequests: Array<[name: string, status: number, bytes: string | Buffer]> = [
  ...badTargets.map(([target, status]): [string, number, string] => [
    `target ${target}`,
    status,
    `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`,
  ]),
  ['a NUL byte in the target', 400, 'GET /\0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'],
  [
    'non-ASCII bytes in the target',
    400,
    Buffer.concat([Buffer.from('GET /exports/'), Buffer.from([0xff, 0xfe, 0x80]), Buffer.from(' HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')]),
  ],
  ['two Host headers', 400, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n'],
  ['no Host header (HTTP/1.1)', 400, 'GET /healthz HTTP/1.1\r\n\r\n'],
  ['no Host header (HTTP/1.0)', 400, 'GET /healthz HTTP/1.0\r\n\r\n'],
  ['a Host with a user part', 400, 'GET /healthz HTTP/1.1\r\nHost: evil@127.0.0.1\r\n\r\n'],
  ['a Host with a path', 400, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1/x\r\n\r\n'],
  ['a Host with a bad port', 400, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:http\r\n\r\n'],
  ['an unterminated IPv6 Host', 400, 'GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n'],
  ['a Content-Length that is not a number', 400, 'POST /exports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n'],
  ['two different Content-Lengths', 400, 'POST /exports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}'],
  [
    'Transfer-Encoding and Content-Length',
    400,
    'POST /exports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
  ],
  ['a negative Content-Length', 400, 'POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n'],
  ['a 20 KiB header', 431, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`],
  ...badTargets.map(([target]): [string, number, string] => [
    `upgrade to ${target}`,
    target.startsWith('/') ? 404 : 400,
    `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgradeHeaders}\r\n`,
  ]),
  ['upgrade with a foreign Host', 421, `GET /trpc HTTP/1.1\r\nHost: attacker.example\r\n${upgradeHeaders}\r\n`],
  ['upgrade with two Host headers', 400, `GET /trpc HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n${upgradeHeaders}\r\n`],
  [
    'upgrade without Sec-WebSocket-Key',
    400,
    `GET /trpc HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgradeHeaders.replace(/Sec-WebSocket-Key: .*\r\n/, '')}\r\n`,
  ],
  [
    'upgrade with WebSocket version 99',
    400,
    `GET /trpc HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgradeHeaders.replace('Version: 13', 'Version: 99')}\r\n`,
  ],
  [
    'upgrade to another protocol',
    400,
    `GET /trpc HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgradeHeaders.replace('Upgrade: websocket', 'Upgrade: h2c')}\r\n`,
  ],
];

describe('hostile HTTP input', () => {
  let daemon: RunningDaemon;
  let image: string;

  beforeAll(async () => {
    daemon = await startDaemon();
    image = makeImage(tempDir('nbdmux-images-'), 'hostile.img', 256 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'hostile', file: image })).status).toBe(201);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it.each(hostileRequests)('answers %s with %i and keeps serving', async (_name, status, bytes) => {
    const reply = await rawRequest(daemon.httpPort, bytes);
    expect(reply.status, reply.text).toBe(status);
    expect((await api(daemon, 'GET', '/healthz')).text).toBe('ok\n');
  });

  it('survives upgrade requests whose client resets the connection at once', async () => {
    // The refusal is written to a socket the client already reset: the write fails, with no one listening for the error.
    for (let i = 0; i < 50; i++) {
      const socket = net.connect({ host: '127.0.0.1', port: daemon.httpPort });
      socket.on('error', () => {});
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(`GET /elsewhere HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgradeHeaders}\r\n`);
      socket.resetAndDestroy();
    }
    expect((await api(daemon, 'GET', '/healthz')).text).toBe('ok\n');
  });

  it('handled all of it in place, and still serves the exact bytes of an export over NBD', async () => {
    expect(daemon.child.exitCode).toBeNull();
    // The last-resort handler keeps the daemon up, but none of the above may need it.
    expect(daemon.output()).not.toContain('nbdmux keeps serving');
    expect(sha256(await readExport(daemon.nbdUri('hostile')))).toBe(sha256(image));
  });
});

describe('the last-resort handler', () => {
  let daemon: RunningDaemon;
  let image: string;

  beforeAll(async () => {
    // A stand-in for a bug nobody has found yet: every known way in is fixed at its source, so
    // this preloaded module throws (and rejects) inside the daemon's process on SIGUSR2.
    const fault = path.join(tempDir('nbdmux-fault-'), 'fault.cjs');
    fs.writeFileSync(
      fault,
      `process.on('SIGUSR2', () => {
        Promise.reject(new Error('injected rejection'));
        setImmediate(() => { throw new Error('injected fault'); });
      });\n`,
    );
    daemon = await startDaemon({ env: { NODE_OPTIONS: `--require ${fault}` } });
    image = makeImage(tempDir('nbdmux-images-'), 'resort.img', 256 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'resort', file: image })).status).toBe(201);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('logs an uncaught error and an unhandled rejection with their stacks, and keeps serving HTTP and NBD', async () => {
    daemon.child.kill('SIGUSR2');
    const logged = await waitFor('both errors logged', () => {
      const lines = daemon
        .output()
        .split('\n')
        .filter((line) => line.includes('nbdmux keeps serving'));
      return lines.length >= 2 ? lines.map((line) => JSON.parse(line) as { level: string; error: string }) : undefined;
    });
    expect(logged.map((entry) => entry.level)).toEqual(['error', 'error']);
    expect(logged.map((entry) => entry.error.split('\n')[0]).sort()).toEqual(['Error: injected fault', 'Error: injected rejection']);
    expect(logged.every((entry) => entry.error.includes('fault.cjs:'))).toBe(true);
    expect(daemon.child.exitCode).toBeNull();
    expect((await api(daemon, 'GET', '/healthz')).text).toBe('ok\n');
    expect(sha256(await readExport(daemon.nbdUri('resort')))).toBe(sha256(image));
  });
});
