import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type DaemonOptions, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { processRuns } from '../testkit/proc.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

/** A client that connects from `localAddress` and never sends a byte. */
interface SilentClient {
  /** Resolves with how long after its connect the server closed it. */
  closed: Promise<number>;
  isOpen(): boolean;
}

async function connectSilently(nbdPort: number, localAddress: string): Promise<SilentClient> {
  const socket = net.connect({ host: '127.0.0.1', port: nbdPort, localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const connectedAt = Date.now();
  socket.on('error', () => {}); // a reset is as good a close as any
  socket.resume(); // reads (and drops) the greeting, so that the server's close is seen
  let open = true;
  const closed = new Promise<number>((resolve) =>
    socket.on('close', () => {
      open = false;
      resolve(Date.now() - connectedAt);
    }),
  );
  return { closed, isOpen: () => open };
}

function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)),
  ]);
}

describe('the NBD port against silent and resource-starving clients', () => {
  const dataDirs: string[] = [];
  afterEach(() => killEverything(dataDirs.splice(0)));

  async function daemonWithExport(options: DaemonOptions = {}): Promise<{ daemon: RunningDaemon; image: string; images: string }> {
    const daemon = await startDaemon(options);
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'boot.img', 2 * 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'boot', file: image })).status).toBe(201);
    return { daemon, image, images };
  }

  const liveConnections = async (daemon: RunningDaemon) => trpcClient(daemon.url).connections.list.query({ live: true });

  it('cuts clients that choose no export within the bound, so a machine that boots gets a slot', async () => {
    const { daemon, image } = await daemonWithExport({
      env: { NBDMUX_MAX_CONNECTIONS: '4', NBDMUX_NBD_MAX_PENDING_PER_CLIENT: '2', NBDMUX_NBD_NEGOTIATION_TIMEOUT: '2' },
    });
    const silent = await Promise.all(
      ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.3'].map((address) => connectSilently(daemon.nbdPort, address)),
    );
    const connectedAt = Date.now();
    await waitFor('the silent clients to hold every slot', async () => ((await liveConnections(daemon)).length === 4 ? true : undefined));
    expect((await run('nbdinfo', [daemon.nbdUri('boot')], { timeoutMs: 10_000 })).code).not.toBe(0);

    // A booting machine retries; it must get in once the bound has cut the silent ones.
    const served = await waitFor(
      'a real client to be served',
      async () => {
        const result = await run('nbdcopy', [daemon.nbdUri('boot'), '-'], { timeoutMs: 10_000 });
        return result.code === 0 ? result.stdout : undefined;
      },
      8_000,
    );
    expect(sha256(served)).toBe(sha256(image));
    expect(Date.now() - connectedAt).toBeLessThan(2_000 + 4_000);
    for (const client of silent) {
      const closedAfter = await client.closed;
      expect(closedAfter).toBeGreaterThanOrEqual(1_900);
      expect(closedAfter).toBeLessThan(2_000 + 3_000);
    }
    const cut = (await trpcClient(daemon.url).connections.list.query({ limit: 100 })).filter((c) => c.clientAddress !== '127.0.0.1');
    expect(cut).toHaveLength(4);
    for (const row of cut)
      expect(row).toMatchObject({ live: false, outcome: 'not-served', error: 'chose no export within 2 s (--nbd-negotiation-timeout)' });
  });

  it('closes at once the connections of one address beyond its pending cap, and serves others at once', async () => {
    const { daemon, image } = await daemonWithExport({
      env: { NBDMUX_NBD_MAX_PENDING_PER_CLIENT: '3', NBDMUX_NBD_NEGOTIATION_TIMEOUT: '60' },
    });
    const silent: SilentClient[] = [];
    for (let i = 0; i < 5; i++) silent.push(await connectSilently(daemon.nbdPort, '127.0.0.2'));

    for (const client of silent.slice(3)) await within(1_000, client.closed, 'a connection beyond the cap closed');
    const started = Date.now();
    expect(sha256(await readExport(daemon.nbdUri('boot')))).toBe(sha256(image));
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(silent.slice(0, 3).map((client) => client.isOpen())).toEqual([true, true, true]);

    // The first refusal is an event at once; the second is counted into the summary at the end of its interval.
    const refusals = (await trpcClient(daemon.url).events.list.query({ limit: 50 })).filter((e) => e.type === 'connection.refused');
    expect(refusals.map((e) => e.details)).toEqual([
      expect.objectContaining({
        client: '127.0.0.2',
        count: 1,
        reason: '127.0.0.2 already has 3 connections that have not chosen an export (--nbd-max-pending-per-client)',
      }),
    ]);
  });

  it('does not adopt, after a restart, processes whose client chose no export, but keeps serving a live reader', async () => {
    const env = { NBDMUX_NBD_NEGOTIATION_TIMEOUT: '60' };
    const { daemon, image, images } = await daemonWithExport({ env });
    const reader = startSlowReader(daemon.nbdUri('boot'), path.join(images, 'stop-reader'));
    await reader.connected;
    const silent = await Promise.all([1, 2, 3].map(() => connectSilently(daemon.nbdPort, '127.0.0.2')));
    const silentPids = await waitFor('the silent clients to have their nbd-server processes', async () => {
      const live = await liveConnections(daemon);
      const pids = live.filter((c) => c.clientAddress === '127.0.0.2' && c.pid !== null).map((c) => c.pid!);
      return pids.length === 3 && live.some((c) => c.exportName === 'boot') ? pids : undefined;
    });

    expect(await daemon.stop('SIGKILL')).toBe(null);
    const restarted = await startDaemon({ dataDir: daemon.dataDir, nbdPort: daemon.nbdPort, env });
    for (const client of silent) await within(2_000, client.closed, 'a silent client cut at restart');
    expect(silentPids.filter(processRuns)).toEqual([]);
    const [adopted, ...others] = await liveConnections(restarted);
    expect(others).toEqual([]);
    expect(adopted).toMatchObject({ exportName: 'boot', clientAddress: '127.0.0.1', live: true });
    const cut = (await trpcClient(restarted.url).connections.list.query({ limit: 100 })).filter((c) => c.clientAddress === '127.0.0.2');
    for (const row of cut) {
      expect(row).toMatchObject({
        live: false,
        outcome: 'not-served',
        error: 'had chosen no export when nbdmux restarted: cut, since no daemon can learn which export it serves',
      });
    }

    const finished = await reader.finish();
    expect(finished.code).toBe(0);
    expect(finished.sha256).toBe(sha256(image));
    expect(sha256(await readExport(restarted.nbdUri('boot')))).toBe(sha256(image));
  });

  it('refuses a client it has no file descriptor to start nbd-server for, records why, and serves again once it has', async () => {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const pid = daemon.child.pid!;
    const socketsBeforeHttp = openSockets(pid);
    const image = makeImage(tempDir('nbdmux-images-'), 'boot.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'boot', file: image })).status).toBe(201);
    // An HTTP connection still open would free a descriptor below the limit when it closes.
    await waitFor(
      'the daemon to close the idle HTTP connection',
      () => (openSockets(pid) === socketsBeforeHttp ? true : undefined),
      15_000,
    );
    const [oneLeft, limitWithOneLeft] = lowestUnusedDescriptors(pid);
    expect(oneLeft).toBeLessThan(limitWithOneLeft!);
    const softLimit = readSoftFileLimit(pid);

    // The limit lowered until one descriptor is left: as with a table full of connections, the
    // accept takes the last one and nothing is left for the pipes of an nbd-server.
    await setSoftFileLimit(pid, limitWithOneLeft!);
    try {
      expect((await run('nbdinfo', [daemon.nbdUri('boot')], { timeoutMs: 10_000 })).code).not.toBe(0);
    } finally {
      await setSoftFileLimit(pid, softLimit);
    }

    const [closed] = await trpcClient(daemon.url).connections.list.query({ limit: 1 });
    expect(closed).toMatchObject({
      live: false,
      outcome: 'failed',
      error:
        'cannot start nbd-server: nbdmux has no file descriptor left (EMFILE): raise its open-file limit (ulimit -n, systemd LimitNOFILE=)',
    });
    expect(sha256(await readExport(daemon.nbdUri('boot')))).toBe(sha256(image));
    // nbd-server was never at fault: health stays good.
    expect((await api(daemon, 'GET', '/healthz')).status).toBe(200);
    expect(daemon.child.exitCode).toBe(null);
  });

  it('refuses to start with a pending cap that would let one address hold every connection', async () => {
    await expect(startDaemon({ args: ['--max-connections', '8', '--nbd-max-pending-per-client', '8'] })).rejects.toThrow(
      '--nbd-max-pending-per-client (8) must be below --max-connections (8), so that one address cannot hold every connection',
    );
  });
});

function openSockets(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false;
    }
  }).length;
}

/** The two lowest descriptor numbers the process has free: a soft limit of the second leaves it exactly the first. */
function lowestUnusedDescriptors(pid: number): number[] {
  const used = new Set(fs.readdirSync(`/proc/${pid}/fd`).map(Number));
  const unused: number[] = [];
  for (let fd = 0; unused.length < 2; fd++) if (!used.has(fd)) unused.push(fd);
  return unused;
}

function readSoftFileLimit(pid: number): number {
  const line = fs
    .readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'))!;
  return Number(line.split(/\s{2,}/)[1]);
}

async function setSoftFileLimit(pid: number, limit: number): Promise<void> {
  const result = await run('prlimit', ['--pid', String(pid), `--nofile=${limit}:`]);
  if (result.code !== 0) throw new Error(`prlimit failed: ${result.stderr}`);
}
