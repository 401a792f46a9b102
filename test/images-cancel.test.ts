import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, tempDir, waitFor, type RunningDaemon } from '../testkit/daemon.js';
import { makeTestImage, serveFile, sha256Of, startImageServer, type ImageServer, type Route } from '../testkit/image-fixtures.js';
import { allPids, killServingProcesses, parentPid, processRuns } from '../testkit/proc.js';
import { runOrThrow } from '../testkit/process.js';

/** 256 MiB of zeros compress to about 9 KB with zstd: 80 such frames back to back are 20 GiB once decompressed, minutes of work. */
const frames = 80;
type Packing = 'zst' | 'gz.gz';

/**
 * 20 GiB of zeros in `packing`, in a file small enough to be sent whole at once: gzip cannot shrink
 * zeros more than 1000 times, so its 20 MB of members are gzipped once more (to 50 KB), which the
 * importer unwraps.
 */
async function packZeros(dir: string, packing: Packing): Promise<string> {
  const [packer, extension] = packing === 'zst' ? ['zstd -q -1', 'zst'] : ['gzip -9', 'gz'];
  const frame = path.join(dir, `frame.${extension}`);
  await runOrThrow('sh', ['-c', `head -c 256M /dev/zero | ${packer} > "$1"`, 'pack', frame]);
  const bomb = path.join(dir, `zeros.img.${extension}`);
  fs.writeFileSync(bomb, Buffer.concat(Array.from({ length: frames }, () => fs.readFileSync(frame))));
  if (packing === 'zst') return bomb;
  await runOrThrow('sh', ['-c', 'gzip -9 -c "$1" > "$1.gz"', 'pack', bomb]);
  return `${bomb}.gz`;
}

/** The daemon's children running `command` right now (zombies left out: they have ended). */
function childrenNamed(daemonPid: number, command: string): number[] {
  return allPids().filter((pid) => {
    if (parentPid(pid) !== daemonPid || !processRuns(pid)) return false;
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === command;
    } catch {
      return false;
    }
  });
}

/** A cancel ends the import whatever it is doing: here its download has ended and zstd is still writing out gigabytes. */
describe('cancelling an import while it decompresses', () => {
  let work: string;
  let server: ImageServer;
  let daemon: RunningDaemon;
  let small: string;
  /** The bombs the server has handed whole to the kernel. */
  const sent = new Set<Packing>();

  beforeAll(async () => {
    work = fs.realpathSync(tempDir('nbdmux-cancel-'));
    const routes: Record<string, Route> = {};
    for (const packing of ['zst', 'gz.gz'] as const) {
      const serveBomb = serveFile(await packZeros(work, packing));
      routes[`/zeros.img.${packing}`] = (req, res) => {
        res.on('finish', () => sent.add(packing));
        serveBomb(req, res);
      };
    }
    small = makeTestImage(work, 'small.img', 2);
    server = await startImageServer({ ...routes, '/small.img': serveFile(small) });
    // One import at a time: the second waits for the first one's slot.
    daemon = await startDaemon({ args: ['--image-root', work, '--max-imports', '1'] });
  }, 60_000);

  afterAll(async () => {
    if (daemon) {
      await daemon.stop();
      killServingProcesses([daemon.dataDir]);
      fs.rmSync(daemon.dataDir, { recursive: true, force: true });
    }
    await server?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const importOf = async (name: string) => (await api(daemon, 'GET', `/exports/${name}`)).json?.import;

  it.each<[Packing, string | null]>([
    ['zst', 'zstd'],
    // The inner layer is unwrapped from the landed outer one by a gzip of its own.
    ['gz.gz', 'gzip'],
  ])(
    'DELETE of a %s import whose download has ended ends its decompression and frees the import slot within a second',
    async (packing, child) => {
      const pid = daemon.child.pid!;
      const bomb = `zeros-${packing.replace('.', '-')}`;
      const next = `after-${packing.replace('.', '-')}`;
      expect(await api(daemon, 'POST', '/exports', { name: bomb, url: server.url(`/zeros.img.${packing}`) })).toMatchObject({
        status: 202,
      });
      let seen: { sent?: boolean; import?: { stage?: string }; children?: number | null } = {};
      // A loaded CI host can be slow to get here; the failure says which part had not happened.
      await waitFor(
        () => `the whole download sent and the import writing out zeros; last seen: ${JSON.stringify(seen)}`,
        async () => {
          seen = {
            sent: sent.has(packing),
            import: await importOf(bomb),
            children: child === null ? null : childrenNamed(pid, child).length,
          };
          return seen.sent && seen.import?.stage === 'decompressing' && (child === null || seen.children === 1) ? true : undefined;
        },
        60_000,
      );
      const hitsBefore = server.hits.filter((hit) => hit === '/small.img').length;
      expect(await api(daemon, 'POST', '/exports', { name: next, url: server.url('/small.img') })).toMatchObject({ status: 202 });
      expect(await importOf(next)).toMatchObject({ stage: 'queued' });

      const cancelledAt = performance.now();
      expect((await api(daemon, 'DELETE', `/exports/${bomb}`)).status).toBe(204);
      // The slot is free once the queued import asks the server for its image.
      await waitFor(
        'the queued import to start',
        () => (server.hits.filter((hit) => hit === '/small.img').length > hitsBefore ? true : undefined),
        2000,
        5,
      );
      const freedAfter = (performance.now() - cancelledAt) / 1000;
      if (child !== null)
        await waitFor(`no ${child} child of the daemon`, () => (childrenNamed(pid, child).length === 0 ? true : undefined), 2000, 5);
      const killedAfter = (performance.now() - cancelledAt) / 1000;
      console.log(
        `${packing}: cancel to a free slot ${freedAfter.toFixed(3)} s${child === null ? '' : `; no ${child} child left after ${killedAfter.toFixed(3)} s`}`,
      );
      expect(freedAfter).toBeLessThan(1);

      await waitFor(
        'the queued import to serve',
        async () => ((await api(daemon, 'GET', `/exports/${next}`)).json.state === 'serving' ? true : undefined),
        30_000,
        100,
      );
      expect((await api(daemon, 'GET', `/exports/${next}`)).json).toMatchObject({ sha256: sha256Of(small) });
      expect(fs.readdirSync(path.join(daemon.dataDir, 'images')).filter((name) => name.startsWith('.partial-'))).toEqual([]);
    },
    90_000,
  );
});
