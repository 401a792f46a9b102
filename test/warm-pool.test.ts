import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, nbdsh, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { allPids, cmdline, parentPid, processRuns } from '../testkit/proc.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

/** Pool processes name this placeholder as their config until a client is handed to them. */
const unassigned = 'nbd-server.conf.unassigned-warm-pool-process';

function poolPids(daemon: RunningDaemon): number[] {
  return allPids().filter((pid) => cmdline(pid)?.includes(`${daemon.dataDir}/${unassigned}`) && processRuns(pid));
}

/** The pool's processes once `ready` of them wait in the shim, as the daemon's health reports them. */
async function readyPool(daemon: RunningDaemon, ready: number): Promise<number[]> {
  return waitFor(
    `${ready} warm pool processes to be ready`,
    async () => {
      const health = await trpcClient(daemon.url).system.health.query();
      const pids = poolPids(daemon);
      return health.warmPool?.ready === ready && pids.length === ready ? pids : undefined;
    },
    15_000,
  );
}

async function livePids(daemon: RunningDaemon): Promise<number[]> {
  return (await trpcClient(daemon.url).connections.list.query({ limit: 50 })).flatMap((row) => (row.pid === null ? [] : [row.pid]));
}

describe('warm pool of nbd-server processes (--nbd-warm-pool)', () => {
  const dataDirs: string[] = [];
  afterEach(() => killEverything(dataDirs.splice(0)));

  async function daemonWithExports(poolSize: number): Promise<{ daemon: RunningDaemon; images: string; root: string; other: string }> {
    const daemon = await startDaemon({ args: ['--nbd-warm-pool', String(poolSize)] });
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-images-');
    const root = makeImage(images, 'root.img', 5 * 1024 * 1024);
    const other = makeImage(images, 'other.img', 3 * 1024 * 1024 + 4096);
    expect((await api(daemon, 'POST', '/exports', { name: 'root', file: root })).status).toBe(201);
    expect((await api(daemon, 'POST', '/exports', { name: 'other', file: other })).status).toBe(201);
    return { daemon, images, root, other };
  }

  it('serves clients through pool processes, each its own image byte for byte, and refills the pool', async () => {
    const { daemon, root, other } = await daemonWithExports(2);
    const pool = await readyPool(daemon, 2);

    expect(sha256(await readExport(daemon.nbdUri('root')))).toBe(sha256(root));
    expect(sha256(await readExport(daemon.nbdUri('other')))).toBe(sha256(other));
    const info = await run('nbdinfo', ['--size', daemon.nbdUri('other')]);
    expect(info.stdout.toString().trim()).toBe(String(3 * 1024 * 1024 + 4096));

    // The first two clients were handed to the processes that waited; each reads its own client's config.
    const served = await waitFor('three connections recorded', async () => {
      const pids = await livePids(daemon);
      return pids.length === 3 ? pids : undefined;
    });
    expect(pool.filter((pid) => served.includes(pid))).toHaveLength(2);
    expect(await readyPool(daemon, 2)).not.toContain(pool[0]);
    const reader = startSlowReader(daemon.nbdUri('root'), path.join(tempDir(), 'stop'));
    await reader.connected;
    const [live] = await trpcClient(daemon.url).connections.list.query({ live: true });
    expect(cmdline(live!.pid!)).toMatch(new RegExp(`${daemon.dataDir}/nbd-server\\.conf\\.[0-9a-f]{16}\\0`));
    expect(parentPid(live!.pid!)).toBe(daemon.child.pid);
    // Blocking, as a spawned process's stdin is: nbd-server spins on EAGAIN over a non-blocking socket.
    const flags = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/${live!.pid}/fdinfo/0`, 'utf8'))![1]!;
    expect(parseInt(flags, 8) & fs.constants.O_NONBLOCK).toBe(0);
    expect((await reader.finish()).sha256).toBe(sha256(root));
  });

  it('replaces a pool process killed while waiting, and hands no client to it', async () => {
    const { daemon, root } = await daemonWithExports(2);
    const [killed, kept] = await readyPool(daemon, 2);
    process.kill(killed!, 'SIGKILL');
    const reads = await Promise.all([
      readExport(daemon.nbdUri('root')),
      readExport(daemon.nbdUri('root')),
      readExport(daemon.nbdUri('root')),
    ]);
    for (const bytes of reads) expect(sha256(bytes)).toBe(sha256(root));

    const refilled = await readyPool(daemon, 2);
    expect(refilled).not.toContain(killed);
    expect(refilled).not.toContain(kept);
    const served = await livePids(daemon);
    expect(served).toHaveLength(3);
    expect(served).not.toContain(killed);
    expect(served).toContain(kept);
  });

  it('starts a client the ordinary way when no pool process answers the hand-off', async () => {
    const { daemon, root } = await daemonWithExports(1);
    const [stopped] = await readyPool(daemon, 1);
    // A stopped process cannot answer: the hand-off times out, and the client must still be served.
    process.kill(stopped!, 'SIGSTOP');
    expect(sha256(await readExport(daemon.nbdUri('root')))).toBe(sha256(root));
    const served = await livePids(daemon);
    expect(served).toHaveLength(1);
    expect(served).not.toContain(stopped);
    await waitFor('the unanswering pool process to be killed', () => (processRuns(stopped!) ? undefined : true));
    expect(daemon.output()).toMatch(/a warm pool process could not take a client.*no answer within/);
  });

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`keeps a handed connection through ${signal} and restart, and leaves no pool process behind`, async () => {
      const { daemon, root, images } = await daemonWithExports(2);
      const pool = await readyPool(daemon, 2);
      const reader = startSlowReader(daemon.nbdUri('root'), path.join(images, 'stop-reader'));
      await reader.connected;
      const [handed] = await trpcClient(daemon.url).connections.list.query({ live: true });
      expect(pool).toContain(handed!.pid);

      await daemon.stop(signal);
      // Killed at a clean stop; after a crash each sees its channel close and exits before nbd-server's main().
      await waitFor('the unhanded pool process to end', () => (poolPids(daemon).length === 0 ? true : undefined));
      expect(processRuns(handed!.pid!)).toBe(true);

      const restarted = await startDaemon({ dataDir: daemon.dataDir, args: ['--nbd-warm-pool', '2'] });
      const [adopted] = await trpcClient(restarted.url).connections.list.query({ live: true });
      expect(adopted).toMatchObject({ exportName: 'root', live: true, pid: handed!.pid });
      const finished = await reader.finish();
      expect(finished).toMatchObject({ code: 0, sha256: sha256(root) });
      await readyPool(restarted, 2);
    });
  }

  it('with 0, keeps no pool and starts one process per client after accept', async () => {
    const { daemon, root } = await daemonWithExports(0);
    expect((await trpcClient(daemon.url).system.health.query()).warmPool).toBeNull();
    expect(sha256(await readExport(daemon.nbdUri('root')))).toBe(sha256(root));
    const probe = await nbdsh(['-u', daemon.nbdUri('root'), '-c', 'print(h.get_size())']);
    expect(probe.stdout.toString().trim()).toBe(String(5 * 1024 * 1024));
    expect(poolPids(daemon)).toEqual([]);
  });
});
