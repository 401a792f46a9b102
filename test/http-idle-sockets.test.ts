import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { rssBytes } from '../testkit/proc.js';
import { httpRequest, openIdle } from '../testkit/raw-http.js';

type IdleConnection = Awaited<ReturnType<typeof openIdle>>;

function residentMiB(pid: number): number {
  return Math.round(rssBytes(pid) / 2 ** 20);
}

/**
 * 3000 idle sockets against the default caps (1024 in total, 64 per client address): what the
 * daemon keeps, what it costs in memory, and that /healthz and NBD are served meanwhile.
 */
describe('3000 idle HTTP sockets', () => {
  let daemon: RunningDaemon;
  let image: string;
  beforeAll(async () => {
    daemon = await startDaemon();
    image = makeImage(tempDir('nbdmux-images-'), 'idle.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'idle', file: image })).status).toBe(201);
  });
  afterAll(() => killEverything([daemon.dataDir]));

  /** Opens `count` silent connections round-robin from `sources` addresses in `net` (127.0.N.x), then tallies what the daemon did with them. */
  async function flood(count: number, sources: number, net: number) {
    const idle: IdleConnection[] = [];
    for (let i = 0; i < count; i++) idle.push(await openIdle(daemon.httpPort, `127.0.${net}.${1 + (i % sources)}`));
    const refusedReplies: string[] = [];
    for (const { closed } of idle) void closed.then((reply) => reply !== '' && refusedReplies.push(reply));
    return {
      idle,
      tally: () => {
        const open = idle.filter(({ socket }) => !socket.destroyed && !socket.readableEnded).length;
        return { open, refused: refusedReplies.length, closedIdle: count - open - refusedReplies.length, refusedReplies };
      },
      close: () => idle.forEach(({ socket }) => socket.destroy()),
    };
  }

  async function servesMeanwhile() {
    expect(await httpRequest(daemon.httpPort, { path: '/healthz', localAddress: '127.0.0.1' })).toEqual({ status: 200, text: 'ok\n' });
    expect(sha256(await readExport(daemon.nbdUri('idle')))).toBe(sha256(image));
  }

  it('from 50 addresses: keeps the 1024 newest, closes the older idle ones, serves /healthz and NBD', async () => {
    const before = residentMiB(daemon.child.pid!);
    const started = Date.now();
    const run = await flood(3000, 50, 2);
    const counts = await waitFor('evictions to settle', () => (run.tally().open === 1024 ? run.tally() : undefined));
    const during = residentMiB(daemon.child.pid!);
    await servesMeanwhile();
    console.log(
      `50 addresses x 60: ${counts.open} open, ${counts.closedIdle} oldest idle closed, ${counts.refused} refused; RSS ${before} MiB -> ${during} MiB; ${Date.now() - started} ms`,
    );
    expect(counts).toMatchObject({ open: 1024, refused: 0, closedIdle: 3000 - 1024 });
    run.close();
  });

  it('from 10 addresses: refuses each address past 64 with 503, serves /healthz and NBD', async () => {
    await waitFor('the last flood to be gone', async () =>
      (await httpRequest(daemon.httpPort, { path: '/healthz' })).status === 200 ? true : undefined,
    );
    const before = residentMiB(daemon.child.pid!);
    const run = await flood(3000, 10, 3);
    const counts = await waitFor('refusals to arrive', () => (run.tally().refused === 3000 - 640 ? run.tally() : undefined));
    const during = residentMiB(daemon.child.pid!);
    await servesMeanwhile();
    console.log(`10 addresses x 300: ${counts.open} open, ${counts.refused} refused with 503; RSS ${before} MiB -> ${during} MiB`);
    expect(counts).toMatchObject({ open: 640, closedIdle: 0 });
    expect(counts.refusedReplies.every((reply) => reply.startsWith('HTTP/1.1 503 '))).toBe(true);
    expect(daemon.child.exitCode).toBeNull();
    run.close();
  });
});
