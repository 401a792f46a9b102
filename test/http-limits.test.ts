import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { httpRequest, openIdle } from '../testkit/raw-http.js';

const password = 'correct horse battery staple';
type IdleConnection = Awaited<ReturnType<typeof openIdle>>;

/** Sends `head` at once, then one more byte every `everyMs` until the daemon closes; resolves with what it sent and when it closed. */
function trickle(port: number, head: string, everyMs: number): Promise<{ reply: string; closedAfterMs: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const dripping = setInterval(() => socket.write('a'), everyMs);
    // Bounded: the old default (requestTimeout 300 s) would otherwise hold the test for minutes.
    const giveUp = setTimeout(() => socket.destroy(), 15_000);
    socket.on('connect', () => socket.write(head));
    socket.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(dripping);
      clearTimeout(giveUp);
      resolve({ reply, closedAfterMs: Date.now() - started });
    });
  });
}

/** A request that stays in progress: its headers are in (Node answered 100 Continue just before handing it on), its body never comes. */
function openBusy(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => {});
    socket.on('connect', () =>
      socket.write(
        'POST /exports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n',
      ),
    );
    socket.once('data', () => resolve(socket));
  });
}

describe('time allowed to send a request', () => {
  let daemon: RunningDaemon;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--http-request-timeout', '2'], env: { NBDMUX_ADMIN_PASSWORD: password } });
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('cuts trickled headers, trickled bodies and silent connections within the timeout (plus the 1 s check)', async () => {
    const host = `Host: 127.0.0.1:${daemon.httpPort}\r\n`;
    const slow = await Promise.all([
      trickle(
        daemon.httpPort,
        `POST /login HTTP/1.1\r\n${host}Origin: http://127.0.0.1:${daemon.httpPort}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\npassword=`,
        500,
      ),
      trickle(
        daemon.httpPort,
        `POST /exports HTTP/1.1\r\n${host}Authorization: Bearer ${password}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`,
        500,
      ),
      trickle(daemon.httpPort, `GET /healthz HTTP/1.1\r\n${host}X-Slow: `, 500),
      trickle(daemon.httpPort, `GET /trpc HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nX-Slow: `, 500),
      trickle(daemon.httpPort, '', 60_000),
    ]);
    for (const { reply, closedAfterMs } of slow) {
      expect(reply).toMatch(/^HTTP\/1\.1 408 /);
      expect(closedAfterMs).toBeGreaterThanOrEqual(1900);
      expect(closedAfterMs).toBeLessThan(3500);
    }
    expect((await api(daemon, 'GET', '/healthz')).text).toBe('ok\n');
    // A client too slow to finish its request is its own failure, not a daemon error to log.
    expect(daemon.output()).not.toContain('"level":"error"');
  });
});

describe('connection caps', () => {
  let daemon: RunningDaemon;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--max-http-per-client', '4', '--max-http-connections', '10'] });
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('refuses a fifth connection from one address with 503, while other addresses are served', async () => {
    const idle = await Promise.all([1, 2, 3, 4].map(() => openIdle(daemon.httpPort, '127.0.0.2')));
    const fifth = await openIdle(daemon.httpPort, '127.0.0.2');
    expect(await fifth.closed).toMatch(
      /^HTTP\/1\.1 503 [^]*too many connections from 127\.0\.0\.2: close idle ones \(limit --max-http-per-client 4\)\n$/,
    );
    expect(await httpRequest(daemon.httpPort, { path: '/healthz' })).toEqual({ status: 200, text: 'ok\n' });
    expect(idle.every(({ socket }) => !socket.destroyed)).toBe(true);
    for (const { socket } of idle) socket.destroy();
  });

  it('at the total cap, lets a newcomer in by closing the oldest idle connection', async () => {
    const sources = ['127.0.0.3', '127.0.0.4', '127.0.0.5'];
    const idle: IdleConnection[] = [];
    for (let i = 0; i < 10; i++) idle.push(await openIdle(daemon.httpPort, sources[i % 3]!));
    expect(await httpRequest(daemon.httpPort, { path: '/healthz' })).toEqual({ status: 200, text: 'ok\n' });
    // Closed without a word: it had sent nothing to answer.
    expect(await idle[0]!.closed).toBe('');
    expect(idle.slice(1).every(({ socket }) => !socket.destroyed)).toBe(true);
    for (const { socket } of idle) socket.destroy();
  });

  it('refuses with 503 only when every connection is busy with a request', async () => {
    const sources = ['127.0.0.6', '127.0.0.7', '127.0.0.8'];
    await waitFor('the idle connections of the last test to be gone', async () =>
      (await api(daemon, 'GET', '/healthz')).status === 200 ? true : undefined,
    );
    const busy: net.Socket[] = [];
    for (let i = 0; i < 10; i++) busy.push(await openBusy(daemon.httpPort, sources[i % 3]!));
    const newcomer = await openIdle(daemon.httpPort, '127.0.0.9');
    expect(await newcomer.closed).toMatch(
      /^HTTP\/1\.1 503 [^]*every HTTP connection is busy: try again shortly \(limit --max-http-connections 10\)\n$/,
    );
    for (const socket of busy) socket.destroy();
    await waitFor('a free connection', async () => {
      const reply = await httpRequest(daemon.httpPort, { path: '/healthz' }).catch(() => null);
      return reply?.status === 200 ? reply : undefined;
    });
  });
});

describe('a low open-files limit', () => {
  let daemon: RunningDaemon;
  let image: string;
  beforeAll(async () => {
    // The case: `ulimit -n 1024`, the table filled with unfinished HTTP requests, then NBD.
    daemon = await startDaemon({ wrapper: ['prlimit', '--nofile=1024:1024', '--'] });
    image = makeImage(tempDir('nbdmux-images-'), 'fds.img', 256 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'fds', file: image })).status).toBe(201);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  it('keeps descriptors for NBD and /healthz while 1100 idle HTTP connections arrive', async () => {
    const warning = daemon
      .output()
      .split('\n')
      .find((line) => line.includes('open-files limit lowers the HTTP connection limit'));
    // 1024 - 128 reserved - 256 NBD connections x 2 pipes.
    expect(JSON.parse(warning!)).toMatchObject({ level: 'warn', openFilesLimit: 1024, requested: 1024, httpConnections: 384 });

    const idle: IdleConnection[] = [];
    for (let i = 0; i < 1100; i++) idle.push(await openIdle(daemon.httpPort, `127.0.1.${1 + (i % 20)}`));
    expect(await httpRequest(daemon.httpPort, { path: '/healthz' })).toEqual({ status: 200, text: 'ok\n' });
    expect(sha256(await readExport(daemon.nbdUri('fds')))).toBe(sha256(image));
    await waitFor('evicted connections to close', () => (idle.filter(({ socket }) => !socket.destroyed).length <= 384 ? true : undefined));
    expect(daemon.child.exitCode).toBeNull();
    expect(daemon.output()).not.toContain('cannot accept an HTTP connection');
    for (const { socket } of idle) socket.destroy();
  });
});
